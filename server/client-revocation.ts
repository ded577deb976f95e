import type { ModelName, Storage } from '../adapters/types.js';

/** Models whose records carry a clientId: what deleting a client revokes. */
export const CLIENT_OWNED: readonly ModelName[] = [
  'Grant', 'AccessToken', 'RefreshToken', 'AuthorizationCode', 'ClientCredentials', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PushedAuthorizationRequest', 'RegistrationAccessToken',
];

/**
 * Revokes everything a deleted client held: its grants, every kind of token and code, its pending requests and its
 * registration access tokens. Used by RFC 7592 DELETE; the one place that knows what a client owns. Returns the kinds
 * revoked (for the audit record).
 */
export async function revokeClientRecords(storage: Pick<Storage, 'model'>, clientId: string): Promise<readonly ModelName[]> {
  for (const model of CLIENT_OWNED) await storage.model(model).revokeByClientId(clientId);
  return CLIENT_OWNED;
}
