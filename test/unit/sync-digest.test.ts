import { randomBytes, webcrypto } from 'node:crypto';

import { calculateJwkThumbprint } from 'jose';

import { installSyncDigest, syncDigestName } from '../../server/crypto/sync-digest.js';

/**
 * server/crypto/sync-digest.ts computes WebCrypto's SHA-2 digests on the calling thread. It must answer exactly what
 * WebCrypto answers, for every spelling WebCrypto accepts, and hand everything else to WebCrypto unchanged.
 */

type Subtle = webcrypto.SubtleCrypto;
type AlgorithmIdentifier = webcrypto.AlgorithmIdentifier;
type BufferSource = webcrypto.BufferSource;
/** WebCrypto's own digest (the prototype's: an installed one is an own property of the instance). */
const protoDigest = (Object.getPrototypeOf(webcrypto.subtle) as Subtle).digest;
const real = { digest: (...args: unknown[]) => (protoDigest as (...a: unknown[]) => Promise<ArrayBuffer>).apply(webcrypto.subtle, args) } as unknown as Subtle;

/** A SubtleCrypto whose `digest` is WebCrypto's, counting its calls, with the sync digest installed on it. */
function patched(): { subtle: Subtle; originalCalls: () => number } {
  let calls = 0;
  const subtle = {
    digest: (...args: unknown[]) => {
      calls += 1;
      return (real.digest as (...a: unknown[]) => Promise<ArrayBuffer>)(...args);
    },
  } as unknown as Subtle;
  expect(installSyncDigest(subtle)).toBe(true);
  return { subtle, originalCalls: () => calls };
}

const hex = (b: ArrayBuffer) => Buffer.from(b).toString('hex');

describe('sync digest', () => {
  test.each(['SHA-256', 'sha-256', 'Sha-384', 'SHA-512', { name: 'SHA-256' }, { name: 'sha-512' }])(
    '%p gives WebCrypto’s bytes without WebCrypto',
    async (algorithm) => {
      const { subtle, originalCalls } = patched();
      for (const size of [0, 1, 100, 4096]) {
        const data = randomBytes(size);
        const ours = await subtle.digest(algorithm as AlgorithmIdentifier, data);
        expect(hex(ours)).toBe(hex(await real.digest(algorithm as AlgorithmIdentifier, data)));
      }
      expect(originalCalls()).toBe(0);
    },
  );

  test('every kind of buffer source is read exactly: an ArrayBuffer, an offset view, a DataView, a Buffer', async () => {
    const { subtle, originalCalls } = patched();
    const backing = randomBytes(64);
    const whole = backing.buffer.slice(backing.byteOffset, backing.byteOffset + 64) as ArrayBuffer;
    const sources: BufferSource[] = [whole, new Uint8Array(whole, 5, 20), new DataView(whole, 7, 30), new Uint16Array(whole, 2, 8), Buffer.from(backing)];
    for (const source of sources) {
      expect(hex(await subtle.digest('SHA-256', source))).toBe(hex(await real.digest('SHA-256', source)));
    }
    expect(originalCalls()).toBe(0);
  });

  test('the result is a fresh ArrayBuffer of the digest’s length, as WebCrypto’s', async () => {
    const { subtle } = patched();
    const a = await subtle.digest('SHA-256', new Uint8Array([1, 2, 3]));
    const b = await subtle.digest('SHA-256', new Uint8Array([1, 2, 3]));
    expect(a).toBeInstanceOf(ArrayBuffer);
    expect(a.byteLength).toBe(32);
    expect((await subtle.digest('SHA-512', new Uint8Array())).byteLength).toBe(64);
    const view = new Uint8Array(a);
    view[0] = (view[0] ?? 0) ^ 0xff;
    expect(hex(b)).toBe(hex(await real.digest('SHA-256', new Uint8Array([1, 2, 3]))));
  });

  test('anything else goes to WebCrypto, which answers or rejects as before', async () => {
    const { subtle, originalCalls } = patched();
    const data = new Uint8Array([1, 2, 3]);
    expect(hex(await subtle.digest('SHA-1', data))).toBe(hex(await real.digest('SHA-1', data)));
    expect(originalCalls()).toBe(1);
    // A name only Unicode case folding makes a SHA-2 name ('ſ', U+017F, upper-cases to 'S'): WebCrypto decides.
    expect(hex(await subtle.digest('\u017Fha-256', data))).toBe(hex(await real.digest('\u017Fha-256', data)));
    expect(originalCalls()).toBe(2);
    const refused = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        return (err as Error).name;
      }
      return 'resolved';
    };
    const cases: (() => Promise<unknown>)[] = [
      () => (subtle.digest as (...a: unknown[]) => Promise<ArrayBuffer>)('MD5', data),
      () => (subtle.digest as (...a: unknown[]) => Promise<ArrayBuffer>)('SHA-256', 'not bytes'),
      () => (subtle.digest as (...a: unknown[]) => Promise<ArrayBuffer>)({ get name() { return 'SHA-256'; } }, 'not bytes'),
      () => (subtle.digest as (...a: unknown[]) => Promise<ArrayBuffer>)('SHA-256'),
    ];
    for (const fn of cases) {
      const before = originalCalls();
      const name = await refused(fn);
      expect(originalCalls()).toBe(before + 1);
      expect(name).not.toBe('resolved');
    }
    // The same refusals as WebCrypto's own, error for error.
    expect(await refused(() => (real.digest as (...a: unknown[]) => Promise<ArrayBuffer>)('MD5', data))).toBe(await refused(cases[0]!));
    expect(await refused(() => (real.digest as (...a: unknown[]) => Promise<ArrayBuffer>)('SHA-256', 'not bytes'))).toBe(await refused(cases[1]!));
  });

  test('only the SHA-2 names it computes are recognised', () => {
    expect(syncDigestName('SHA-256')).toBe('sha256');
    expect(syncDigestName({ name: 'sha-384' })).toBe('sha384');
    expect(syncDigestName('SHA-1')).toBeUndefined();
    expect(syncDigestName('SHA256')).toBeUndefined();
    // Names are matched in ASCII only; 'ſ' (U+017F), which upper-cases to 'S', is left to WebCrypto.
    expect(syncDigestName('\u017Fha-256')).toBeUndefined();
    expect(syncDigestName('SHA-256\u0000')).toBeUndefined();
    expect(syncDigestName(Object.create({ name: 'SHA-256' }))).toBeUndefined();
    expect(syncDigestName(['SHA-256'])).toBeUndefined();
    expect(syncDigestName(undefined)).toBeUndefined();
  });

  test('installing twice changes nothing the second time', () => {
    const { subtle } = patched();
    const first = subtle.digest;
    expect(installSyncDigest(subtle)).toBe(false);
    expect(subtle.digest).toBe(first);
  });

  test('the RFC 7638 thumbprint every DPoP proof needs (jose, as oidc-provider calls it) takes this path and is unchanged', async () => {
    // RFC 7638 §3.1's example key and thumbprint.
    const jwk = {
      kty: 'RSA',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
      e: 'AQAB',
      alg: 'RS256',
      kid: '2011-04-29',
    };
    const subtle = globalThis.crypto.subtle;
    const own = Object.getOwnPropertyDescriptor(subtle, 'digest');
    let calls = 0;
    // Count what reaches WebCrypto's own digest underneath the installed one.
    Object.defineProperty(subtle, 'digest', {
      value: (...args: unknown[]) => {
        calls += 1;
        return (real.digest as (...a: unknown[]) => Promise<ArrayBuffer>)(...args);
      },
      configurable: true,
      writable: true,
    });
    const marker = Symbol.for('agentauth.syncDigest');
    const hadMarker = Object.getOwnPropertyDescriptor(subtle, marker);
    if (hadMarker) delete (subtle as unknown as Record<symbol, unknown>)[marker];
    try {
      expect(await calculateJwkThumbprint(jwk)).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
      expect(calls).toBe(1);
      installSyncDigest(subtle);
      expect(await calculateJwkThumbprint(jwk)).toBe('NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
      expect(calls).toBe(1);
    } finally {
      delete (subtle as unknown as Record<symbol, unknown>)[marker];
      if (hadMarker) Object.defineProperty(subtle, marker, hadMarker);
      if (own) Object.defineProperty(subtle, 'digest', own);
      else delete (subtle as unknown as Record<string, unknown>).digest;
    }
  });
});
