import { createHmac, randomBytes } from 'node:crypto';

import { ClientSecretHasher } from '../../server/client-secrets.js';
import { deriveKey, kekId } from '../../keys/seal.js';

/** A hash as agentauth wrote them before hashes named their KEK: `hmac-sha256:<hash>`. */
const untagged = (kek: Buffer, secret: string) => `hmac-sha256:${createHmac('sha256', deriveKey(kek, 'client-secrets')).update(secret).digest('base64url')}`;

describe('client secret hashes (server/client-secrets.ts)', () => {
  const old = randomBytes(32);
  const current = randomBytes(32);
  const secret = 'a-client-secret-of-high-entropy-0123456789';

  test('a hash names the KEK its pepper came from, and matches only its own secret', () => {
    const hasher = new ClientSecretHasher(current);
    const stored = hasher.hash(secret);
    expect(stored).toMatch(new RegExp(`^hmac-sha256:${kekId(current)}\\.[A-Za-z0-9_-]{43}$`));
    expect(hasher.match(secret, stored)).toBe('current');
    expect(hasher.match(`${secret}x`, stored)).toBeUndefined();
    expect(hasher.isCurrent(stored)).toBe(true);
    expect(hasher.rotating).toBe(false);
  });

  test('a hash written before hashes were tagged still matches under its KEK', () => {
    const hasher = new ClientSecretHasher(current);
    expect(hasher.match(secret, untagged(current, secret))).toBe('current');
    expect(hasher.isCurrent(untagged(current, secret))).toBe(false); // not known to be: it may be the fallback's
    expect(hasher.match(secret, untagged(old, secret))).toBeUndefined();
  });

  test('during a rotation, hashes under the fallback match (tagged or not) and say so; without the fallback they do not', () => {
    const rotating = new ClientSecretHasher(current, old);
    const underOld = new ClientSecretHasher(old).hash(secret);
    expect(rotating.rotating).toBe(true);
    expect(rotating.match(secret, underOld)).toBe('fallback');
    expect(rotating.match(secret, untagged(old, secret))).toBe('fallback');
    expect(rotating.match(secret, rotating.hash(secret))).toBe('current');
    expect(rotating.match(`${secret}x`, underOld)).toBeUndefined();
    expect(rotating.isCurrent(underOld)).toBe(false);
    expect(new ClientSecretHasher(current).match(secret, underOld)).toBeUndefined();
  });

  test('a hash tagged with a KEK this server does not hold, or not a hash at all, matches nothing', () => {
    const hasher = new ClientSecretHasher(current, old);
    const foreign = new ClientSecretHasher(randomBytes(32)).hash(secret);
    expect(hasher.match(secret, foreign)).toBeUndefined();
    // The hash of another KEK's pepper, relabelled with the current KEK's id, is refused by its value.
    expect(hasher.match(secret, foreign.replace(/^hmac-sha256:[^.]+\./, `hmac-sha256:${kekId(current)}.`))).toBeUndefined();
    for (const stored of [secret, undefined, 42, '', 'hmac-sha256:', `hmac-sha256:${kekId(current)}.`]) expect(hasher.matches(secret, stored)).toBe(false);
    expect(hasher.matches(undefined, hasher.hash(secret))).toBe(false);
  });
});
