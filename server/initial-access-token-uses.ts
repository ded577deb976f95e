import { credentialFingerprint } from '../adapters/sealed-credential-ids.js';
import type { NonceStore } from '../adapters/types.js';

/**
 * How many registrations an initial access token allows (`agentauth clients iat create --uses N`), counted in the store
 * so that every instance shares the count. The limit is recorded beside the token, keyed by its fingerprint (never by
 * the token), once the token is stored and before it is handed out: a token whose limit could not be recorded is
 * deleted again (server/initial-access-tokens.ts), since without one it would allow any number. Each registration
 * takes one of the limit's slots just before its client is written (NonceStore.takeAttempt: one atomic statement on
 * SQLite, a unique insert per slot on MongoDB): of any number of registrations at once, exactly the limit succeed.
 * A registration whose write then fails has used its slot. A token created without `--uses` allows any number, as
 * every token created before the option did.
 */

/** Most registrations one token may be limited to. */
export const MAX_INITIAL_ACCESS_TOKEN_USES = 1000;

const limitKey = (fingerprint: string) => `iat-uses:${fingerprint}`;
const useKey = (fingerprint: string) => `iat-use:${fingerprint}`;
/** Slots outlive the token they count for (a slot window that ended would start the count over). */
const SLOT_MARGIN_SECONDS = 60;

/** The fingerprint a token is listed by (`clients iat list`), from the token. */
export const initialAccessTokenFingerprint = (token: string): string => credentialFingerprint(token);

/** Records that token `fingerprint`, living `ttlSeconds`, allows `uses` registrations. */
export async function recordUseLimit(nonces: Pick<NonceStore, 'issue'>, fingerprint: string, uses: number, ttlSeconds: number): Promise<void> {
  await nonces.issue(limitKey(fingerprint), ttlSeconds + SLOT_MARGIN_SECONDS, String(uses));
}

/** How many registrations token `fingerprint` allows; undefined for any number. */
export async function useLimitOf(nonces: Pick<NonceStore, 'boundTo'>, fingerprint: string): Promise<number | undefined> {
  const limit = await nonces.boundTo(limitKey(fingerprint));
  if (limit === undefined) return undefined;
  const n = Number(limit);
  // A record that is not a limit this module wrote is read as allowing none (fail closed), not as unlimited.
  return Number.isInteger(n) && n >= 1 && n <= MAX_INITIAL_ACCESS_TOKEN_USES ? n : 0;
}

/**
 * Takes one registration of token `fingerprint`, which expires at `expiresAt` (epoch seconds): false when its limit is
 * used up. True without counting for a token without a limit.
 */
export async function takeUse(nonces: Pick<NonceStore, 'boundTo' | 'takeAttempt'>, fingerprint: string, expiresAt: number): Promise<{ taken: boolean; limit?: number }> {
  const limit = await useLimitOf(nonces, fingerprint);
  if (limit === undefined) return { taken: true };
  const ttl = Math.max(1, expiresAt - Math.floor(Date.now() / 1000)) + SLOT_MARGIN_SECONDS;
  return { taken: await nonces.takeAttempt(useKey(fingerprint), limit, ttl), limit };
}
