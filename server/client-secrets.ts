import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

const PREFIX = 'hmac-sha256:';

/**
 * Client secrets are stored as HMAC-SHA256 under a key derived from the KEK (a pepper), never in plaintext:
 * a copy of the database alone neither reveals a secret nor lets anyone test guesses against it. Secrets are
 * high-entropy random strings (oidc-provider's secretFactory, or ≥ 32 characters from configuration), so a keyed
 * hash is sufficient; a slow password hash would only cost CPU on every client authentication.
 */
export class ClientSecretHasher {
  /** Imported once: every client authentication hashes with it. */
  readonly #pepper: KeyObject;

  constructor(pepper: Buffer) {
    this.#pepper = createSecretKey(pepper);
  }

  static isHashed(value: unknown): boolean {
    return typeof value === 'string' && value.startsWith(PREFIX);
  }

  hash(secret: string): string {
    return PREFIX + createHmac('sha256', this.#pepper).update(secret, 'utf8').digest('base64url');
  }

  /** Constant-time comparison of a presented secret with a stored hash. */
  matches(presented: unknown, stored: unknown): boolean {
    if (typeof presented !== 'string' || typeof stored !== 'string' || !ClientSecretHasher.isHashed(stored)) return false;
    const a = Buffer.from(this.hash(presented));
    const b = Buffer.from(stored);
    return a.length === b.length && timingSafeEqual(a, b);
  }
}
