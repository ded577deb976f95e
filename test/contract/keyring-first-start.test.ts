import { randomBytes } from 'node:crypto';

import type { KeyStore, Storage } from '../../adapters/types.js';
import { Keyring, newStoredKey } from '../../keys/keyring.js';
import { FACTORIES } from '../support/storages.js';

const policy = { retireGraceSeconds: 3600 };

// Workers of `agentauth start --workers N` boot side by side on empty storage: each finds no key and tries to store
// the first one. Exactly one key may be stored, and every instance must start with it active.
describe.each(FACTORIES)('first start on empty storage, several instances at once: $name', (factory) => {
  const opened: Storage[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((s) => s.close()));
  });

  async function fresh(): Promise<Storage> {
    const storage = factory.create('first-key');
    opened.push(storage);
    await storage.init();
    return storage;
  }

  test('the instance that lost the insert still starts with the winner\'s key active (forced interleaving)', async () => {
    const storage = await fresh();
    const kek = randomBytes(32);
    // The winner has stored the key but not yet recorded its activation when the loser looks.
    const winner = await newStoredKey(kek, 'ES256', 1);
    expect(await storage.keys.insert(winner)).toBe(true);
    let firstList = true;
    const real = storage.keys;
    const racing: KeyStore = {
      list: async () => {
        if (firstList) {
          firstList = false;
          return []; // what the loser saw just before the winner's insert landed
        }
        return real.list();
      },
      insert: (key) => real.insert(key),
      transitions: () => real.transitions(),
      addTransition: (t) => real.addTransition(t),
      addKeyMac: (kid, mac) => real.addKeyMac(kid, mac),
      addTransitionMac: (kid, type, mac) => real.addTransitionMac(kid, type, mac),
      replaceKey: (key, expectedMac) => real.replaceKey(key, expectedMac),
      replaceTransitionMac: (kid, type, expectedMac, mac) => real.replaceTransitionMac(kid, type, expectedMac, mac),
    };
    const generated: string[] = [];
    const ring = await Keyring.load(racing, kek, 'ES256', policy, { generated: (kid) => generated.push(kid) });
    expect(generated).toEqual([]);
    expect(ring.active.kid).toBe(winner.kid);
    expect((await storage.keys.list()).map((k) => k.kid)).toEqual([winner.kid]);
    // The winner's own activation, arriving after, is the same fact and is not recorded twice.
    expect(await storage.keys.addTransition({ kid: winner.kid, type: 'activate', at: winner.createdAt, recordedAt: winner.createdAt, reason: 'first key' })).toBe(false);
  });

  test('an instance that finds the first key stored but not yet activated (or its writer dead) activates it and starts', async () => {
    const storage = await fresh();
    const kek = randomBytes(32);
    const orphan = await newStoredKey(kek, 'ES256', 1);
    expect(await storage.keys.insert(orphan)).toBe(true); // and no activation: its writer is slow, or gone
    const generated: string[] = [];
    const ring = await Keyring.load(storage.keys, kek, 'ES256', policy, { generated: (kid) => generated.push(kid) });
    expect(generated).toEqual([]);
    expect(ring.active.kid).toBe(orphan.kid);
    expect((await storage.keys.transitions()).filter((t) => t.kid === orphan.kid).map((t) => t.type)).toEqual(['activate']);
  });

  test('a keyring that is not a lone first key is never activated on its behalf', async () => {
    const storage = await fresh();
    const kek = randomBytes(32);
    // Two keys and no transitions (not something agentauth writes): refuse rather than guess which one signs.
    expect(await storage.keys.insert(await newStoredKey(kek, 'ES256', 1))).toBe(true);
    expect(await storage.keys.insert(await newStoredKey(kek, 'ES256', 2))).toBe(true);
    const ring = await Keyring.load(storage.keys, kek, 'ES256', policy);
    expect(() => ring.active).toThrow(/no active signing key/);
    expect(await storage.keys.transitions()).toEqual([]);
  });

  test('four instances loading at once, five times over: one key stored, generated once, active on all four', async () => {
    for (let round = 0; round < 5; round += 1) {
      const storage = await fresh();
      const kek = randomBytes(32);
      const generated: string[] = [];
      const rings = await Promise.all(
        Array.from({ length: 4 }, () => Keyring.load(storage.keys, kek, 'ES256', policy, { generated: (kid) => generated.push(kid) })),
      );
      const stored = await storage.keys.list();
      expect(stored).toHaveLength(1);
      expect(generated).toEqual([stored[0]!.kid]);
      for (const ring of rings) expect(ring.active.kid).toBe(stored[0]!.kid);
    }
  });
});
