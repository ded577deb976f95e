import { createPublicKey } from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';

/** Most keys a client's `jwks` may hold (registration and the configuration file). */
export const MAX_CLIENT_KEYS = 10;

/** RSA moduli accepted for private_key_jwt (RFC 7518 §3.3 requires at least 2048 bits; more than 8192 only costs). */
const RSA_BITS = { min: 2048, max: 8192 };
const EC_CURVES = new Set(['P-256', 'P-384']);

/** The `alg` each key type may name: the client-assertion algorithms the token endpoint accepts (server/provider.ts). */
export function algsFor(jwk: Record<string, unknown>): readonly string[] {
  if (jwk.kty === 'EC') return jwk.crv === 'P-384' ? ['ES384'] : ['ES256'];
  if (jwk.kty === 'OKP') return ['EdDSA'];
  return ['RS256', 'PS256'];
}

/**
 * Why a client's `jwks` cannot authenticate it with private_key_jwt, or undefined when every key can: at least one and
 * at most MAX_CLIENT_KEYS keys, each a public key node:crypto imports (EC on P-256 or P-384 for ES256/ES384, OKP
 * Ed25519 for EdDSA, RSA of 2048 to 8192 bits for RS256/PS256: the algorithms the token endpoint accepts), with no
 * private member, and, where given, `use` "sig", `key_ops` ["verify"] and an `alg` of those for its type. oidc-provider checks only the members' types, so a key of an unknown type, a point off its curve
 * or an empty set registered, and every token request of that client then failed.
 */
export function clientJwksProblem(jwks: unknown): string | undefined {
  const keys = (jwks as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) return 'must be an object with a "keys" array';
  if (keys.length === 0) return 'must hold at least one key';
  if (keys.length > MAX_CLIENT_KEYS) return `must hold at most ${MAX_CLIENT_KEYS} keys`;
  for (const [i, key] of keys.entries()) {
    const problem = keyProblem(key);
    if (problem) return `keys[${i}] ${problem}`;
  }
  return undefined;
}

function keyProblem(key: unknown): string | undefined {
  if (typeof key !== 'object' || key === null || Array.isArray(key)) return 'must be a JWK object';
  const jwk = key as Record<string, unknown>;
  if ('d' in jwk || 'p' in jwk || 'k' in jwk) return 'must be a public key (it has private members)';
  if (jwk.kty === 'EC') {
    if (typeof jwk.crv !== 'string' || !EC_CURVES.has(jwk.crv)) return 'must be on curve P-256 or P-384';
  } else if (jwk.kty === 'OKP') {
    if (jwk.crv !== 'Ed25519') return 'must be an Ed25519 key (crv "Ed25519")';
  } else if (jwk.kty !== 'RSA') {
    return 'must have kty EC, OKP or RSA';
  }
  let imported;
  try {
    imported = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
  } catch {
    return 'is not a valid public key of its type (node:crypto cannot import it)';
  }
  if (jwk.kty === 'RSA') {
    const bits = imported.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < RSA_BITS.min || bits > RSA_BITS.max) return `must have a modulus of ${RSA_BITS.min} to ${RSA_BITS.max} bits (it has ${bits})`;
  }
  // Members that would make oidc-provider never pick the key to verify an assertion (its keystore's selectForVerify),
  // or jose refuse to import it: the client would register and then never authenticate.
  if (jwk.use !== undefined && jwk.use !== 'sig') return 'must have use "sig" if it has use (private_key_jwt verifies signatures with it)';
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.length === 1 && jwk.key_ops[0] === 'verify')) {
    return 'must have key_ops ["verify"] if it has key_ops';
  }
  const algs = algsFor(jwk);
  if (jwk.alg !== undefined && !algs.includes(jwk.alg as string)) return `must have alg ${algs.join(' or ')} for its key type if it has alg (got ${JSON.stringify(jwk.alg)})`;
  return undefined;
}
