import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { webcrypto } from 'node:crypto';

import { CompactSign, compactVerify, generateKeyPair, jwtVerify, SignJWT } from 'jose';

import { inlineAlgorithm, inlineSignaturesInstalled, installInlineSignatures, signaturesInline } from '../../server/crypto/inline-signatures.js';

/**
 * server/crypto/inline-signatures.ts computes WebCrypto's ECDSA and Ed25519 signatures on the calling thread. It must
 * answer exactly what WebCrypto answers (a signature WebCrypto accepts, the same true or false for every signature,
 * however malformed), for every spelling WebCrypto accepts, and hand everything else to WebCrypto unchanged.
 */

type Subtle = webcrypto.SubtleCrypto;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Fn<T> = (...args: unknown[]) => Promise<T>;

/** WebCrypto's own methods (the prototype's: installed ones are own properties of the instance). */
const proto = Object.getPrototypeOf(webcrypto.subtle) as Subtle;
const realSign: Fn<ArrayBuffer> = (...args) => (proto.sign as unknown as Fn<ArrayBuffer>).apply(webcrypto.subtle, args);
const realVerify: Fn<boolean> = (...args) => (proto.verify as unknown as Fn<boolean>).apply(webcrypto.subtle, args);

/** A SubtleCrypto whose sign and verify are WebCrypto's, counting their calls, with the inline ones installed on it. */
function patched(): { sign: Fn<ArrayBuffer>; verify: Fn<boolean>; originalCalls: () => number } {
  let calls = 0;
  const subtle = {
    sign: (...args: unknown[]) => {
      calls += 1;
      return realSign(...args);
    },
    verify: (...args: unknown[]) => {
      calls += 1;
      return realVerify(...args);
    },
  } as unknown as Subtle;
  expect(installInlineSignatures(subtle)).toBe(true);
  return { sign: subtle.sign as unknown as Fn<ArrayBuffer>, verify: subtle.verify as unknown as Fn<boolean>, originalCalls: () => calls };
}

const generate = (algorithm: unknown) => webcrypto.subtle.generateKey(algorithm as webcrypto.EcKeyGenParams, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;

/** What a promise settles to: its value, or the rejection's error name. */
async function outcome(p: () => Promise<unknown>): Promise<unknown> {
  try {
    const value = await p();
    return value instanceof ArrayBuffer ? `ArrayBuffer(${value.byteLength})` : value;
  } catch (err) {
    return `rejected: ${(err as Error).name}`;
  }
}

const CURVES = [
  { curve: 'P-256', hash: 'SHA-256', length: 64 },
  { curve: 'P-384', hash: 'SHA-384', length: 96 },
  { curve: 'P-521', hash: 'SHA-512', length: 132 },
  // WebCrypto lets any SHA-2 hash go with any curve.
  { curve: 'P-256', hash: 'SHA-512', length: 64 },
];

describe('inline signatures', () => {
  test.each(CURVES)('ECDSA $curve with $hash: each side verifies the other’s signatures, without WebCrypto', async ({ curve, hash, length }) => {
    const { sign, verify, originalCalls } = patched();
    const keys = await generate({ name: 'ECDSA', namedCurve: curve });
    const algorithm = { name: 'ECDSA', hash };
    for (const size of [0, 1, 100, 4096]) {
      const data = webcrypto.getRandomValues(new Uint8Array(size));
      const ours = await sign(algorithm, keys.privateKey, data);
      expect(ours).toBeInstanceOf(ArrayBuffer);
      expect(ours.byteLength).toBe(length);
      expect(await realVerify(algorithm, keys.publicKey, ours, data)).toBe(true);
      const theirs = await realSign(algorithm, keys.privateKey, data);
      expect(await verify(algorithm, keys.publicKey, theirs, data)).toBe(true);
    }
    expect(originalCalls()).toBe(0);
  });

  test('Ed25519: each side verifies the other’s signatures, without WebCrypto', async () => {
    const { sign, verify, originalCalls } = patched();
    const keys = await generate({ name: 'Ed25519' });
    for (const algorithm of ['Ed25519', { name: 'Ed25519' }, 'ed25519', { name: 'ED25519' }]) {
      const data = webcrypto.getRandomValues(new Uint8Array(200));
      const ours = await sign(algorithm, keys.privateKey, data);
      expect(ours.byteLength).toBe(64);
      expect(Buffer.from(ours).equals(Buffer.from(await realSign(algorithm, keys.privateKey, data)))).toBe(true); // deterministic
      expect(await realVerify(algorithm, keys.publicKey, ours, data)).toBe(true);
      expect(await verify(algorithm, keys.publicKey, ours, data)).toBe(true);
    }
    expect(originalCalls()).toBe(0);
  });

  test.each([{ name: 'ecdsa', hash: 'sha-256' }, { name: 'Ecdsa', hash: { name: 'SHA-256' } }, { name: 'ECDSA', hash: { name: 'sha-256' } }])(
    'the algorithm spelled %p is computed here',
    async (algorithm) => {
      const { sign, verify, originalCalls } = patched();
      const keys = await generate({ name: 'ECDSA', namedCurve: 'P-256' });
      const data = new Uint8Array([1, 2, 3]);
      expect(await verify(algorithm, keys.publicKey, await sign(algorithm, keys.privateKey, data), data)).toBe(true);
      expect(originalCalls()).toBe(0);
    },
  );

  test('a signature that does not match gives false, exactly when WebCrypto gives false: altered, truncated, padded, DER-encoded, empty, another key’s, other data', async () => {
    const { verify, originalCalls } = patched();
    const algorithm = { name: 'ECDSA', hash: 'SHA-256' };
    const keys = await generate({ name: 'ECDSA', namedCurve: 'P-256' });
    const other = await generate({ name: 'ECDSA', namedCurve: 'P-256' });
    const data = new Uint8Array([1, 2, 3]);
    const good = new Uint8Array(await realSign(algorithm, keys.privateKey, data));
    const flipped = good.slice();
    flipped[10] = (flipped[10] ?? 0) ^ 1;
    // r and s as DER (what node:crypto signs by default): a valid signature in the wrong encoding.
    const der = webcrypto.getRandomValues(new Uint8Array(70));
    der[0] = 0x30;
    const zeros = new Uint8Array(64);
    const order = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');
    const outOfRange = new Uint8Array([...order, ...order]); // r = s = n
    const cases: [string, Uint8Array, CryptoKey, Uint8Array][] = [
      ['good', good, keys.publicKey, data],
      ['one bit changed', flipped, keys.publicKey, data],
      ['truncated', good.slice(0, 63), keys.publicKey, data],
      ['padded', new Uint8Array([...good, 0]), keys.publicKey, data],
      ['DER-shaped', der, keys.publicKey, data],
      ['empty', new Uint8Array(), keys.publicKey, data],
      ['all zero', zeros, keys.publicKey, data],
      ['r = s = n', outOfRange, keys.publicKey, data],
      ['another key', good, other.publicKey, data],
      ['other data', good, keys.publicKey, new Uint8Array([1, 2, 4])],
    ];
    for (const [, signature, key, bytes] of cases) {
      expect(await verify(algorithm, key, signature, bytes)).toBe(await realVerify(algorithm, key, signature, bytes));
    }
    expect(await verify(algorithm, keys.publicKey, good, data)).toBe(true);
    expect(await verify(algorithm, keys.publicKey, flipped, data)).toBe(false);
    expect(await verify(algorithm, keys.publicKey, good.slice(0, 63), data)).toBe(false);
    expect(originalCalls()).toBe(0);

    const ed = await generate({ name: 'Ed25519' });
    const edGood = new Uint8Array(await realSign('Ed25519', ed.privateKey, data));
    for (const signature of [edGood, edGood.slice(0, 63), new Uint8Array([...edGood, 0]), new Uint8Array(64), new Uint8Array()]) {
      expect(await verify('Ed25519', ed.publicKey, signature, data)).toBe(await realVerify('Ed25519', ed.publicKey, signature, data));
    }
    expect(originalCalls()).toBe(0);
  });

  test('every kind of buffer source is read exactly: an ArrayBuffer, an offset view, a DataView, a Buffer', async () => {
    const { sign, verify, originalCalls } = patched();
    const algorithm = { name: 'ECDSA', hash: 'SHA-256' };
    const keys = await generate({ name: 'ECDSA', namedCurve: 'P-256' });
    const backing = webcrypto.getRandomValues(new Uint8Array(256));
    const whole = backing.buffer.slice(0) as ArrayBuffer;
    const sources = [whole, new Uint8Array(whole, 5, 20), new DataView(whole, 7, 30), new Uint16Array(whole, 2, 8), Buffer.from(backing)];
    for (const source of sources) {
      const signature = await sign(algorithm, keys.privateKey, source);
      expect(await realVerify(algorithm, keys.publicKey, signature, source)).toBe(true);
      // The signature itself given as a view into a larger buffer.
      const host = new Uint8Array(signature.byteLength + 9);
      host.set(new Uint8Array(signature), 4);
      expect(await verify(algorithm, keys.publicKey, new Uint8Array(host.buffer, 4, signature.byteLength), source)).toBe(true);
      expect(await verify(algorithm, keys.publicKey, new DataView(host.buffer, 4, signature.byteLength), source)).toBe(true);
    }
    expect(originalCalls()).toBe(0);
  });

  test('each signature is a fresh ArrayBuffer holding exactly the signature', async () => {
    const { sign } = patched();
    const keys = await generate({ name: 'Ed25519' });
    const a = await sign('Ed25519', keys.privateKey, new Uint8Array([1]));
    const b = await sign('Ed25519', keys.privateKey, new Uint8Array([1]));
    expect(a).not.toBe(b);
    expect(a.byteLength).toBe(64);
    new Uint8Array(a).fill(0);
    expect(await realVerify('Ed25519', keys.publicKey, b, new Uint8Array([1]))).toBe(true);
  });

  test('anything else goes to WebCrypto, which answers or rejects exactly as before', async () => {
    const { sign, verify, originalCalls } = patched();
    const ec = await generate({ name: 'ECDSA', namedCurve: 'P-256' });
    const ed = await generate({ name: 'Ed25519' });
    const noUsage = (await webcrypto.subtle.importKey('jwk', await webcrypto.subtle.exportKey('jwk', ec.publicKey), { name: 'ECDSA', namedCurve: 'P-256' }, false, [])) as CryptoKey;
    const verifyOnly = (await webcrypto.subtle.importKey('jwk', await webcrypto.subtle.exportKey('jwk', ec.publicKey), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify'])) as CryptoKey;
    const hmac = (await webcrypto.subtle.generateKey({ name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify'])) as CryptoKey;
    const rsa = await generate({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' });
    const data = new Uint8Array([1, 2, 3]);
    const es256 = { name: 'ECDSA', hash: 'SHA-256' };
    const signature = await realSign(es256, ec.privateKey, data);
    const shared = new Uint8Array(new SharedArrayBuffer(3));
    const getter = { get name() { return 'ECDSA'; }, hash: 'SHA-256' };
    const inherited = Object.assign(Object.create({ name: 'ECDSA' }) as object, { hash: 'SHA-256' });
    const sameKeyOtherObject = { ...ec.publicKey };

    const verifies: unknown[][] = [
      [es256, ec.privateKey, signature, data], // a private key to verify
      [es256, noUsage, signature, data], // a public key not allowed to verify
      [es256, ed.publicKey, signature, data], // a key of another algorithm
      ['Ed25519', ec.publicKey, signature, data],
      [{ name: 'ECDSA', hash: 'SHA-1' }, ec.publicKey, signature, data], // a hash not computed here
      [{ name: 'ECDSA' }, ec.publicKey, signature, data], // no hash
      [getter, ec.publicKey, signature, data],
      [inherited, ec.publicKey, signature, data],
      [{ name: 'HMAC' }, hmac, signature, data],
      [{ name: 'RSASSA-PKCS1-v1_5' }, rsa.publicKey, signature, data],
      [es256, sameKeyOtherObject, signature, data], // not a CryptoKey
      [es256, ec.publicKey, signature, shared],
      [es256, ec.publicKey, signature, 'not bytes'],
      [es256, ec.publicKey, signature], // too few arguments
    ];
    for (const args of verifies) {
      const before = originalCalls();
      expect(await outcome(() => verify(...args))).toEqual(await outcome(() => realVerify(...args)));
      expect(originalCalls()).toBe(before + 1);
    }
    const signs: unknown[][] = [
      [es256, ec.publicKey, data], // a public key to sign
      [es256, verifyOnly, data],
      [es256, ed.privateKey, data],
      ['Ed25519', ec.privateKey, data],
      [{ name: 'HMAC' }, hmac, data],
      [{ name: 'RSASSA-PKCS1-v1_5' }, rsa.privateKey, data],
      [es256, ec.privateKey, shared],
      [es256, ec.privateKey],
    ];
    for (const args of signs) {
      const before = originalCalls();
      expect(await outcome(() => sign(...args))).toEqual(await outcome(() => realSign(...args)));
      expect(originalCalls()).toBe(before + 1);
    }
    // A key without the usage: refused by WebCrypto, not signed here.
    const signOnly = await webcrypto.subtle.importKey('jwk', await webcrypto.subtle.exportKey('jwk', ed.privateKey), { name: 'Ed25519' }, false, ['sign']);
    const before = originalCalls();
    expect(await outcome(() => verify('Ed25519', signOnly, new Uint8Array(64), data))).toBe('rejected: InvalidAccessError');
    expect(originalCalls()).toBe(before + 1);
  });

  test('only the algorithms and spellings it computes are recognised', () => {
    expect(inlineAlgorithm({ name: 'ECDSA', hash: 'SHA-256' })).toEqual({ hash: 'sha256', keyAlgorithm: 'ECDSA' });
    expect(inlineAlgorithm({ name: 'ecdsa', hash: { name: 'sha-384' } })).toEqual({ hash: 'sha384', keyAlgorithm: 'ECDSA' });
    expect(inlineAlgorithm('Ed25519')).toEqual({ hash: null, keyAlgorithm: 'Ed25519' });
    expect(inlineAlgorithm('ECDSA')).toBeUndefined(); // a string ECDSA has no hash
    expect(inlineAlgorithm({ name: 'ECDSA', hash: 'SHA-1' })).toBeUndefined();
    expect(inlineAlgorithm({ name: 'ECDSA\u0000', hash: 'SHA-256' })).toBeUndefined();
    // Names are matched in ASCII only; 'ſ' (U+017F), which upper-cases to 'S', is left to WebCrypto.
    expect(inlineAlgorithm({ name: 'ECD\u017FA', hash: 'SHA-256' })).toBeUndefined();
    expect(inlineAlgorithm({ name: 'Ed448' })).toBeUndefined();
    expect(inlineAlgorithm({ name: 'RSA-PSS', hash: 'SHA-256' })).toBeUndefined();
    expect(inlineAlgorithm(['Ed25519'])).toBeUndefined();
    expect(inlineAlgorithm(undefined)).toBeUndefined();
  });

  test('installing twice changes nothing the second time', () => {
    const subtle = { sign: () => undefined, verify: () => undefined } as unknown as Subtle;
    expect(inlineSignaturesInstalled(subtle)).toBe(false);
    expect(installInlineSignatures(subtle)).toBe(true);
    expect(inlineSignaturesInstalled(subtle)).toBe(true);
    const first = [subtle.sign, subtle.verify];
    expect(installInlineSignatures(subtle)).toBe(false);
    expect([subtle.sign, subtle.verify]).toEqual(first);
  });
});

describe('where signatures are computed', () => {
  test('inline only when the server’s processes leave no core to the thread pool', () => {
    expect(signaturesInline(1, 2)).toBe(false); // one process on 2 cores: the thread pool uses the second
    expect(signaturesInline(1, 8)).toBe(false);
    expect(signaturesInline(2, 2)).toBe(true); // --workers 2 on 2 cores
    expect(signaturesInline(4, 2)).toBe(true);
    expect(signaturesInline(1, 1)).toBe(true); // one process on one core
    expect(signaturesInline(3, 4)).toBe(false);
  });
});

describe('jose signs and verifies JWTs through the global crypto.subtle, so agentauth’s tokens and DPoP proofs take this path', () => {
  const root = process.cwd();

  test('jose 6.2.17 calls crypto.subtle.sign and crypto.subtle.verify with its ECDSA and Ed25519 algorithm objects', () => {
    // Pinned in package.json and checked by test/unit/dpop-key-cache.test.ts; these are the lines this module sits under.
    const webapi = join(root, 'node_modules/jose/dist/webapi/lib');
    expect(readFileSync(join(webapi, 'jws_sign.js'), 'utf8')).toContain('await crypto.subtle.sign(entry.signing, signingKey, signingInput)');
    expect(readFileSync(join(webapi, 'jws_verify.js'), 'utf8')).toContain('verified = await crypto.subtle.verify(entry.signing, cryptoKey, signature, signingInput);');
    const algorithms = readFileSync(join(webapi, 'jws_algorithms.js'), 'utf8');
    expect(algorithms).toContain('signing: { name: "ECDSA", hash: `SHA-${bits}` },');
    expect(algorithms).toMatch(/const subtle = \{ name: "Ed25519" \};[\s\S]*signing: subtle,/);
  });

  test('ES256 and EdDSA JWTs signed and verified by jose go through the installed methods, and a forged one still fails', async () => {
    const subtle = globalThis.crypto.subtle;
    const saved = ['sign', 'verify', Symbol.for('agentauth.inlineSignatures')].map((k) => [k, Object.getOwnPropertyDescriptor(subtle, k)] as const);
    let calls = 0;
    // Count what reaches WebCrypto's own methods underneath the installed ones.
    for (const [name, real] of [['sign', realSign], ['verify', realVerify]] as const) {
      Object.defineProperty(subtle, name, {
        value: (...args: unknown[]) => {
          calls += 1;
          return (real as Fn<unknown>)(...args);
        },
        configurable: true,
        writable: true,
      });
    }
    delete (subtle as unknown as Record<symbol, unknown>)[Symbol.for('agentauth.inlineSignatures')];
    try {
      expect(installInlineSignatures()).toBe(true);
      for (const alg of ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']) {
        const { privateKey, publicKey } = await generateKeyPair(alg);
        const jwt = await new SignJWT({ sub: 'agent' }).setProtectedHeader({ alg }).sign(privateKey);
        expect((await jwtVerify(jwt, publicKey)).payload.sub).toBe('agent');
        const [h, p, s] = jwt.split('.') as [string, string, string];
        const forged = `${h}.${Buffer.from(JSON.stringify({ sub: 'admin' })).toString('base64url')}.${s}`;
        await expect(jwtVerify(forged, publicKey)).rejects.toThrow('signature verification failed');
        void p;
      }
      expect(calls).toBe(0);
      // RS256 still goes to WebCrypto (sign and verify once each).
      const rsa = await generateKeyPair('RS256');
      const jws = await new CompactSign(new Uint8Array([1])).setProtectedHeader({ alg: 'RS256' }).sign(rsa.privateKey);
      await compactVerify(jws, rsa.publicKey);
      expect(calls).toBe(2);
    } finally {
      for (const [key, descriptor] of saved) {
        if (descriptor) Object.defineProperty(subtle, key, descriptor);
        else delete (subtle as unknown as Record<string | symbol, unknown>)[key];
      }
    }
  });
});
