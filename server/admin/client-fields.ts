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

/** The second up to which (included) the client's last disable revoked its tokens; undefined if it was never disabled. */
export function revokedBeforeOf(client: AdapterPayload | undefined): number | undefined {
  const value = client?.[REVOKED_BEFORE_FIELD];
  return typeof value === 'number' && !Number.isNaN(value) ? value : undefined;
}

/**
 * Whether a token issued at `iat` (epoch seconds; a token without one counts as issued at 0) is revoked by a disable
 * that revoked tokens up to `revokedBefore` (revokedBeforeOf): the one reading of the field for every check that
 * refuses such a token (introspection, opaque tokens' lookups, `agentauth verify`) and for the enable that waits it out.
 */
export function revokedByDisable(iat: unknown, revokedBefore: number | undefined): boolean {
  return revokedBefore !== undefined && (typeof iat === 'number' ? iat : 0) <= revokedBefore;
}

/** For JWT introspection (server/structured-tokens.ts): when the client's tokens were last revoked by a disable. */
export function tokensRevokedBefore(clients: Pick<ModelStore, 'find'>): (clientId: string) => Promise<number | undefined> {
  return async (clientId) => revokedBeforeOf(await clients.find(clientId));
}

export const isDisabled = (payload: AdapterPayload | undefined): boolean => payload?.[DISABLED_FIELD] === true;

