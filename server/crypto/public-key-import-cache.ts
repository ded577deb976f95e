import type { webcrypto } from 'node:crypto';

/**
 * A bounded cache in front of WebCrypto's `importKey` for public JSON Web Keys.
 *
 * Why: oidc-provider verifies every DPoP proof with jose's `jwtVerify(proof, EmbeddedJWK, ...)`
 * (lib/helpers/validate_dpop.js), and `EmbeddedJWK` imports the proof's embedded public JWK with
 * `crypto.subtle.importKey('jwk', ...)` on every request, ≈ 180 µs of main-thread CPU. Agents reuse one DPoP key
 * for many requests. Wrapping `importKey` binds the cache to the very call oidc-provider makes on every DPoP path
 * (token endpoint for every grant, userinfo, PAR, agentauth's own grants through `validateDpop`): nothing is checked
 * a second time beside it, and nothing is skipped. jose still parses the proof, checks `typ` and the allowed `alg`,
 * refuses a non-public embedded key, and verifies the signature with the (cached) key on every request;
 * oidc-provider still checks `htm`, `htu`, `iat`, `jti`, the nonce, `ath` and replay.
 *
 * What is cached: only `importKey('jwk', keyData, algorithm, extractable, usages)` where `keyData` is an asymmetric
 * public key (`kty` EC, OKP or AKP and none of the private members), and only a result whose `type` is
 * `public`. The cache key is every argument, canonicalised (object members sorted; all members of the JWK, not only
 * those of its RFC 7638 thumbprint), so a hit returns the key the same call would have imported. Secret and private
 * keys never enter it; failed imports are not cached (the same input fails again, with the same error).
 *
 * jose and oidc-provider internals this relies on are pinned and checked by test/unit/dpop-key-cache.test.ts.
 */

type Subtle = webcrypto.SubtleCrypto;
type ImportKey = Subtle['importKey'];
type CryptoKey = webcrypto.CryptoKey;

/** Distinct public keys kept. An agent's DPoP key is one entry (measured for P-256: ≈ 0.9 KB of heap, ≈ 6 KB of RSS with its native key); 1,000 ≈ 6 MB at most. */
export const PUBLIC_KEY_CACHE_SIZE = 1000;

/**
 * Not RSA: an RSA key's `algorithm` holds `publicExponent`, a Uint8Array, which cannot be frozen, so a cached RSA key
 * could not be shared safely; freezing it threw, and every RSA import through the cache failed (oidc-provider reports
 * that as a bad signature: private_key_jwt with RS256 or PS256 was always invalid_client). DPoP proofs, the reason for
 * this cache, are never RSA here (dpop_signing_alg_values_supported), and a client's RSA keys are imported as before.
 */
const CACHEABLE_KTY = new Set(['EC', 'OKP', 'AKP']);
/** JWK members that carry private or secret key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037; AKP `priv`). */
const PRIVATE_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'r', 't', 'k', 'priv']);

/** A least-recently-used map bounded by entry count (Map keeps insertion order; a hit moves the entry to the end). */
export class LruMap<K, V> {
  readonly #map = new Map<K, V>();
  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError('LruMap max must be a positive integer');
  }
  get size(): number {
    return this.#map.size;
  }
  get(key: K): V | undefined {
    const value = this.#map.get(key);
    if (value !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, value);
    }
    return value;
  }
  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.max) this.#map.delete(this.#map.keys().next().value as K);
  }
  clear(): void {
    this.#map.clear();
  }
}

/** A plain object of any realm (its prototype is null or an `Object.prototype`): not an array, class instance or buffer. */
const isPlainObject = (v: unknown): v is Record<string, unknown> => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as object | null;
  return proto === null || Object.getPrototypeOf(proto) === null;
};

/**
 * JSON text of `value` with object members sorted, or undefined when `value` holds anything JSON cannot say exactly
 * (functions, symbols, bigints, non-finite numbers, class instances, `undefined` in an array). An object member
 * whose value is `undefined` is left out, as WebCrypto's dictionary conversion leaves it out.
 */
export function canonicalJson(value: unknown): string | undefined {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'number') return Number.isFinite(value) ? JSON.stringify(value) : undefined;
  if (Array.isArray(value)) {
    const parts: string[] = [];
    for (const item of value) {
      const part = canonicalJson(item);
      if (part === undefined) return undefined;
      parts.push(part);
    }
    return `[${parts.join(',')}]`;
  }
  if (isPlainObject(value)) {
    const parts: string[] = [];
    for (const key of Object.keys(value).sort()) {
      if (value[key] === undefined) continue;
      const part = canonicalJson(value[key]);
      if (part === undefined) return undefined;
      parts.push(`${JSON.stringify(key)}:${part}`);
    }
    return `{${parts.join(',')}}`;
  }
  return undefined;
}

/** The cache key of an `importKey` call, or undefined when the call must go straight through (not a public JWK). */
export function importCacheKey(args: readonly unknown[]): string | undefined {
  if (args.length !== 5) return undefined;
  const [format, keyData, algorithm, extractable, usages] = args;
  if (format !== 'jwk' || !isPlainObject(keyData) || typeof extractable !== 'boolean' || !Array.isArray(usages)) return undefined;
  if (typeof keyData.kty !== 'string' || !CACHEABLE_KTY.has(keyData.kty)) return undefined;
  for (const member of Object.keys(keyData)) if (PRIVATE_MEMBERS.has(member)) return undefined;
  if (typeof algorithm !== 'string' && !isPlainObject(algorithm)) return undefined;
  return canonicalJson([keyData, algorithm, extractable, usages]);
}

/**
 * Whether deepFreeze can freeze all of `value`: a typed array with elements cannot be frozen (Object.freeze throws), so
 * a key whose algorithm holds one (an RSA key's publicExponent) is returned to its caller uncached, never shared, and
 * its import never fails because of the cache.
 */
function freezable(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return true;
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return false;
  return Object.values(value).every(freezable);
}

function deepFreeze(value: unknown): void {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const member of Object.values(value)) deepFreeze(member);
}

export interface PublicKeyImportCache {
  readonly hits: number;
  readonly misses: number;
  readonly size: number;
  readonly max: number;
  clear(): void;
}

const INSTALLED = Symbol.for('agentauth.publicKeyImportCache');
type Patched = Subtle & { [INSTALLED]?: PublicKeyImportCache };

/**
 * Puts the cache in front of `subtle.importKey` (the process-wide `globalThis.crypto.subtle` unless given), once:
 * a second call returns the cache already installed. Called at server start, before any request.
 */
export function installPublicKeyImportCache(subtle: Subtle = globalThis.crypto.subtle, max = PUBLIC_KEY_CACHE_SIZE): PublicKeyImportCache {
  const patched = subtle as Patched;
  const existing = patched[INSTALLED];
  if (existing) return existing;

  const original = subtle.importKey.bind(subtle) as (...args: unknown[]) => Promise<CryptoKey>;
  const keys = new LruMap<string, CryptoKey>(max);
  let hits = 0;
  let misses = 0;

  async function importKey(...args: unknown[]): Promise<CryptoKey> {
    const cacheKey = importCacheKey(args);
    if (cacheKey === undefined) return original(...args);
    const cached = keys.get(cacheKey);
    if (cached) {
      hits += 1;
      return cached;
    }
    misses += 1;
    // Import exactly what was keyed: a copy parsed from the canonical text, so nothing read after keying (a getter,
    // a member changed meanwhile) can differ from the cache key.
    const [keyData, algorithm, extractable, usages] = JSON.parse(cacheKey) as [unknown, unknown, boolean, unknown[]];
    const key = await original(args[0], keyData, algorithm, extractable, usages);
    if (key.type === 'public' && freezable(key.algorithm)) {
      // One key object is now shared by every caller: its algorithm and usages (plain JS objects in Node) are frozen
      // so that no caller can change them for the others.
      deepFreeze(key.algorithm);
      Object.freeze(key.usages);
      keys.set(cacheKey, key);
    }
    return key;
  }

  const cache: PublicKeyImportCache = {
    get hits() {
      return hits;
    },
    get misses() {
      return misses;
    },
    get size() {
      return keys.size;
    },
    max,
    clear() {
      keys.clear();
    },
  };
  Object.defineProperty(subtle, 'importKey', { value: importKey as ImportKey, configurable: true, writable: true, enumerable: false });
  Object.defineProperty(subtle, INSTALLED, { value: cache, configurable: true });
  return cache;
}
