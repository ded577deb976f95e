import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';

import type { SealedSecret } from '../adapters/types.js';
import { KeyMaterialError } from './errors.js';

export const KEK_BYTES = 32;

/** A sub-key derived from the key-encryption key for one purpose (HKDF-SHA256), so the KEK itself is used for nothing else. */
export function deriveKey(kek: Buffer, purpose: string, length = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), `agentauth/${purpose}`, length));
}

/** A public fingerprint of the KEK, stored beside sealed data to tell "wrong KEK" from "corrupted data". */
export function kekId(kek: Buffer): string {
  return createHash('sha256').update('agentauth/kek-id').update(kek).digest('base64url').slice(0, 16);
}

/** AES-256-GCM under a KEK-derived key; `aad` binds the ciphertext to its owner (the key id). */
export function seal(kek: Buffer, plaintext: string, aad: string): SealedSecret {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', deriveKey(kek, 'seal'), iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return {
    kekId: kekId(kek),
    iv: iv.toString('base64url'),
    ciphertext: ciphertext.toString('base64url'),
    tag: cipher.getAuthTag().toString('base64url'),
  };
}

/** Refuses, naming both fingerprints, a secret sealed under another KEK (before anything tries to open it). */
export function assertSealedUnder(kek: Buffer, sealed: SealedSecret, aad: string): void {
  if (sealed.kekId !== kekId(kek)) {
    throw new KeyMaterialError(
      `key ${aad} was sealed under another key-encryption key (kekId ${sealed.kekId}, configured ${kekId(kek)}); ` +
        'set AGENTAUTH_KEK or AGENTAUTH_KEK_FILE to the key it was created with (to rotate the KEK, set AGENTAUTH_KEK_FALLBACK to that key and AGENTAUTH_KEK to the new one)',
    );
  }
}

export function unseal(kek: Buffer, sealed: SealedSecret, aad: string): string {
  assertSealedUnder(kek, sealed, aad);
  try {
    const decipher = createDecipheriv('aes-256-gcm', deriveKey(kek, 'seal'), Buffer.from(sealed.iv, 'base64url'));
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(Buffer.from(sealed.tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, 'base64url')), decipher.final()]).toString('utf8');
  } catch (cause) {
    throw new KeyMaterialError(`key ${aad} failed authenticated decryption: the stored key was altered or the KEK is wrong`, { cause });
  }
}
