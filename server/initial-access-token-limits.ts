import type { NonceStore } from '../adapters/types.js';
import { MAX_KEY_LENGTH } from '../adapters/validate.js';
import { asRegistrationLimits } from './policies/registration-limits.js';
import type { RegistrationLimits } from './policies/registration-limits.js';

/**
 * The grant types and scopes an initial access token's clients may register (server/policies/registration-limits.ts),
 * recorded beside the token, keyed by its fingerprint (never by the token), once the token is stored and before it is
 * handed out: a token whose limits could not be recorded is deleted again (server/initial-access-tokens.ts), since
 * without them it would register clients of any kind. Every instance reads them from the store at registration.
 */

const limitsKey = (fingerprint: string) => `iat-limits:${fingerprint}`;
/** As the use-limit record: it outlives the token by a margin, never the other way round. */
const MARGIN_SECONDS = 60;
/** Longest limits record (the nonce store's bound on a binding). */
export const MAX_LIMITS_LENGTH = MAX_KEY_LENGTH;

/** Records that the clients token `fingerprint` (living `ttlSeconds`) registers are held to `limits`. */
export async function recordRegistrationLimits(nonces: Pick<NonceStore, 'issue'>, fingerprint: string, limits: RegistrationLimits, ttlSeconds: number): Promise<void> {
  await nonces.issue(limitsKey(fingerprint), ttlSeconds + MARGIN_SECONDS, JSON.stringify(limits));
}

/**
 * The limits of token `fingerprint`: undefined for a token without any, `'damaged'` for a record this module did not
 * write (read as allowing no registration: fail closed, not as unlimited).
 */
export async function registrationLimitsOf(nonces: Pick<NonceStore, 'boundTo'>, fingerprint: string): Promise<RegistrationLimits | 'damaged' | undefined> {
  const text = await nonces.boundTo(limitsKey(fingerprint));
  if (text === undefined) return undefined;
  try {
    return asRegistrationLimits(JSON.parse(text)) ?? 'damaged';
  } catch {
    return 'damaged';
  }
}
