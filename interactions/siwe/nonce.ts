import { randomBytes } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** Bytes at or above this are discarded so every character is equally likely (248 = 4 × 62). */
const UNBIASED_LIMIT = 256 - (256 % ALPHABET.length);

/** Characters in a nonce: 24 × log2(62) ≈ 142 bits of randomness (EIP-4361 asks for at least 8 alphanumerics). */
export const NONCE_LENGTH = 24;

/** A fresh EIP-4361 nonce: alphanumeric (`nonce = 8*( ALPHA / DIGIT )`), uniformly random by rejection sampling. */
export function generateNonce(): string {
  let nonce = '';
  while (nonce.length < NONCE_LENGTH) {
    for (const byte of randomBytes(NONCE_LENGTH * 2)) {
      if (byte >= UNBIASED_LIMIT) continue;
      nonce += ALPHABET.charAt(byte % ALPHABET.length);
      if (nonce.length === NONCE_LENGTH) break;
    }
  }
  return nonce;
}
