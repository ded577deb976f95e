/**
 * The three Ethereum primitives the wallet sign-in hot path needs, on @noble/hashes' keccak-256 (the hash the SIWE
 * parser already uses to check EIP-55): loading ethers for them would cost ≈ 15 MB of memory in every process.
 * ethers is still used, loaded on first use, for contract wallets (EIP-1271 over JSON-RPC) and as the fallback
 * signature recovery; unit tests hold these equal to ethers' hashMessage and getAddress.
 */
import { keccak_256 } from '@noble/hashes/sha3';

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

export function keccak256(data: Uint8Array): Uint8Array {
  return keccak_256(data);
}

/** EIP-191 (version 0x45, personal_sign) digest of a text message: what ethers' `hashMessage` computes, as bytes. */
export function eip191Digest(message: string): Uint8Array {
  const body = Buffer.from(message, 'utf8');
  const prefix = Buffer.from(`\x19Ethereum Signed Message:\n${body.length}`, 'utf8');
  return keccak_256(Buffer.concat([prefix, body]));
}

/**
 * The EIP-55 mixed-case form of a 20-byte hex address given in any case. Throws TypeError for anything that is not
 * `0x` + 40 hex digits. (It does not judge a given mixed-case checksum: the SIWE parser has already refused a wrong one.)
 */
export function checksumAddress(address: string): string {
  if (!ADDRESS.test(address)) throw new TypeError('not a 0x-prefixed 20-byte hex address');
  const lower = address.slice(2).toLowerCase();
  const hash = keccak_256(Buffer.from(lower, 'ascii'));
  let out = '0x';
  for (let i = 0; i < 40; i += 1) {
    const nibble = (hash[i >> 1]! >> (i % 2 === 0 ? 4 : 0)) & 0xf;
    out += nibble >= 8 ? lower[i]!.toUpperCase() : lower[i]!;
  }
  return out;
}

/** The address of an uncompressed secp256k1 public key (65 bytes, 0x04 ‖ x ‖ y), EIP-55 cased. */
export function addressOfPublicKey(publicKey: Uint8Array): string {
  const hash = keccak_256(publicKey.subarray(1));
  return checksumAddress(`0x${Buffer.from(hash.subarray(12)).toString('hex')}`);
}

export const toHex = (bytes: Uint8Array): string => `0x${Buffer.from(bytes).toString('hex')}`;
