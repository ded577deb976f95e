import { hash } from 'node:crypto';

/** How long a rotation answered 503 keeps the grace answer for its token. */
const UNDELIVERED_MS = 15 * 60_000;
/** At most this many are remembered (the oldest go first). */
const MAX_UNDELIVERED = 10_000;

/**
 * Rotations of a single-use credential that this process answered 503 (storage failed after the rotation was sent,
 * or the answer's audit record was refused): the credential may be used up and its recorded successor delivered to
 * nobody. A retry of such a credential may get that successor (server/grants/refresh-grace.ts for refresh tokens,
 * server/http/registration-steps.ts for RFC 7592 registration access tokens). Kept by a hash of the credential (never
 * the credential itself), for UNDELIVERED_MS, in this process only: a retry that reaches another instance is not
 * known there.
 */
export class UndeliveredRotations {
  readonly #until = new Map<string, number>();

  add(credential: string): void {
    const key = hash('sha256', credential, 'base64url');
    this.#until.delete(key);
    this.#until.set(key, Date.now() + UNDELIVERED_MS);
    while (this.#until.size > MAX_UNDELIVERED) this.#until.delete(this.#until.keys().next().value!);
  }

  has(credential: string): boolean {
    const key = hash('sha256', credential, 'base64url');
    const until = this.#until.get(key);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.#until.delete(key);
    return false;
  }

  /** Whether `credential` is remembered, forgetting it (at most one request gets the grace answer for one rotation). */
  take(credential: string): boolean {
    const held = this.has(credential);
    if (held) this.#until.delete(hash('sha256', credential, 'base64url'));
    return held;
  }
}
