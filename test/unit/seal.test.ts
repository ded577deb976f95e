import { randomBytes } from 'node:crypto';

import { KeyMaterialError } from '../../keys/errors.js';
import { decodeKek } from '../../keys/kek.js';
import { kekId, seal, unseal } from '../../keys/seal.js';

describe('sealing private keys (AES-256-GCM under the KEK)', () => {
  const kek = randomBytes(32);

  test('round-trips, with a fresh IV each time and no plaintext in the sealed form', () => {
    const a = seal(kek, '{"d":"secret-scalar"}', 'kid-1');
    const b = seal(kek, '{"d":"secret-scalar"}', 'kid-1');
    expect(a.iv).not.toBe(b.iv);
    expect(JSON.stringify(a)).not.toContain('secret-scalar');
    expect(a.kekId).toBe(kekId(kek));
    expect(unseal(kek, a, 'kid-1')).toBe('{"d":"secret-scalar"}');
  });

  test('another KEK is named as such before any decryption', () => {
    const sealed = seal(kek, 'x', 'kid-1');
    expect(() => unseal(randomBytes(32), sealed, 'kid-1')).toThrow(/sealed under another key-encryption key/);
  });

  test('a tampered ciphertext, tag, or a different key id (AAD) fails authentication', () => {
    const sealed = seal(kek, 'private key material', 'kid-1');
    const flip = (s: string) => Buffer.from(Buffer.from(s, 'base64url').map((b, i) => (i === 0 ? b ^ 1 : b))).toString('base64url');
    expect(() => unseal(kek, { ...sealed, ciphertext: flip(sealed.ciphertext) }, 'kid-1')).toThrow(KeyMaterialError);
    expect(() => unseal(kek, { ...sealed, tag: flip(sealed.tag) }, 'kid-1')).toThrow(KeyMaterialError);
    expect(() => unseal(kek, sealed, 'kid-2')).toThrow(/failed authenticated decryption/);
  });
});

describe('decodeKek', () => {
  test('accepts 32 bytes of base64 (with a trailing newline, as files have)', () => {
    const raw = randomBytes(32);
    expect(decodeKek(`${raw.toString('base64')}\n`, 'AGENTAUTH_KEK').equals(raw)).toBe(true);
  });

  test.each([['too short', randomBytes(16).toString('base64')], ['too long', randomBytes(48).toString('base64')], ['not base64', '!'.repeat(44)], ['empty', '']])(
    'refuses %s and names the setting',
    (_label, value) => {
      expect(() => decodeKek(value, 'AGENTAUTH_KEK')).toThrow(/^AGENTAUTH_KEK must be 32 bytes encoded as base64/);
    },
  );
});
