import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

import { deriveKey, kekId } from '../keys/seal.js';

const PREFIX = 'hmac-sha256:';

/** Which pepper a presented secret matched under: the KEK's, or the fallback KEK's (a rotation of the KEK in progress). */
export type SecretMatch = 'current' | 'fallback';

interface Pepper {
  key: KeyObject;
  /** The public fingerprint of the KEK it is derived from (keys/seal.ts `kekId`), which tags the hashes made with it. */
  tag: string;
}

/**
 * Client secrets are stored as HMAC-SHA256 under a key derived from the KEK (a pepper), never in plaintext:
 * a copy of the database alone neither reveals a secret nor lets anyone test guesses against it. Secrets are
 * high-entropy random strings (oidc-provider's secretFactory, or ≥ 32 characters from configuration), so a keyed
 * hash is sufficient; a slow password hash would only cost CPU on every client authentication.
 *
 * A hash names the KEK its pepper came from: `hmac-sha256:<kekId>.<hash>`. Hashes written before they carried it
 * (`hmac-sha256:<hash>`) are tried under the KEK, then under the fallback. While a rotation of the KEK is in progress
 * (AGENTAUTH_KEK_FALLBACK), a secret that matches a hash not tagged with the KEK is re-hashed under it
 * (server/client-secret-rehash.ts), so that the fallback can be removed once every client has authenticated.
 */
export class ClientSecretHasher {
  /** Imported once: every client authentication hashes with it. */
  readonly #current: Pepper;
  readonly #fallback: Pepper | undefined;

  /** Peppers derived from the KEK (and from the fallback KEK during a rotation of the KEK), HKDF label `client-secrets`. */
  constructor(kek: Buffer, fallback?: Buffer) {
    this.#current = pepperOf(kek);
    this.#fallback = fallback ? pepperOf(fallback) : undefined;
  }

  /** Whether a fallback KEK is configured: a rotation of the KEK is in progress. */
  get rotating(): boolean {
    return this.#fallback !== undefined;
  }

  static isHashed(value: unknown): boolean {
    return typeof value === 'string' && value.startsWith(PREFIX);
  }

  /** Whether a stored hash is tagged with the current KEK (an untagged one may be, or may be the fallback's). */
  isCurrent(stored: unknown): boolean {
    return typeof stored === 'string' && stored.startsWith(`${PREFIX}${this.#current.tag}.`);
  }

  hash(secret: string): string {
    return `${PREFIX}${this.#current.tag}.${digest(this.#current.key, secret)}`;
  }

  /** Constant-time comparison of a presented secret with a stored hash. */
  matches(presented: unknown, stored: unknown): boolean {
    return this.match(presented, stored) !== undefined;
  }

  /** As `matches`, saying under which pepper the secret matched (undefined: it did not). */
  match(presented: unknown, stored: unknown): SecretMatch | undefined {
    if (typeof presented !== 'string' || typeof stored !== 'string' || !ClientSecretHasher.isHashed(stored)) return undefined;
    const body = stored.slice(PREFIX.length);
    const dot = body.indexOf('.');
    if (dot >= 0) {
      const tag = body.slice(0, dot);
      const hashed = body.slice(dot + 1);
      if (tag === this.#current.tag) return equal(digest(this.#current.key, presented), hashed) ? 'current' : undefined;
      if (this.#fallback && tag === this.#fallback.tag) return equal(digest(this.#fallback.key, presented), hashed) ? 'fallback' : undefined;
      return undefined; // a pepper of a KEK this server does not hold
    }
    // Written before hashes named their KEK: the KEK's pepper, or the fallback's.
    if (equal(digest(this.#current.key, presented), body)) return 'current';
    if (this.#fallback && equal(digest(this.#fallback.key, presented), body)) return 'fallback';
    return undefined;
  }
}

const pepperOf = (kek: Buffer): Pepper => ({ key: createSecretKey(deriveKey(kek, 'client-secrets')), tag: kekId(kek) });

const digest = (key: KeyObject, secret: string): string => createHmac('sha256', key).update(secret, 'utf8').digest('base64url');

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
