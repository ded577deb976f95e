import { Wallet } from 'ethers';

import { MAX_SUB_LENGTH, parseSubject } from '../../server/subject-revocation.js';

/** `subjects revoke` and the admin API name a person by the subject their tokens carry (server/subject-revocation.ts). */
describe('parseSubject', () => {
  const address = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d').address;
  const digits = address.slice(2);

  test('a wallet subject is matched in its EIP-55 form, whether given in that form, in lower case or in upper case, on any chain', () => {
    for (const chain of ['1', '137', '11155111']) {
      const stored = `did:pkh:eip155:${chain}:${address}`;
      expect(parseSubject(stored)).toEqual({ sub: stored });
      expect(parseSubject(`did:pkh:eip155:${chain}:0x${digits.toLowerCase()}`)).toEqual({ sub: stored });
      expect(parseSubject(`did:pkh:eip155:${chain}:0x${digits.toUpperCase()}`)).toEqual({ sub: stored });
    }
  });

  test('a wallet address whose mixed case is not its checksum is refused, naming the checksummed form', () => {
    const i = [...digits].findIndex((ch) => /[a-f]/i.test(ch));
    const ch = digits[i]!;
    const flipped = `0x${digits.slice(0, i)}${ch === ch.toLowerCase() ? ch.toUpperCase() : ch.toLowerCase()}${digits.slice(i + 1)}`;
    expect(parseSubject(`did:pkh:eip155:1:${flipped}`)).toEqual({ problem: `the address ${flipped} has a mixed case that is not its EIP-55 checksum (${address}): check it for a typo, or give it in lower case` });
  });

  test('any other subject is matched exactly as given (a client id, another DID method, a near-miss of a wallet subject)', () => {
    for (const sub of ['svc-agent', 'did:pkh:eip155:1:0xABC', `did:pkh:solana:1:0x${digits.toLowerCase()}`, `DID:pkh:eip155:1:0x${digits.toLowerCase()}`, `did:pkh:eip155:1:0x${digits.toLowerCase()} `]) {
      expect(parseSubject(sub)).toEqual({ sub });
    }
  });

  test('an empty, oversized or control-character subject is refused', () => {
    for (const sub of ['', 'a'.repeat(MAX_SUB_LENGTH + 1), 'a\nb', 'a\u007fb', 'a\u0085b', 'a\u2028b', 'a\u2029b']) {
      expect(parseSubject(sub)).toEqual({ problem: expect.stringContaining('without control characters') });
    }
    expect(parseSubject('a'.repeat(MAX_SUB_LENGTH))).toEqual({ sub: 'a'.repeat(MAX_SUB_LENGTH) });
  });
});
