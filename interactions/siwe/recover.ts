import { createRequire } from 'node:module';

import { addressOfPublicKey, eip191Digest } from './eth.js';

/** libsecp256k1's recovery through the `secp256k1` package's prebuilt native binding (no JavaScript fallback). */
interface NativeSecp256k1 {
  ecdsaRecover(signature: Uint8Array, recid: number, msg32: Uint8Array, compressed: boolean): Uint8Array;
}

let native: NativeSecp256k1 | null | undefined;

function loadNative(): NativeSecp256k1 | null {
  if (native === undefined) {
    try {
      // The binding itself, not the package entry, which silently falls back to a slow pure-JS implementation.
      native = createRequire(import.meta.url)('secp256k1/bindings.js') as NativeSecp256k1;
    } catch {
      native = null;
    }
  }
  return native;
}

/** secp256k1 group order / 2: signatures with a larger s are malleable and refused (as ethers refuses them). */
const HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;
const SIGNATURE_65 = /^0x[0-9a-fA-F]{130}$/;

export type RecoveryPath = 'native' | 'ethers';

/** Which implementation `recoverSigner` uses on this machine. */
export function recoveryPath(): RecoveryPath {
  return loadNative() ? 'native' : 'ethers';
}

/**
 * Whether a 65-byte signature with an account key's `v` (27, 28, 0 or 1) has its `s` in the upper half of the curve
 * order (n/2 < s < n): the malleable twin of a valid signature, which EIP-2's low-s rule (and ethers, and this server)
 * refuses. Some signers (cloud KMS, HSMs) produce it; the signer's own low-s form is s' = n - s with v flipped.
 */
export function hasHighS(signature: string): boolean {
  if (!SIGNATURE_65.test(signature) || recoveryId(Number.parseInt(signature.slice(130), 16)) === -1) return false;
  const s = BigInt(`0x${signature.slice(66, 130)}`);
  return s > HALF_N && s < 2n * HALF_N + 1n;
}

/**
 * The recovery id a personal_sign `v` stands for: 27/28 as wallets send it, 0/1 as some hardware wallets do; -1 for
 * anything else. ethers would also take EIP-155 transaction values (35 + 2 × chain id + parity, any chain id), so one
 * signature would have unboundedly many spellings; a message signature has no chain id in its `v`, and a 65-byte
 * signature with another `v` is a contract wallet's (Safe encodes its signature kinds in `v`, 0, 1 and above 30).
 */
export function recoveryId(v: number): number {
  return v === 27 || v === 28 ? v - 27 : v === 0 || v === 1 ? v : -1;
}

/** A 65-byte signature whose `v` no account key's personal_sign produces. */
export class NonCanonicalV extends Error {
  constructor(readonly v: number) {
    super(`v is ${v}; an account key's signature ends in v = 27 or 28 (0 or 1 also accepted)`);
    this.name = 'NonCanonicalV';
  }
}

/**
 * The address whose key made an EIP-191 personal_sign `signature` (65 bytes r‖s‖v) over `message`. libsecp256k1
 * (native, ≈ 0.1 ms) where its prebuilt binding loads, else ethers' pure-JS recovery (≈ 2 ms, ethers loaded on first
 * use); both give the same answers on the same input: the native path is only taken for low s, and anything else is
 * left to ethers, which throws on what it refuses. A `v` other than 27, 28, 0 or 1 is refused on both paths
 * (NonCanonicalV). `path` forces one implementation (tests).
 */
export async function recoverSigner(message: string, signature: string, path: RecoveryPath = recoveryPath()): Promise<string> {
  const v = SIGNATURE_65.test(signature) ? Number.parseInt(signature.slice(130), 16) : undefined;
  const recid = v === undefined ? undefined : recoveryId(v);
  if (v !== undefined && recid === -1) throw new NonCanonicalV(v);
  const lib = path === 'native' ? loadNative() : null;
  if (lib && recid !== undefined) {
    const sig = Buffer.from(signature.slice(2), 'hex');
    const s = BigInt(`0x${sig.subarray(32, 64).toString('hex')}`);
    if (s <= HALF_N && s > 0n) {
      let pub: Uint8Array | undefined;
      try {
        pub = lib.ecdsaRecover(sig.subarray(0, 64), recid, eip191Digest(message), false);
      } catch {
        pub = undefined; // r or s out of range: no key recovers; ethers says the same below
      }
      if (pub) return addressOfPublicKey(pub);
    }
  }
  const { verifyMessage } = await import('ethers');
  return verifyMessage(message, signature);
}
