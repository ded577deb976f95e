import type { AdapterPayload, ModelStore } from '../../adapters/types.js';

/**
 * Stored client metadata marking a client the operator disabled (`agentauth clients disable`, the admin API). It
 * lives in the client's own record in the store, so every process sharing the store sees it on its next lookup:
 * oidc-provider reads a registered client from storage on every `Client.find` (it caches only the built instance,
 * keyed by a hash of the stored metadata), so there is no cache to wait out.
 */
export const DISABLED_FIELD = 'agentauth_disabled';
export const DISABLED_AT_FIELD = 'agentauth_disabled_at';

/**
 * Epoch seconds of the client's last disable, kept after it is enabled again: its JWT access tokens issued until then
 * stay inactive at introspection (those of client_credentials have no grant that the disable could delete).
 */
export const REVOKED_BEFORE_FIELD = 'agentauth_tokens_revoked_before';

/** For JWT introspection (server/structured-tokens.ts): when the client's tokens were last revoked by a disable. */
export function tokensRevokedBefore(clients: Pick<ModelStore, 'find'>): (clientId: string) => Promise<number | undefined> {
  return async (clientId) => {
    const value = (await clients.find(clientId))?.[REVOKED_BEFORE_FIELD];
    return typeof value === 'number' ? value : undefined;
  };
}

export const isDisabled = (payload: AdapterPayload | undefined): boolean => payload?.[DISABLED_FIELD] === true;

