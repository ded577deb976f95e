import { constants, createPrivateKey, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import type { KeyObject, webcrypto } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import { EmbeddedJWK, errors as joseErrors, jwtVerify } from 'jose';
import type { JWK } from 'jose';
import Provider from 'oidc-provider';

import { canonicalJson, importCacheKey, installPublicKeyImportCache, LruMap, PUBLIC_KEY_CACHE_SIZE } from '../../server/crypto/public-key-import-cache.js';
import type { PublicKeyImportCache } from '../../server/crypto/public-key-import-cache.js';

/**
 * server/crypto/public-key-import-cache.ts puts a cache in front of `crypto.subtle.importKey`, relying on how jose
 * 6.2.17's EmbeddedJWK imports a DPoP proof's key and on oidc-provider 9.13.3 verifying proofs with it. Neither is
 * public API: the pins and source checks below fail on any upgrade of either package, so whoever upgrades re-checks
 * that the cache still sits on the path every DPoP proof takes.
 */

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

interface Key {
  privateKey: KeyObject;
  jwk: JWK;
}
function ecKey(): Key {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, jwk: publicKey.export({ format: 'jwk' }) as JWK };
}
/** A compact JWS signed with ES256 (node:crypto), header and payload exactly as given. */
function es256(key: KeyObject, header: Record<string, unknown>, payload: Record<string, unknown>): string {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}
const dpopProof = (key: Key, htu: string, extra: { header?: Record<string, unknown>; payload?: Record<string, unknown> } = {}) =>
  es256(key.privateKey, { typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk, ...extra.header }, { htm: 'POST', htu, iat: now(), jti: randomUUID(), ...extra.payload });
const verifyLikeOidcProvider = (proof: string) => jwtVerify(proof, EmbeddedJWK, { algorithms: ['ES256', 'EdDSA', 'Ed25519'], typ: 'dpop+jwt' });

const oidcLib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
const root = process.cwd();

describe('the jose and oidc-provider internals the DPoP key cache relies on', () => {
  test('jose is pinned to exactly the version checked here, and oidc-provider uses that same copy', () => {
    const ours = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(ours.dependencies.jose).toBe('6.2.17');
    const installed = JSON.parse(readFileSync(join(root, 'node_modules/jose/package.json'), 'utf8')) as { version: string };
    expect(installed.version).toBe('6.2.17');
    // A nested copy would be a jose this test does not see.
    expect(existsSync(join(oidcLib, '..', 'node_modules', 'jose'))).toBe(false);
  });

  test("oidc-provider's validateDpop verifies the proof with jose's jwtVerify and EmbeddedJWK", () => {
    const source = readFileSync(join(oidcLib, 'helpers/validate_dpop.js'), 'utf8');
    expect(source).toMatch(/import \{\s*calculateJwkThumbprint,\s*EmbeddedJWK,\s*jwtVerify,\s*\} from 'jose';/);
    expect(source).toContain("jwt = await jwtVerify(proof, EmbeddedJWK, { algorithms: dPoPSigningAlgValues, typ: 'dpop+jwt' });");
    // Every DPoP use reaches it: the grants (and agentauth's, through helpers/grants.js), userinfo and PAR.
    expect(readFileSync(join(oidcLib, 'helpers/grants.js'), 'utf8')).toContain("export { default as validateDpop, checkDpopReplay } from './validate_dpop.js';");
    expect(readFileSync(join(oidcLib, 'shared/access_token.js'), 'utf8')).toContain("import dpopValidate, { checkDpopReplay } from '../helpers/validate_dpop.js';");
    expect(readFileSync(join(oidcLib, 'actions/authorization/sender_constraints.js'), 'utf8')).toContain("import dpopValidate, { checkDpopReplay } from '../../helpers/validate_dpop.js';");
  });

  test("jose's EmbeddedJWK imports the key through the global crypto.subtle.importKey, and refuses a non-public key after it", () => {
    const webapi = join(root, 'node_modules/jose/dist/webapi');
    const embedded = readFileSync(join(webapi, 'jwk/embedded.js'), 'utf8');
    expect(embedded).toContain('const key = await jwkToKey(entry, jwk, !0);');
    expect(embedded).toContain('if (key.type !== "public")');
    const key = readFileSync(join(webapi, 'lib/key.js'), 'utf8');
    expect(key).toContain('crypto.subtle.importKey("jwk", keyData, algorithm, keyData.ext ?? !isPrivate, jwk.key_ops ?? entry.usages[isPrivate ? 1 : 0])');
    // jose imports nothing named crypto: `crypto` there is the global WebCrypto object the cache is installed on.
    expect(key).not.toMatch(/import[^;]*\bcrypto\b/);
  });
});

describe('the public key import cache', () => {
  let cache: PublicKeyImportCache;
  beforeAll(() => {
    cache = installPublicKeyImportCache();
  });
  beforeEach(() => cache.clear());

  test('installing twice keeps one cache', () => {
    expect(installPublicKeyImportCache()).toBe(cache);
    expect(cache.max).toBe(PUBLIC_KEY_CACHE_SIZE);
  });

  test("jose's EmbeddedJWK path imports a proof key once: later proofs with the same key are cache hits", async () => {
    const key = ecKey();
    const other = ecKey();
    const before = { hits: cache.hits, misses: cache.misses };
    for (let i = 0; i < 3; i += 1) await verifyLikeOidcProvider(dpopProof(key, 'https://as.example/token'));
    await verifyLikeOidcProvider(dpopProof(other, 'https://as.example/token'));
    expect(cache.misses - before.misses).toBe(2);
    expect(cache.hits - before.hits).toBe(2);
    expect(cache.size).toBe(2);
  });

  describe('with the proof key already cached, every check jose makes still runs', () => {
    const key = ecKey();
    beforeEach(async () => {
      await verifyLikeOidcProvider(dpopProof(key, 'https://as.example/token'));
      expect(cache.size).toBe(1);
    });

    test('the signature: a proof signed by another key under the cached key is refused', async () => {
      const forged = es256(ecKey().privateKey, { typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk }, { htm: 'POST', htu: 'https://as.example/token', iat: now(), jti: randomUUID() });
      await expect(verifyLikeOidcProvider(forged)).rejects.toBeInstanceOf(joseErrors.JWSSignatureVerificationFailed);
    });

    test('the signature: a payload changed after signing is refused', async () => {
      const [h, , s] = dpopProof(key, 'https://as.example/token').split('.');
      const altered = `${h}.${b64({ htm: 'POST', htu: 'https://as.example/token', iat: now(), jti: randomUUID() })}.${s}`;
      await expect(verifyLikeOidcProvider(altered)).rejects.toBeInstanceOf(joseErrors.JWSSignatureVerificationFailed);
    });

    test('typ: a proof typed JWT is refused', async () => {
      await expect(verifyLikeOidcProvider(dpopProof(key, 'https://as.example/token', { header: { typ: 'JWT' } }))).rejects.toMatchObject({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'typ' });
    });

    test('alg: an algorithm outside the allowed list is refused', async () => {
      await expect(verifyLikeOidcProvider(dpopProof(key, 'https://as.example/token', { header: { alg: 'ES384' } }))).rejects.toBeInstanceOf(joseErrors.JOSEAlgNotAllowed);
    });

    test('the embedded key must be public: the same key with its private member is refused and not cached', async () => {
      const withPrivate = { ...key.jwk, d: (key.privateKey.export({ format: 'jwk' }) as JWK).d };
      const hits = cache.hits;
      await expect(verifyLikeOidcProvider(dpopProof(key, 'https://as.example/token', { header: { jwk: withPrivate } }))).rejects.toThrow(/must be a public key/);
      expect(cache.hits).toBe(hits);
      expect(cache.size).toBe(1);
    });

    test('an embedded key whose "use" or "alg" contradicts the proof is refused', async () => {
      await expect(verifyLikeOidcProvider(dpopProof(key, 'https://as.example/token', { header: { jwk: { ...key.jwk, use: 'enc' } } }))).rejects.toBeInstanceOf(joseErrors.JWSInvalid);
      await expect(verifyLikeOidcProvider(dpopProof(key, 'https://as.example/token', { header: { jwk: { ...key.jwk, alg: 'ES384' } } }))).rejects.toBeInstanceOf(joseErrors.JWSInvalid);
    });
  });
});

describe('what the cache keys on and what it keeps out', () => {
  const { jwk } = ecKey();
  const ecdsa = { name: 'ECDSA', namedCurve: 'P-256' };

  test('the key is every argument: member order does not matter, any other member does', () => {
    const base = importCacheKey(['jwk', { ...jwk, ext: true }, ecdsa, true, ['verify']]);
    expect(base).toBeDefined();
    const reordered = Object.fromEntries(Object.entries({ ...jwk, ext: true }).reverse());
    expect(importCacheKey(['jwk', reordered, { namedCurve: 'P-256', name: 'ECDSA' }, true, ['verify']])).toBe(base);
    expect(importCacheKey(['jwk', { ...jwk, ext: true, kid: 'a' }, ecdsa, true, ['verify']])).not.toBe(base);
    expect(importCacheKey(['jwk', { ...jwk, ext: true }, { name: 'ECDH', namedCurve: 'P-256' }, true, ['verify']])).not.toBe(base);
    expect(importCacheKey(['jwk', { ...jwk, ext: true }, ecdsa, false, ['verify']])).not.toBe(base);
    expect(importCacheKey(['jwk', { ...jwk, ext: true }, ecdsa, true, []])).not.toBe(base);
  });

  test.each([
    ['an EC private key', { ...jwk, d: 'AAAA' }],
    ['an RSA private key (only "p" present)', { kty: 'RSA', n: 'AQAB', e: 'AQAB', p: 'AAAA' }],
    ['an OKP private key', { kty: 'OKP', crv: 'Ed25519', x: 'AAAA', d: 'AAAA' }],
    ['an AKP private key', { kty: 'AKP', alg: 'ML-DSA-44', pub: 'AAAA', priv: 'AAAA' }],
    ['a symmetric key', { kty: 'oct', k: 'AAAA' }],
    ['an unknown key type', { kty: 'XYZ', x: 'AAAA' }],
    ['no key type', { x: 'AAAA' }],
  ])('%s goes straight through, never into the cache', (_label, keyData) => {
    expect(importCacheKey(['jwk', keyData, ecdsa, true, ['verify']])).toBeUndefined();
  });

  test('formats other than jwk, and arguments JSON cannot state exactly, go straight through', () => {
    expect(importCacheKey(['spki', Buffer.alloc(4), ecdsa, true, ['verify']])).toBeUndefined();
    expect(importCacheKey(['raw', new Uint8Array(4), ecdsa, true, ['verify']])).toBeUndefined();
    expect(importCacheKey(['jwk', { ...jwk, x: 1n }, ecdsa, true, ['verify']])).toBeUndefined();
    expect(importCacheKey(['jwk', jwk, { name: 'ECDSA', namedCurve: Symbol('P-256') }, true, ['verify']])).toBeUndefined();
    expect(importCacheKey(['jwk', jwk, ecdsa, 'yes', ['verify']])).toBeUndefined();
    expect(importCacheKey(['jwk', jwk, ecdsa, true])).toBeUndefined();
    expect(canonicalJson({ b: [1, 'x', null], a: { d: true, c: undefined } })).toBe('{"a":{"d":true},"b":[1,"x",null]}');
    expect(canonicalJson([undefined])).toBeUndefined();
    expect(canonicalJson(Number.NaN)).toBeUndefined();
  });

  test('a private key is imported, not cached; a cached public key is shared, frozen; the cache is bounded', async () => {
    const subtle = Object.create(Object.getPrototypeOf(globalThis.crypto.subtle) as object) as webcrypto.SubtleCrypto;
    // A separate object whose importKey is the real one, so this test owns its cache.
    Object.defineProperty(subtle, 'importKey', { value: globalThis.crypto.subtle.importKey.bind(globalThis.crypto.subtle), writable: true, configurable: true });
    const own = installPublicKeyImportCache(subtle, 4);
    const priv = createPrivateKey({ key: ecKey().privateKey.export({ format: 'jwk' }), format: 'jwk' }).export({ format: 'jwk' });
    const imported = await subtle.importKey('jwk', priv, ecdsa, false, ['sign']);
    expect(imported.type).toBe('private');
    expect(own.size).toBe(0);
    expect(own.misses).toBe(0);
    // A cached key is shared: what a caller could change on it is frozen.
    const jwk = ecKey().jwk;
    const shared = await subtle.importKey('jwk', jwk, ecdsa, true, ['verify']);
    expect(await subtle.importKey('jwk', { ...jwk }, { ...ecdsa }, true, ['verify'])).toBe(shared);
    expect(Object.isFrozen(shared.usages)).toBe(true);
    expect(Object.isFrozen(shared.algorithm)).toBe(true);
    own.clear();
    // Bounded: the fifth distinct public key evicts the least recently used.
    for (let i = 0; i < 5; i += 1) await subtle.importKey('jwk', ecKey().jwk, ecdsa, true, ['verify']);
    expect(own.size).toBe(4);
    expect(own.misses).toBe(6);
  });

  test('an RSA public key (RS256, PS256: private_key_jwt) is imported, never cached, and verifies', async () => {
    const subtle = Object.create(Object.getPrototypeOf(globalThis.crypto.subtle) as object) as webcrypto.SubtleCrypto;
    Object.defineProperty(subtle, 'importKey', { value: globalThis.crypto.subtle.importKey.bind(globalThis.crypto.subtle), writable: true, configurable: true });
    const own = installPublicKeyImportCache(subtle, 4);
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rsaJwk = publicKey.export({ format: 'jwk' });
    expect(importCacheKey(['jwk', rsaJwk, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, true, ['verify']])).toBeUndefined();
    const data = Buffer.from('client assertion');
    for (const [algorithm, signature] of [
      [{ name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign('sha256', data, privateKey)],
      [{ name: 'RSA-PSS', hash: 'SHA-256' }, sign('sha256', data, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 })],
    ] as const) {
      // Before, the cache froze the key's algorithm, whose publicExponent (a Uint8Array) cannot be frozen: this import threw.
      const key = await subtle.importKey('jwk', rsaJwk, algorithm, true, ['verify']);
      expect(key.type).toBe('public');
      expect(await globalThis.crypto.subtle.verify({ name: algorithm.name, saltLength: 32 }, key, signature, data)).toBe(true);
      expect(await subtle.importKey('jwk', rsaJwk, algorithm, true, ['verify'])).not.toBe(key);
    }
    expect([own.size, own.hits, own.misses]).toEqual([0, 0, 0]);
  });

  test('a public key whose algorithm holds bytes (which cannot be frozen) is returned uncached, not an error', async () => {
    const subtle = Object.create(Object.getPrototypeOf(globalThis.crypto.subtle) as object) as webcrypto.SubtleCrypto;
    // An import whose key, like an RSA key, has a byte array in its algorithm, for a kind of key the cache takes.
    const made: unknown[] = [];
    const importKey = async () => {
      const key = { type: 'public', algorithm: { name: 'ECDSA', namedCurve: 'P-256', extra: new Uint8Array([1, 0, 1]) }, usages: ['verify'], extractable: true };
      made.push(key);
      return key;
    };
    Object.defineProperty(subtle, 'importKey', { value: importKey, writable: true, configurable: true });
    const own = installPublicKeyImportCache(subtle, 4);
    const { jwk } = ecKey();
    const first = await subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']);
    const second = await subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify']);
    expect(first).not.toBe(second);
    expect(made).toHaveLength(2);
    expect(own.size).toBe(0);
    expect(Object.isFrozen(first.algorithm)).toBe(false);
  });

  test('LruMap keeps the most recently used entries', () => {
    const lru = new LruMap<string, number>(2);
    lru.set('a', 1);
    lru.set('b', 2);
    expect(lru.get('a')).toBe(1);
    lru.set('c', 3);
    expect(lru.get('b')).toBeUndefined();
    expect(lru.get('a')).toBe(1);
    expect(lru.get('c')).toBe(3);
    expect(() => new LruMap(0)).toThrow(RangeError);
  });
});

describe("oidc-provider's own DPoP verification goes through the cache", () => {
  let server: Server;
  let url: string;
  let cache: PublicKeyImportCache;
  const client = { id: 'cache-test-client', secret: 'cache-test-client-secret-0123456789abcdef' };

  beforeAll(async () => {
    cache = installPublicKeyImportCache();
    server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const signing = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
    const provider = new Provider(url, {
      clients: [{ client_id: client.id, client_secret: client.secret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [] }],
      jwks: { keys: [{ ...signing, alg: 'ES256', use: 'sig', kid: 'k1' }] },
      clientDefaults: { id_token_signed_response_alg: 'ES256' },
      enabledJWA: { dPoPSigningAlgValues: ['ES256'] },
      features: { devInteractions: { enabled: false }, clientCredentials: { enabled: true }, dPoP: { enabled: true } },
    });
    server.on('request', provider.callback());
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const tokenRequest = async (dpop: string) => {
    const res = await fetch(`${url}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        dpop,
      },
      body: new URLSearchParams({ grant_type: 'client_credentials' }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  test('the first token request imports the proof key, the next ones with that key do not; a forged proof under it is still refused', async () => {
    const key = ecKey();
    const before = { hits: cache.hits, misses: cache.misses };
    for (let i = 0; i < 3; i += 1) {
      const res = await tokenRequest(dpopProof(key, `${url}/token`));
      expect(res).toMatchObject({ status: 200, body: { token_type: 'DPoP' } });
    }
    expect(cache.misses - before.misses).toBe(1);
    expect(cache.hits - before.hits).toBe(2);
    const forged = es256(ecKey().privateKey, { typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk }, { htm: 'POST', htu: `${url}/token`, iat: now(), jti: randomUUID() });
    expect(await tokenRequest(forged)).toMatchObject({ status: 400, body: { error: 'invalid_dpop_proof' } });
    expect(cache.hits - before.hits).toBe(3);
  });
});
