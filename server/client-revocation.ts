import type { AdapterPayload, ModelName, Storage } from '../adapters/types.js';
import { RevocationMarks } from './revocation-lineage.js';

/** Models whose records carry a clientId: what deleting a client revokes. */
export const CLIENT_OWNED: readonly ModelName[] = [
  'Grant', 'AccessToken', 'RefreshToken', 'AuthorizationCode', 'ClientCredentials', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PushedAuthorizationRequest', 'RegistrationAccessToken',
];

/**
 * Revokes everything a deleted client held: its grants, every kind of token and code, its pending requests and its
 * registration access tokens, and (by its revocation mark, server/revocation-lineage.ts) every token exchanged from
 * its tokens, down the chain. Used by RFC 7592 DELETE and `agentauth clients delete`; the one place that knows what a
 * client owns. `record` is the client's stored record as it was before the delete. Returns the kinds revoked (for
 * the audit record).
 */
export async function revokeClientRecords(
  storage: Pick<Storage, 'model' | 'revokedTokens'>,
  clientId: string,
  record: AdapterPayload | undefined,
): Promise<readonly ModelName[]> {
  await new RevocationMarks(storage.revokedTokens).client(clientId, record);
  for (const model of CLIENT_OWNED) await storage.model(model).revokeByClientId(clientId);
  return CLIENT_OWNED;
}
