import { Signature, Wallet, getAddress, hashMessage } from 'ethers';

import { checksumAddress, eip191Digest, toHex } from '../../interactions/siwe/eth.js';
import { NonCanonicalV, recoverSigner, recoveryPath } from '../../interactions/siwe/recover.js';

const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const hex = (n: bigint) => n.toString(16).padStart(64, '0');

/** What a recovery answers: the address, or that it refused. */
async function outcome(message: string, signature: string, path: 'native' | 'ethers'): Promise<string> {
  try {
    return await recoverSigner(message, signature, path);
  } catch {
    return 'refused';
  }
}

describe('EIP-191 signer recovery: the native libsecp256k1 path gives the same answers as ethers', () => {
  test('the native binding loads on this machine (the prebuilt linux-x64 binary ships in the package)', () => {
    expect(recoveryPath()).toBe('native');
  });

  test('200 random keys and messages: same address on both paths, and it is the signer', async () => {
    for (let i = 0; i < 200; i += 1) {
      const wallet = new Wallet(Wallet.createRandom().privateKey);
      const message = `agentauth test ${i}\nnonce ${Math.random().toString(36)}`;
      const signature = await wallet.signMessage(message);
      expect(await outcome(message, signature, 'native')).toBe(wallet.address);
      expect(await outcome(message, signature, 'ethers')).toBe(wallet.address);
    }
  });

  test('edge cases answer alike: v as 0/1, other v, high s, zero or out-of-range r and s, another message', async () => {
    const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
    const message = 'example.com wants you to sign in';
    const sig = Signature.from(await wallet.signMessage(message));
    const r = sig.r.slice(2);
    const s = BigInt(sig.s);
    const v = sig.v; // 27 or 28
    const variants = [
      `0x${r}${hex(s)}${(v - 27).toString(16).padStart(2, '0')}`, // v as 0/1
      `0x${r}${hex(s)}1d`, // v = 29
      `0x${r}${hex(s)}00`.replace(/..$/, v === 27 ? '1c' : '1b'), // the other parity: another key
      `0x${r}${hex(N - s)}${(v === 27 ? 28 : 27).toString(16)}`, // high-s twin (malleable)
      `0x${'0'.repeat(64)}${hex(s)}${v.toString(16)}`, // r = 0
      `0x${r}${'0'.repeat(64)}${v.toString(16)}`, // s = 0
      `0x${hex(N)}${hex(s)}${v.toString(16)}`, // r = n
      `0x${r}${hex(N + 1n).slice(-64)}${v.toString(16)}`, // s beyond n (wraps)
    ];
    for (const variant of variants) {
      expect(await outcome(message, variant, 'native')).toBe(await outcome(message, variant, 'ethers'));
    }
    expect(await outcome('another message', sig.serialized, 'native')).toBe(await outcome('another message', sig.serialized, 'ethers'));
    expect(await outcome('another message', sig.serialized, 'native')).not.toBe(wallet.address);
    expect(await outcome(message, variants[3]!, 'native')).toBe('refused');
  });

  test('one signature has two spellings (v 27/28 and 0/1), not the EIP-155 values ethers would also take', async () => {
    const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
    const message = 'example.com wants you to sign in';
    const sig = Signature.from(await wallet.signMessage(message));
    const body = `0x${sig.r.slice(2)}${sig.s.slice(2)}`;
    const parity = sig.v - 27;
    const withV = (v: number) => `${body}${v.toString(16).padStart(2, '0')}`;
    // ethers' own verifyMessage takes these (EIP-155: 35 + 2 × chain id + parity), as the first check shows.
    const { verifyMessage } = await import('ethers');
    expect(verifyMessage(message, withV(37 + parity))).toBe(wallet.address);
    for (const path of ['native', 'ethers'] as const) {
      expect(await outcome(message, withV(27 + parity), path)).toBe(wallet.address);
      expect(await outcome(message, withV(parity), path)).toBe(wallet.address);
      for (const v of [35 + parity, 37 + parity, 2, 29, 31, 32, 255]) {
        await expect(recoverSigner(message, withV(v), path)).rejects.toThrow(new NonCanonicalV(v).message);
      }
    }
  });
});

describe('the Ethereum primitives of the hot path (interactions/siwe/eth.ts) answer as ethers does', () => {
  test('EIP-191 digest equals ethers.hashMessage, for ASCII, multi-byte and empty messages', () => {
    const messages = ['', 'a', 'example.com wants you to sign in with your Ethereum account:\n0xabc', 'é ü 🔑 \u2028 中文', 'x'.repeat(5000)];
    for (let i = 0; i < 50; i += 1) messages.push(Math.random().toString(36).repeat(i));
    for (const m of messages) expect(toHex(eip191Digest(m))).toBe(hashMessage(m));
  });

  test('EIP-55 checksum equals ethers.getAddress for 200 random addresses given in any case', () => {
    for (let i = 0; i < 200; i += 1) {
      const address = Wallet.createRandom().address;
      expect(checksumAddress(address.toLowerCase())).toBe(getAddress(address.toLowerCase()));
      expect(checksumAddress(address)).toBe(address);
      expect(checksumAddress(`0x${address.slice(2).toUpperCase()}`)).toBe(address);
    }
  });

  test('anything but 0x + 40 hex digits is refused', () => {
    for (const bad of ['', '0x', `0x${'a'.repeat(39)}`, `0x${'a'.repeat(41)}`, `${'a'.repeat(42)}`, `0x${'g'.repeat(40)}`]) {
      expect(() => checksumAddress(bad)).toThrow(TypeError);
    }
  });
});
