import type { AdapterPayload, ModelName, Storage } from '../adapters/types.js';
import { RevocationMarks } from './revocation-lineage.js';

/** Models whose records carry a clientId: what deleting a client revokes. */
export const CLIENT_OWNED: readonly ModelName[] = [
  'Grant', 'AccessToken', 'RefreshToken', 'AuthorizationCode', 'ClientCredentials', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PushedAuthorizationRequest', 'RegistrationAccessToken',
];

/**
 * What deleting a client revokes, in two steps: its revocation mark (server/revocation-lineage.ts: every token
 * exchanged from its tokens, down the chain), written before the client record is removed, so that a delete never
 * removes a client whose revocation is not written; then, once it is removed, its grants, every kind of token and
 * code, its pending requests and its registration access tokens (removeClientRecords). Used by RFC 7592 DELETE and
 * `agentauth clients delete`; the one place that knows what a client owns. `record` is the client's stored record
 * as the delete found it.
 */
export function markClientRevoked(storage: Pick<Storage, 'revokedTokens'>, clientId: string, record: AdapterPayload | undefined): Promise<void> {
  return new RevocationMarks(storage.revokedTokens).client(clientId, record);
}

/** The records a deleted client held (CLIENT_OWNED), removed once the client is (markClientRevoked). */
export async function removeClientRecords(storage: Pick<Storage, 'model'>, clientId: string): Promise<void> {
  for (const model of CLIENT_OWNED) await storage.model(model).revokeByClientId(clientId);
}
