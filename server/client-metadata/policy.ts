import type { TierConfig } from '../config.js';
import { checkRegistrationRequest } from '../policies/registration.js';
import type { RegistrationPolicy } from '../policies/registration.js';
import { REGISTRATION_FIELD } from '../policies/registration.js';
import { TIER_FIELD } from '../policies/tiers.js';
import { jsonDepthExceeds, MAX_METADATA_DEPTH } from '../policies/json-depth.js';
import { isOwnMachineHost } from './addresses.js';
import { nameGivenTwice } from '../request-body.js';

/** How agentauth records a client that identified itself with a metadata document (agentauth_registration). */
export const METADATA_DOCUMENT_ORIGIN = 'client_id_metadata_document';

/** A document refused for its content; `reason` names the field, for the client developer. */
export class MetadataDocumentError extends Error {
  readonly code = 'invalid_client_metadata';

  constructor(readonly reason: string) {
    super(reason);
    this.name = 'MetadataDocumentError';
  }
}

/** Shared-secret methods: a document is public, so there is no secret to share (draft §4.1). */
const SECRET_METHODS = new Set(['client_secret_basic', 'client_secret_post', 'client_secret_jwt']);
/** What a metadata-document client may do: a public client a person authorizes (authorization code, PKCE). */
const DOCUMENT_GRANTS = new Set(['authorization_code', 'refresh_token']);

/**
 * Checks a fetched client ID metadata document and turns it into client metadata. Pure: no I/O.
 *
 * The document's `client_id` must equal the URL it was fetched from, character for character (draft §4.1). Then the
 * rules for what such a client may be, stricter than open registration: no client secret and no shared-secret or
 * key-based client authentication (token_endpoint_auth_method `none`: anyone can publish a document naming any
 * key, so a key proves nothing about who runs the client), and only the grants a person authorizes. Then the very same
 * policy DCR applies to an anonymous registration (`checkRegistrationRequest`: redirect URIs, scopes, every other
 * field), so a document can never describe a client that open registration would refuse. The client gets the default
 * tier and is recorded as `client_id_metadata_document`.
 */
export function checkMetadataDocument(
  text: string,
  clientId: string,
  policy: RegistrationPolicy,
  tier: { name: string; settings: TierConfig },
): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new MetadataDocumentError('the client ID metadata document is not valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new MetadataDocumentError('the client ID metadata document must be a JSON object');
  if (jsonDepthExceeds(doc, MAX_METADATA_DEPTH)) throw new MetadataDocumentError(`the client ID metadata document nests more than ${MAX_METADATA_DEPTH} levels deep; client metadata nests 4 at most`);
  // As a registration's body is read (server/request-body.ts): a member named twice has no one meaning (JSON parsers
  // differ on which value counts), so what is checked here might not be what another reader of the document sees.
  const twice = nameGivenTwice(text);
  if (twice !== undefined) throw new MetadataDocumentError(`the client ID metadata document names ${JSON.stringify(twice.slice(0, 100))} twice in one object`);
  const { client_id: documentId, ...metadata } = doc as Record<string, unknown>;
  if (documentId !== clientId) {
    throw new MetadataDocumentError(`the client_id in the document (${JSON.stringify(documentId)?.slice(0, 300)}) must equal the URL it is served from (${JSON.stringify(clientId)}) exactly`);
  }
  for (const field of ['client_secret', 'client_secret_expires_at']) {
    if (field in metadata) throw new MetadataDocumentError(`${field} must not appear in a client ID metadata document (it is public)`);
  }
  const method = metadata.token_endpoint_auth_method;
  if (typeof method === 'string' && SECRET_METHODS.has(method)) {
    throw new MetadataDocumentError(`token_endpoint_auth_method ${method} uses a shared secret, which a client ID metadata document cannot have; use "none" (a public client with PKCE)`);
  }
  if (method !== 'none') {
    throw new MetadataDocumentError(`token_endpoint_auth_method must be "none" for clients identified by a metadata document on this server (got ${JSON.stringify(method ?? 'client_secret_basic (the default when absent)')})`);
  }
  const grants = Array.isArray(metadata.grant_types) ? (metadata.grant_types as unknown[]) : ['authorization_code'];
  const refused = grants.filter((g) => typeof g !== 'string' || !DOCUMENT_GRANTS.has(g));
  if (refused.length > 0) {
    throw new MetadataDocumentError(`grant_types may only contain authorization_code and refresh_token for clients identified by a metadata document (got ${refused.map((g) => JSON.stringify(g)).join(', ')}); client_credentials needs a registered confidential client`);
  }

  let checked: Record<string, unknown>;
  try {
    checked = checkRegistrationRequest(metadata, policy, tier.settings, { update: false, origin: METADATA_DOCUMENT_ORIGIN });
  } catch (err) {
    const e = err as { error_description?: string; message?: string };
    throw new MetadataDocumentError(e.error_description ?? e.message ?? 'the client ID metadata document is refused by the registration policy');
  }
  return { ...checked, client_id: clientId, [TIER_FIELD]: tier.name, [REGISTRATION_FIELD]: METADATA_DOCUMENT_ORIGIN };
}

/** Whether every redirect URI of a client is on the person's own machine (isOwnMachineHost: any spelling of it). */
export function redirectsAllLoopback(redirectUris: readonly string[]): boolean {
  return redirectUris.length > 0 && redirectUris.every((u) => {
    const host = URL.parse(u)?.hostname;
    return host !== undefined && isOwnMachineHost(host);
  });
}
