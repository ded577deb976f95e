import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

import { clientJwksProblem, MAX_CLIENT_KEYS } from '../../server/policies/client-keys.js';

/**
 * A private_key_jwt client's keys (server/policies/client-keys.ts), checked at registration and in the configuration
 * file: every key the token endpoint can verify an assertion with is accepted, with the members clients commonly add;
 * a set it could never authenticate with is refused, naming the key and why.
 */
const publicJwk = (type: 'ec' | 'ed25519' | 'rsa', options: Record<string, unknown> = {}): Record<string, unknown> => {
  const { publicKey } = generateKeyPairSync(type as 'ec', options as { namedCurve: string }) as unknown as { publicKey: KeyObject };
  return publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
};
const p256 = publicJwk('ec', { namedCurve: 'P-256' });
const p384 = publicJwk('ec', { namedCurve: 'P-384' });
const p521 = publicJwk('ec', { namedCurve: 'P-521' });
const ed25519 = publicJwk('ed25519');
const rsa2048 = publicJwk('rsa', { modulusLength: 2048 });
const rsa1024 = publicJwk('rsa', { modulusLength: 1024 });

test.each([
  ['EC P-256 with kid, alg ES256, use sig, key_ops verify and an x5c', { ...p256, kid: 'k1', alg: 'ES256', use: 'sig', key_ops: ['verify'], x5c: ['MIIB'] }],
  ['EC P-384 with alg ES384', { ...p384, alg: 'ES384' }],
  ['Ed25519 with alg EdDSA', { ...ed25519, alg: 'EdDSA' }],
  ['RSA 2048 with alg RS256', { ...rsa2048, alg: 'RS256' }],
  ['RSA 2048 with alg PS256', { ...rsa2048, alg: 'PS256' }],
  ['RSA 2048 without alg', rsa2048],
])('accepted: %s', (_name, key) => {
  expect(clientJwksProblem({ keys: [key] })).toBeUndefined();
});

test.each([
  ['no keys', { keys: [] }, 'must hold at least one key'],
  ['too many keys', { keys: Array.from({ length: MAX_CLIENT_KEYS + 1 }, () => p256) }, `must hold at most ${MAX_CLIENT_KEYS} keys`],
  ['not a key set', { keys: 'x' }, 'must be an object with a "keys" array'],
  ['a key that is not an object', { keys: [p256, 5] }, 'keys[1] must be a JWK object'],
  ['a private key', { keys: [{ ...p256, d: 'AAAA' }] }, 'keys[0] must be a public key (it has private members)'],
  ['a symmetric key', { keys: [{ kty: 'oct', k: 'AAAA' }] }, 'keys[0] must be a public key (it has private members)'],
  ['an unknown key type', { keys: [{ kty: 'XYZ' }] }, 'keys[0] must have kty EC, OKP or RSA'],
  ['a curve the token endpoint does not verify', { keys: [p521] }, 'keys[0] must be on curve P-256 or P-384'],
  ['an X25519 key', { keys: [{ kty: 'OKP', crv: 'X25519', x: ed25519.x }] }, 'keys[0] must be an Ed25519 key (crv "Ed25519")'],
  ['a point off its curve', { keys: [{ ...p256, y: p384.x }] }, 'keys[0] is not a valid public key of its type (node:crypto cannot import it)'],
  ['an RSA key of 1024 bits', { keys: [rsa1024] }, 'keys[0] must have a modulus of 2048 to 8192 bits (it has 1024)'],
  ['use enc', { keys: [{ ...p256, use: 'enc' }] }, 'keys[0] must have use "sig" if it has use (private_key_jwt verifies signatures with it)'],
  ['key_ops sign', { keys: [{ ...p256, key_ops: ['sign'] }] }, 'keys[0] must have key_ops ["verify"] if it has key_ops'],
  ['an alg of another curve', { keys: [{ ...p256, alg: 'ES384' }] }, 'keys[0] must have alg ES256 for its key type if it has alg (got "ES384")'],
  ['alg Ed25519 (the token endpoint names it EdDSA)', { keys: [{ ...ed25519, alg: 'Ed25519' }] }, 'keys[0] must have alg EdDSA for its key type if it has alg (got "Ed25519")'],
])('refused: %s', (_name, jwks, problem) => {
  expect(clientJwksProblem(jwks)).toBe(problem);
});
