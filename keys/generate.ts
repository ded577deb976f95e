import { generateKeyPairSync } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import type { JWK } from 'jose';

export type SigningAlg = 'ES256' | 'EdDSA';
export const SIGNING_ALGS: readonly SigningAlg[] = ['ES256', 'EdDSA'];

export interface KeyPairJwk {
  kid: string;
  alg: SigningAlg;
  publicJwk: JWK;
  privateJwk: JWK;
}

/** A fresh signing key pair; `kid` is its RFC 7638 thumbprint. */
export async function generateSigningKey(alg: SigningAlg): Promise<KeyPairJwk> {
  const { privateKey } =
    alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const full = privateKey.export({ format: 'jwk' }) as JWK;
  const { d: _d, ...pub } = full;
  const kid = await calculateJwkThumbprint(pub, 'sha256');
  const meta = { kid, alg, use: 'sig' };
  return { kid, alg, publicJwk: { ...pub, ...meta }, privateJwk: { ...full, ...meta } };
}
