import { randomBytes } from 'node:crypto';

import type { Storage } from '../../adapters/types.js';
import { Keyring } from '../../keys/keyring.js';
import { rotateKeys } from '../../keys/rotation.js';
import { FACTORIES } from '../support/storages.js';

const policy = { retireGraceSeconds: 3600 };

// The key watcher refreshes the keyring every 10 s by default. The published key set is handed out by identity
// (`publicJwks()`): JWT verification builds its key set from it and keeps verified tokens per set
// (server/structured-tokens.ts). A refresh that finds storage unchanged must keep that object; a change must replace it.
describe.each(FACTORIES)('keyring refresh: $name', (factory) => {
  const opened: Storage[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((s) => s.close()));
  });

  test('unchanged storage keeps the published key set object; a rotation replaces it at once', async () => {
    const storage = factory.create('keyring-refresh');
    opened.push(storage);
    await storage.init();
    const kek = randomBytes(32);
    const ring = await Keyring.load(storage.keys, kek, 'ES256', policy);
    const first = ring.publicJwks();
    expect(first.keys).toHaveLength(1);

    for (let i = 0; i < 3; i += 1) {
      await ring.refresh();
      expect(ring.publicJwks()).toBe(first);
    }

    // Another instance (or an operator) rotates: the new key is published now and activates later.
    const rotated = await rotateKeys(storage.keys, kek, policy, { alg: 'ES256', publishDelaySeconds: 3600, reason: 'test' });
    expect(rotated.status).toBe('scheduled');
    await ring.refresh();
    const second = ring.publicJwks();
    expect(second).not.toBe(first);
    expect(second.keys.map((k) => k.kid).sort()).toEqual([first.keys[0]!.kid, rotated.kid].sort());
    expect(ring.active.kid).toBe(first.keys[0]!.kid);

    await ring.refresh();
    expect(ring.publicJwks()).toBe(second);
  });
});
