import { afterEach, jest } from '@jest/globals';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import type { JSONWebKeySet, JWK } from 'jose';
import type { webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;

import { VERIFIED_TOKEN_CACHE_SIZE, verifyAccessToken } from '../../server/structured-tokens.js';
import type { StructuredTokenDeps } from '../../server/structured-tokens.js';

// Introspection, revocation and token exchange verify a JWT access token's signature once and keep its claims until
// its exp. These tests pin what that cache may and may not do: it never answers for a token it has not verified
// (a changed byte, another key, an expired token), and it forgets every token when the published keys change.

const ISSUER = 'https://as.example';

async function signingKey(kid: string): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } };
}

function deps(jwks: () => JSONWebKeySet): StructuredTokenDeps {
  const unused = async (): Promise<never> => {
    throw new Error('not used by verifyAccessToken');
  };
  return {
    issuer: ISSUER,
    jwks,
    revoked: { revoke: unused, isRevoked: unused, anyRevoked: unused },
    mayIntrospect: () => true,
  };
}

async function accessToken(key: { privateKey: CryptoKey; jwk: JWK }, claims: { exp: number; jti?: string }): Promise<string> {
  return new SignJWT({ client_id: 'agent', cnf: { jkt: 'thumb' } })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: key.jwk.kid! })
    .setIssuer(ISSUER)
    .setIssuedAt()
    .setJti(claims.jti ?? crypto.randomUUID())
    .setExpirationTime(claims.exp)
    .sign(key.privateKey);
}

const verifyCalls = () => jest.spyOn(crypto.subtle, 'verify');

afterEach(() => {
  jest.restoreAllMocks();
  jest.useRealTimers();
});

describe('verified JWT access tokens are kept until their exp', () => {
  test('a token verified once is answered from the cache: same claims, no second signature check', async () => {
    const key = await signingKey('k1');
    const set = { keys: [key.jwk] };
    const d = deps(() => set);
    const token = await accessToken(key, { exp: Math.floor(Date.now() / 1000) + 300 });
    const spy = verifyCalls();

    const first = await verifyAccessToken(token, d);
    expect(first).toMatchObject({ client_id: 'agent', iss: ISSUER });
    expect(spy).toHaveBeenCalledTimes(1);
    const second = await verifyAccessToken(token, d);
    expect(second).toBe(first);
    expect(spy).toHaveBeenCalledTimes(1);
  });

  test('the cached claims are frozen, nested objects included: no request can change what the next one reads', async () => {
    const key = await signingKey('k1');
    const set = { keys: [key.jwk] };
    const claims = await verifyAccessToken(await accessToken(key, { exp: Math.floor(Date.now() / 1000) + 300 }), deps(() => set));
    expect(Object.isFrozen(claims)).toBe(true);
    expect(Object.isFrozen(claims!.cnf)).toBe(true);
    expect(() => {
      (claims as { client_id: string }).client_id = 'someone-else';
    }).toThrow(TypeError);
  });

  test('a token differing by one signature character from a cached one is verified, and refused', async () => {
    const key = await signingKey('k1');
    const set = { keys: [key.jwk] };
    const d = deps(() => set);
    const token = await accessToken(key, { exp: Math.floor(Date.now() / 1000) + 300 });
    expect(await verifyAccessToken(token, d)).toBeDefined();
    const last = token.at(-2) === 'A' ? 'B' : 'A';
    const forged = `${token.slice(0, -2)}${last}${token.at(-1)}`;
    const spy = verifyCalls();
    expect(await verifyAccessToken(forged, d)).toBeUndefined();
    expect(spy).toHaveBeenCalledTimes(1);
    // A failure is not remembered as anything: the genuine token still answers from the cache.
    expect(await verifyAccessToken(token, d)).toBeDefined();
    expect(spy).toHaveBeenCalledTimes(1);
  });

  test('at its exp the cached token is refused, to the second jose would refuse it', async () => {
    const key = await signingKey('k1');
    const set = { keys: [key.jwk] };
    const d = deps(() => set);
    const exp = Math.floor(Date.now() / 1000) + 60;
    const token = await accessToken(key, { exp });
    expect(await verifyAccessToken(token, d)).toBeDefined();

    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    jest.setSystemTime(exp * 1000 - 1);
    const spy = verifyCalls();
    expect(await verifyAccessToken(token, d)).toBeDefined(); // 1 ms before exp: still active
    expect(spy).toHaveBeenCalledTimes(0);
    jest.setSystemTime(exp * 1000);
    expect(await verifyAccessToken(token, d)).toBeUndefined();
  });

  test('when the published keys change, every cached token is verified again against the new set', async () => {
    const old = await signingKey('old');
    const next = await signingKey('new');
    let set: JSONWebKeySet = { keys: [old.jwk, next.jwk] };
    const d = deps(() => set);
    const exp = Math.floor(Date.now() / 1000) + 300;
    const byOld = await accessToken(old, { exp });
    const byNew = await accessToken(next, { exp });
    expect(await verifyAccessToken(byOld, d)).toBeDefined();
    expect(await verifyAccessToken(byNew, d)).toBeDefined();

    set = { keys: [next.jwk] }; // the old key is no longer published
    const spy = verifyCalls();
    expect(await verifyAccessToken(byOld, d)).toBeUndefined();
    expect(await verifyAccessToken(byNew, d)).toBeDefined();
    expect(spy).toHaveBeenCalledTimes(1); // byOld finds no key for its kid; byNew is checked again
  });

  test('a token refused once (wrong issuer) is refused every time, never cached', async () => {
    const key = await signingKey('k1');
    const set = { keys: [key.jwk] };
    const d = deps(() => set);
    const token = await new SignJWT({ client_id: 'agent' })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
      .setIssuer('https://elsewhere.example')
      .setJti('j')
      .setExpirationTime('5m')
      .sign(key.privateKey);
    const spy = verifyCalls();
    expect(await verifyAccessToken(token, d)).toBeUndefined();
    expect(await verifyAccessToken(token, d)).toBeUndefined();
    expect(spy).toHaveBeenCalledTimes(2);
  });

  test(`bounded: past ${VERIFIED_TOKEN_CACHE_SIZE} tokens the least recently used one is verified again`, async () => {
    const key = await signingKey('k1');
    const set = { keys: [key.jwk] };
    const d = deps(() => set);
    const exp = Math.floor(Date.now() / 1000) + 300;
    const first = await accessToken(key, { exp });
    const second = await accessToken(key, { exp });
    await verifyAccessToken(first, d);
    await verifyAccessToken(second, d);
    // Fill the cache with distinct tokens: one signature reused under different payloads would not verify, so these
    // are real tokens; signing is cheap enough for a few thousand.
    const filler = await Promise.all(Array.from({ length: VERIFIED_TOKEN_CACHE_SIZE - 1 }, () => accessToken(key, { exp })));
    await verifyAccessToken(second, d); // most recently used
    for (const t of filler) expect(await verifyAccessToken(t, d)).toBeDefined();
    const spy = verifyCalls();
    expect(await verifyAccessToken(second, d)).toBeDefined();
    expect(spy).toHaveBeenCalledTimes(0);
    expect(await verifyAccessToken(first, d)).toBeDefined();
    expect(spy).toHaveBeenCalledTimes(1);
  });
});
