import { randomBytes } from 'node:crypto';

import type { KeyStore, Storage } from '../../adapters/types.js';
import { Keyring } from '../../keys/keyring.js';
import { KeyMaterialError } from '../../keys/errors.js';
import { readVerifiedKeys } from '../../keys/integrity.js';
import { deriveKeyView } from '../../keys/lifecycle.js';
import { retireKey, rotateKeys, withdrawKey } from '../../keys/rotation.js';
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

  test('a withdrawn key leaves the published set at the next refresh, once; the signing key cannot be withdrawn', async () => {
    const storage = factory.create('keyring-refresh');
    opened.push(storage);
    await storage.init();
    const kek = randomBytes(32);
    const ring = await Keyring.load(storage.keys, kek, 'ES256', policy);
    const stolen = ring.active.kid;
    await expect(withdrawKey(storage.keys, kek, stolen, policy)).rejects.toThrow(KeyMaterialError);
    const rotated = await rotateKeys(storage.keys, kek, policy, { alg: 'ES256', publishDelaySeconds: 3600, immediately: true });
    await ring.refresh();
    expect(ring.publicJwks().keys.map((k) => k.kid).sort()).toEqual([stolen, rotated.kid].sort());
    // Two operators at once: one transition is stored, the other finds it there.
    const results = await Promise.all([withdrawKey(storage.keys, kek, stolen, policy, 'a'), withdrawKey(storage.keys, kek, stolen, policy, 'b')]);
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await withdrawKey(storage.keys, kek, stolen, policy)).toBe(false);
    await ring.refresh();
    expect(ring.publicJwks().keys.map((k) => k.kid)).toEqual([rotated.kid]);
    expect(ring.active.kid).toBe(rotated.kid);
    expect(ring.archive().find((k) => k.kid === stolen)).toMatchObject({ state: 'withdrawn', withdrawn_at: expect.any(String) });
    // Another instance starting on this store reads the withdraw transition (MAC and all) the same way.
    const other = await Keyring.load(storage.keys, kek, 'ES256', policy);
    expect(other.keys.map((k) => k.kid)).toEqual([rotated.kid]);
  });

  /** A store of this kind holding one signing key (as a first start leaves it), and its KEK. */
  async function storeWithKey(): Promise<{ storage: Storage; kek: Buffer }> {
    const storage = factory.create('keyring-refresh');
    opened.push(storage);
    await storage.init();
    const kek = randomBytes(32);
    await Keyring.load(storage.keys, kek, 'ES256', policy);
    return { storage, kek };
  }

  test('a rotation that finds a key another rotation stored a moment ago, still without its activation, stores none; a key left so by a crash stops counting after a minute', async () => {
    const { storage, kek } = await storeWithKey();
    // A rotation caught between its two writes: the key is stored, its activation not yet.
    const between: KeyStore = {
      ...storage.keys,
      list: () => storage.keys.list(),
      transitions: () => storage.keys.transitions(),
      insert: (k) => storage.keys.insert(k),
      addTransition: async () => {
        throw new Error('the process stopped here');
      },
      addKeyMac: (kid, mac) => storage.keys.addKeyMac(kid, mac),
      addTransitionMac: (kid, type, mac) => storage.keys.addTransitionMac(kid, type, mac),
      replaceKey: (key, expectedMac) => storage.keys.replaceKey(key, expectedMac),
      replaceTransitionMac: (kid, type, expectedMac, mac) => storage.keys.replaceTransitionMac(kid, type, expectedMac, mac),
    };
    const before = (await storage.keys.list()).map((k) => k.kid);
    await expect(rotateKeys(between, kek, policy, { alg: 'ES256', publishDelaySeconds: 3600 })).rejects.toThrow('the process stopped here');
    const stored = (await storage.keys.list()).length;
    await expect(rotateKeys(storage.keys, kek, policy, { alg: 'ES256', publishDelaySeconds: 3600 })).rejects.toThrow(/^another rotation is storing key \S+ right now/);
    expect((await storage.keys.list()).length).toBe(stored);
    // A minute on, it is a key a crash left behind, and rotating goes ahead: the abandoned key (never activated) is
    // retired by it, so that it is not published as next for ever.
    const abandoned = (await storage.keys.list()).map((k) => k.kid).filter((kid) => !before.includes(kid));
    expect(abandoned).toHaveLength(1);
    const later = new Date(Date.now() + 61_000);
    const rotated = await rotateKeys(storage.keys, kek, policy, { alg: 'ES256', publishDelaySeconds: 3600, now: later });
    expect(rotated).toMatchObject({ status: 'scheduled', abandoned });
    const verified = await readVerifiedKeys(storage.keys, kek);
    const view = deriveKeyView(verified.keys, verified.transitions, new Date(later.getTime() + 1000), policy);
    expect(view.timelines.find((t) => t.kid === abandoned[0])).toMatchObject({ state: 'retired' });
    expect(view.timelines.find((t) => t.kid === rotated.kid)).toMatchObject({ state: 'next', activatesAt: new Date(later.getTime() + 3_600_000) });
    expect((await storage.keys.transitions()).find((t) => t.kid === abandoned[0] && t.type === 'retire')).toMatchObject({ reason: 'never activated: left without an activation by an interrupted rotation' });
    // The next rotation finds the one just scheduled and changes nothing.
    await expect(rotateKeys(storage.keys, kek, policy, { alg: 'ES256', publishDelaySeconds: 3600, now: new Date(later.getTime() + 1000) })).resolves.toMatchObject({ status: 'already-scheduled' });
  });

  test('retire and withdraw refuse a scheduled key within the activation margin (instances may sign with it already), and change nothing', async () => {
    const { storage, kek } = await storeWithKey();
    const rotated = await rotateKeys(storage.keys, kek, policy, { alg: 'ES256', publishDelaySeconds: 5 });
    const near = { ...policy, activationMarginSeconds: 10 };
    const transitions = (await storage.keys.transitions()).length;
    await expect(retireKey(storage.keys, kek, rotated.kid, near)).rejects.toThrow(new RegExp(`^${rotated.kid} activates at \\S+, within 10 s .*wait until it signs, then run \`agentauth keys rotate\``));
    await expect(withdrawKey(storage.keys, kek, rotated.kid, near)).rejects.toThrow(/some instances may already sign with it; run `agentauth keys rotate --immediately` first/);
    expect((await storage.keys.transitions()).length).toBe(transitions);
    // Further from its activation than the margin, retiring it cancels the rotation as before.
    await retireKey(storage.keys, kek, rotated.kid, { ...policy, activationMarginSeconds: 2 });
    const ring = await Keyring.load(storage.keys, kek, 'ES256', policy);
    expect(ring.archive().find((k) => k.kid === rotated.kid)).toMatchObject({ state: 'retired' });
  });

  test('a read with no signing key (an empty store, keys without transitions: a store read between two writes) is refused; the keys in use stay', async () => {
    const storage = factory.create('keyring-refresh');
    opened.push(storage);
    await storage.init();
    const kek = randomBytes(32);
    let view: 'stored' | 'empty' | 'no transitions' = 'stored';
    const keys: KeyStore = {
      ...storage.keys,
      list: async () => (view === 'empty' ? [] : storage.keys.list()),
      transitions: async () => (view === 'stored' ? storage.keys.transitions() : []),
      insert: (k) => storage.keys.insert(k),
      addTransition: (t) => storage.keys.addTransition(t),
      addKeyMac: (kid, mac) => storage.keys.addKeyMac(kid, mac),
      addTransitionMac: (kid, type, mac) => storage.keys.addTransitionMac(kid, type, mac),
      replaceKey: (key, expectedMac) => storage.keys.replaceKey(key, expectedMac),
      replaceTransitionMac: (kid, type, expectedMac, mac) => storage.keys.replaceTransitionMac(kid, type, expectedMac, mac),
    };
    const ring = await Keyring.load(keys, kek, 'ES256', policy);
    const published = ring.publicJwks();
    const signer = ring.active.kid;
    for (const partial of ['empty', 'no transitions'] as const) {
      view = partial;
      await expect(ring.refresh()).rejects.toThrow(/the key store read holds no active signing key/);
      expect(ring.active.kid).toBe(signer);
      expect(ring.publicJwks()).toBe(published);
    }
    view = 'stored';
    await ring.refresh();
    expect(ring.active.kid).toBe(signer);
  });
});
