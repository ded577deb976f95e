import { Signature, Wallet } from 'ethers';

import { recoverSigner, recoveryPath } from '../../interactions/siwe/recover.js';

const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const hex = (n: bigint) => n.toString(16).padStart(64, '0');

/** What a recovery answers: the address, or that it refused. */
function outcome(message: string, signature: string, path: 'native' | 'ethers'): string {
  try {
    return recoverSigner(message, signature, path);
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
      expect(outcome(message, signature, 'native')).toBe(wallet.address);
      expect(outcome(message, signature, 'ethers')).toBe(wallet.address);
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
      expect(outcome(message, variant, 'native')).toBe(outcome(message, variant, 'ethers'));
    }
    expect(outcome('another message', sig.serialized, 'native')).toBe(outcome('another message', sig.serialized, 'ethers'));
    expect(outcome('another message', sig.serialized, 'native')).not.toBe(wallet.address);
    expect(outcome(message, variants[3]!, 'native')).toBe('refused');
  });
});
