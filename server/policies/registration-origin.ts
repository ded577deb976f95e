/**
 * Client metadata field (an extension, RFC 7591 §2) that records how a client was registered; set by the server,
 * never by the client: `anonymous` (open registration, no initial access token), `initial_access_token` (registered
 * with a token the operator minted), `operator` (a client from the configuration file) or `client_id_metadata_document`
 * (a client identified by the https URL of its metadata document; server/client-metadata/).
 */
export const REGISTRATION_FIELD = 'agentauth_registration';
export const REGISTRATION_ORIGINS = ['anonymous', 'initial_access_token', 'operator', 'client_id_metadata_document'] as const;
export type RegistrationOrigin = (typeof REGISTRATION_ORIGINS)[number];

/**
 * Whether the operator vouched for a client registered this way (its configuration file, an initial access token it
 * minted): its redirect URIs are then the operator's word. Anyone can register the others (open registration, a
 * metadata document), any URI included.
 */
export const vouchedByOperator = (origin: RegistrationOrigin): boolean => origin === 'operator' || origin === 'initial_access_token';

/** How a stored client was registered; a client stored before the field existed is treated as anonymous (fail closed). */
export function registrationOrigin(metadata: Record<string, unknown>): RegistrationOrigin {
  const v = metadata[REGISTRATION_FIELD];
  return (REGISTRATION_ORIGINS as readonly unknown[]).includes(v) ? (v as RegistrationOrigin) : 'anonymous';
}
