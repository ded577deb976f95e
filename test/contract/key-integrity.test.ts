import { randomBytes } from 'node:crypto';

import { EmbeddedStorage } from '../../adapters/memory.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { Storage } from '../../adapters/types.js';
import { KeyIntegrityError } from '../../keys/errors.js';
import { checkKeyPair, macKeyRecord, macTransition, readCheckedKeys } from '../../keys/integrity.js';
import { Keyring, newStoredKey } from '../../keys/keyring.js';
import type { KeyringEvents } from '../../keys/keyring.js';
import { keysUnderFallback, resealKeyStore } from '../../keys/kek-rotation.js';
import { retireKey, rotateKeys } from '../../keys/rotation.js';
import type { KeysConfig } from '../../server/config.js';
import { KeyWatcher } from '../../server/key-watcher.js';
import { attackerKey, injectedKey, rawFileKeys, rawMongoKeys, rawSqliteKeys } from '../support/raw-keys.js';
import type { RawKey, RawKeyStore, RawTransition } from '../support/raw-keys.js';
import { tempDir, uniqueDbName } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

const policy = { retireGraceSeconds: 3600 };
const HOUR = 3600_000;

interface Backend {
  name: 'embedded' | 'sqlite' | 'mongodb';
  open(): { storage: Storage; raw: RawKeyStore };
}

const BACKENDS: Backend[] = [
  {
    name: 'embedded',
    open() {
      const dataDir = tempDir('agentauth-keys-');
      return { storage: new EmbeddedStorage({ dataDir }), raw: rawFileKeys(dataDir) };
    },
  },
  {
    name: 'sqlite',
    open() {
      const storage = new SqliteStorage({ dataDir: tempDir('agentauth-keys-sqlite-') });
      return { storage, raw: rawSqliteKeys(() => storage.db) };
    },
  },
  {
    name: 'mongodb',
    open() {
      const storage = new MongoStorage({ uri: mongoUri(), dbName: uniqueDbName('keyint'), timeoutMs: 3000 });
      return { storage, raw: rawMongoKeys(storage.db) };
    },
  },
];

describe.each(BACKENDS)('key store integrity: $name', (backend) => {
  const opened: Storage[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((s) => s.close()));
  });

  /** A store with two genuine keys: the first retired (still published), the second active. */
  async function rotated() {
    const { storage, raw } = backend.open();
    opened.push(storage);
    await storage.init();
    const kek = randomBytes(32);
    const ring = await Keyring.load(storage.keys, kek, 'ES256', policy);
    const first = ring.active.kid;
    const second = (await rotateKeys(storage.keys, kek, policy, { alg: 'ES256', publishDelaySeconds: 0, immediately: true })).kid;
    await ring.refresh();
    expect(ring.active.kid).toBe(second);
    expect(ring.publicJwks().keys.map((k) => k.kid)).toEqual([second, first]);
    return { storage, raw, kek, ring, first, second };
  }

  /** Everything that trusts the key store refuses it, naming `name`, and a running keyring keeps its verified keys. */
  async function expectRefused(s: Awaited<ReturnType<typeof rotated>>, name: RegExp, foreignKid?: string) {
    const before = s.ring.publicJwks();
    await expect(Keyring.load(s.storage.keys, s.kek, 'ES256', policy)).rejects.toThrow(name);
    await expect(Keyring.load(s.storage.keys, s.kek, 'ES256', policy)).rejects.toBeInstanceOf(KeyIntegrityError);
    await expect(s.ring.refresh()).rejects.toThrow(name);
    expect(s.ring.publicJwks()).toBe(before);
    expect(s.ring.archive().map((k) => k.kid).sort()).toEqual([s.first, s.second].sort());
    await expect(readCheckedKeys(s.storage.keys, s.kek)).rejects.toThrow(name);
    await expect(rotateKeys(s.storage.keys, s.kek, policy, { alg: 'ES256', publishDelaySeconds: 0 })).rejects.toThrow(name);
    if (foreignKid) expect(s.ring.publicJwks().keys.map((k) => k.kid)).not.toContain(foreignKid);
  }

  test('control: the untouched store loads, with both keys checked', async () => {
    const s = await rotated();
    const again = await Keyring.load(s.storage.keys, s.kek, 'ES256', policy);
    expect(again.active.kid).toBe(s.second);
    expect((await readCheckedKeys(s.storage.keys, s.kek)).keys.map((k) => k.kid)).toEqual([s.first, s.second]);
  });

  test('an altered public key (the active key\'s record made to hold the attacker\'s public key) is refused', async () => {
    const s = await rotated();
    const attacker = await attackerKey();
    const keys = await s.raw.keys();
    const target = keys.find((k) => k.kid === s.second)!;
    target.publicJwk = { ...target.publicJwk, x: attacker.publicJwk.x!, y: attacker.publicJwk.y! };
    await s.raw.writeKeys(keys);
    await expectRefused(s, new RegExp(`stored key ${s.second} is refused: its integrity MAC does not verify`));
    // Even with its MAC stripped (so the upgrade at load looks at it), the key pair check refuses it.
    delete target.mac;
    await s.raw.writeKeys(keys);
    await expectRefused(s, new RegExp(`stored key ${s.second} is refused`));
    await expect(Keyring.load(s.storage.keys, s.kek, 'ES256', policy)).rejects.toThrow(new RegExp(`stored key ${s.second} is refused: its kid is not the thumbprint`));
    // Altered together with the kid (the thumbprint of the attacker's key): the sealed key is bound to the old kid.
    await s.raw.writeKeys(keys.map((k) => (k === target ? { ...k, kid: attacker.kid, publicJwk: attacker.publicJwk as Record<string, string> } : k)));
    await expectRefused(s, new RegExp(`stored key ${attacker.kid} is refused`), attacker.kid);
    await expect(Keyring.load(s.storage.keys, s.kek, 'ES256', policy)).rejects.toThrow(new RegExp(`stored key ${attacker.kid} is refused: key ${attacker.kid} failed authenticated decryption`));
  });

  test('an injected archived key (with transitions that archive it) is refused and never reaches the archive', async () => {
    const s = await rotated();
    const attacker = await attackerKey();
    const keys = await s.raw.keys();
    const long = new Date(Date.now() - 48 * HOUR);
    await s.raw.writeKeys([...keys, injectedKey(attacker, 3, keys[0]!.sealed, long)]);
    const transitions = await s.raw.transitions();
    await s.raw.writeTransitions([
      ...transitions,
      { kid: attacker.kid, type: 'activate', at: long.toISOString(), recordedAt: long.toISOString() },
      { kid: attacker.kid, type: 'retire', at: new Date(Date.now() - 24 * HOUR).toISOString(), recordedAt: long.toISOString() },
    ]);
    await expectRefused(s, new RegExp(`stored key ${attacker.kid} is refused`), attacker.kid);
    await expect(readCheckedKeys(s.storage.keys, s.kek)).rejects.toThrow(new RegExp(`stored key ${attacker.kid} is refused: it carries no integrity MAC`));
  });

  test('an injected transition, and an altered one, are refused', async () => {
    const s = await rotated();
    const transitions = await s.raw.transitions();
    // Retire the signer (a denial of service, or a step towards re-activating an old key).
    await s.raw.writeTransitions([...transitions, { kid: s.second, type: 'retire', at: new Date().toISOString(), recordedAt: new Date().toISOString() }]);
    await expectRefused(s, new RegExp(`key transition ${s.second}:retire is refused: it carries no integrity MAC`));

    // Move the newer key's activation into the future, which would bring the older key back as signer.
    const altered = transitions.map((t) => (t.kid === s.second ? { ...t, at: new Date(Date.now() + HOUR).toISOString() } : t));
    await s.raw.writeTransitions(altered);
    await expectRefused(s, new RegExp(`key transition ${s.second}:activate is refused: its integrity MAC does not verify`));
  });

  test('a genuine record copied into a second place is refused, however its copy names itself', async () => {
    const s = await rotated();
    const keys = await s.raw.keys();
    const active = keys.find((k) => k.kid === s.second)!;
    if (backend.name === 'embedded') {
      // The files hold whatever is written: the same record, MAC and all, twice.
      await s.raw.writeKeys([...keys, { ...active }]);
      await expectRefused(s, new RegExp(`key ${s.second} is stored twice`));
      await s.raw.writeKeys(keys);
      const transitions = await s.raw.transitions();
      await s.raw.writeTransitions([...transitions, { ...transitions.find((t) => t.kid === s.second)! }]);
      await expectRefused(s, new RegExp(`key transition ${s.second}:activate is stored twice`));
      return;
    }
    // SQLite and MongoDB keep kids unique: the copy goes in under another key (row kid and seq, or _id) while its
    // content still names the genuine kid and seq. The store's key is what the record is read as, so its MAC (which
    // covers kid and seq) refuses it by the name it is stored under.
    const { mac, kid: _kid, ...content } = active;
    if (backend.name === 'sqlite') {
      (s.storage as SqliteStorage).db.prepare('INSERT INTO signing_keys (kid, seq, record, mac) VALUES (?, ?, ?, ?)').run('copied-key', 99, JSON.stringify({ ...content, kid: s.second }), mac as string);
    } else {
      await (s.storage as MongoStorage).db.collection('signing_keys').insertOne({ _id: 'copied-key' as never, ...content, seq: 99, kid: s.second, mac });
    }
    await expectRefused(s, /stored key copied-key is refused: its integrity MAC does not verify/);
  });

  test('a removed activation (the newer key\'s) does not bring the retired key back to signing in a running keyring', async () => {
    const s = await rotated();
    const transitions = await s.raw.transitions();
    await s.raw.writeTransitions(transitions.filter((t) => !(t.kid === s.second && t.type === 'activate')));
    const before = s.ring.publicJwks();
    await expect(s.ring.refresh()).rejects.toBeInstanceOf(KeyIntegrityError);
    await expect(s.ring.refresh()).rejects.toThrow(new RegExp(`makes key ${s.first} \\(seq 1\\) sign again after key ${s.second} \\(seq 2\\) replaced it`));
    expect(s.ring.active.kid).toBe(s.second);
    expect(s.ring.publicJwks()).toBe(before);
  });

  test('sealed private keys swapped between two records are refused', async () => {
    const s = await rotated();
    const keys = await s.raw.keys();
    const [a, b] = keys as [RawKey, RawKey];
    await s.raw.writeKeys([{ ...a, sealed: b.sealed }, { ...b, sealed: a.sealed }]);
    await expectRefused(s, new RegExp(`stored key ${a.kid} is refused`));
    // MACs and all: the sealed blobs are bound to their kid, so even the upgrade path refuses the swap.
    await s.raw.writeKeys([{ ...a, sealed: b.sealed, mac: undefined }, { ...b, sealed: a.sealed, mac: undefined }].map(({ mac: _m, ...k }) => k as RawKey));
    await expectRefused(s, new RegExp(`stored key ${a.kid} is refused`));
    await expect(Keyring.load(s.storage.keys, s.kek, 'ES256', policy)).rejects.toThrow(new RegExp(`stored key ${a.kid} is refused: key ${a.kid} failed authenticated decryption`));
  });

  test('records MACed under another KEK are refused', async () => {
    const s = await rotated();
    const otherKek = randomBytes(32);
    const attacker = await attackerKey();
    const keys = await s.raw.keys();
    const now = new Date();
    const forged = macKeyRecord(otherKek, injectedKey(attacker, 3, keys[0]!.sealed, now));
    await s.raw.writeKeys([...keys, forged as RawKey]);
    const transitions = await s.raw.transitions();
    await s.raw.writeTransitions([...transitions, macTransition(otherKek, { kid: attacker.kid, type: 'activate', at: now.toISOString(), recordedAt: now.toISOString() }) as RawTransition]);
    await expectRefused(s, new RegExp(`stored key ${attacker.kid} is refused: its integrity MAC does not verify under this KEK`), attacker.kid);

    // A transition alone, MACed under another KEK, for a genuine key.
    await s.raw.writeKeys(keys);
    await s.raw.writeTransitions([...transitions, macTransition(otherKek, { kid: s.second, type: 'retire', at: now.toISOString(), recordedAt: now.toISOString() }) as RawTransition]);
    await expectRefused(s, new RegExp(`key transition ${s.second}:retire is refused: its integrity MAC does not verify under this KEK`));
  });

  test('a transition without a MAC is never upgraded once the store\'s keys have MACs', async () => {
    const s = await rotated();
    const transitions = await s.raw.transitions();
    await s.raw.writeTransitions(transitions.map(({ mac: _m, ...t }) => t as RawTransition));
    await expectRefused(s, /key transition .* is refused: it carries no integrity MAC/);
    expect((await s.raw.transitions()).every((t) => t.mac === undefined)).toBe(true);
  });

  test('a genuine key whose MAC was stripped gets it back only after its key pair is checked', async () => {
    const s = await rotated();
    const keys = await s.raw.keys();
    const originalMac = keys[0]!.mac;
    await s.raw.writeKeys([{ ...keys[0]!, mac: undefined } as unknown as RawKey, keys[1]!].map((k) => JSON.parse(JSON.stringify(k)) as RawKey));
    await expect(s.ring.refresh()).rejects.toThrow(/carries no integrity MAC/); // a running keyring never upgrades
    const events: Parameters<NonNullable<KeyringEvents['upgraded']>>[0][] = [];
    const ring = await Keyring.load(s.storage.keys, s.kek, 'ES256', policy, { upgraded: (r) => events.push(r) });
    expect(events).toEqual([{ keys: [s.first], transitions: [] }]);
    expect(ring.active.kid).toBe(s.second);
    expect((await s.raw.keys())[0]!.mac).toBe(originalMac);
  });

  test('checkKeyPair refuses a record whose public key is not its sealed private key\'s, even with a valid MAC', async () => {
    const s = await rotated();
    const attacker = await attackerKey();
    const [genuine] = (await readCheckedKeys(s.storage.keys, s.kek)).keys;
    // Only a KEK holder could write this record; the check at load still refuses it.
    const mismatched = { ...genuine!, kid: attacker.kid, publicJwk: attacker.publicJwk as Record<string, string> };
    await expect(checkKeyPair(s.kek, mismatched)).rejects.toThrow(new RegExp(`stored key ${attacker.kid} is refused: key ${attacker.kid} failed authenticated decryption`));
    const samePublicKid = { ...genuine!, publicJwk: { ...genuine!.publicJwk, x: attacker.publicJwk.x!, y: attacker.publicJwk.y! } };
    await expect(checkKeyPair(s.kek, samePublicKid)).rejects.toThrow(/its kid is not the thumbprint of its public JWK/);
    await expect(checkKeyPair(s.kek, { ...genuine!, publicJwk: { ...genuine!.publicJwk, d: 'leak' } })).rejects.toThrow(/holds private members \(d\)/);
    await expect(checkKeyPair(s.kek, genuine!)).resolves.toMatchObject({ kid: genuine!.kid, d: expect.any(String) });
  });

  describe('the one-time upgrade of a store written before records carried MACs', () => {
    /** A store as the previous release wrote it: two keys, three transitions, no MACs. */
    async function legacy() {
      const { storage, raw } = backend.open();
      opened.push(storage);
      await storage.init();
      const kek = randomBytes(32);
      const bare = <T extends { mac?: string }>({ mac: _m, ...r }: T): Omit<T, 'mac'> => r;
      const t0 = new Date(Date.now() - 10 * HOUR);
      const k1 = bare(await newStoredKey(kek, 'ES256', 1, t0));
      const k2 = bare(await newStoredKey(kek, 'ES256', 2, new Date(t0.getTime() + HOUR)));
      const k3 = bare(await newStoredKey(kek, 'ES256', 3, new Date(t0.getTime() + 9 * HOUR)));
      for (const k of [k1, k2, k3]) expect(await storage.keys.insert(k)).toBe(true);
      const at = (h: number) => new Date(t0.getTime() + h * HOUR).toISOString();
      for (const t of [
        { kid: k1.kid, type: 'activate' as const, at: at(0), recordedAt: at(0), reason: 'first key' },
        { kid: k2.kid, type: 'activate' as const, at: at(1), recordedAt: at(1) },
        { kid: k3.kid, type: 'activate' as const, at: at(9.5), recordedAt: at(9) },
      ]) {
        expect(await storage.keys.addTransition(t)).toBe(true);
      }
      return { storage, raw, kek, k1, k2, k3 };
    }

    test('the first load checks every key pair, writes the MACs once and reports it; later loads change nothing', async () => {
      const l = await legacy();
      const reports: Parameters<NonNullable<KeyringEvents['upgraded']>>[0][] = [];
      const ring = await Keyring.load(l.storage.keys, l.kek, 'ES256', policy, { upgraded: (r) => reports.push(r) });
      expect(reports).toEqual([{ keys: [l.k1.kid, l.k2.kid, l.k3.kid], transitions: [`${l.k1.kid}:activate`, `${l.k2.kid}:activate`, `${l.k3.kid}:activate`] }]);
      expect(ring.active.kid).toBe(l.k3.kid);
      expect(ring.archive().map((k) => [k.kid, k.state])).toEqual([[l.k1.kid, 'archived'], [l.k2.kid, 'retired'], [l.k3.kid, 'active']]);
      const keys = await l.raw.keys();
      const transitions = await l.raw.transitions();
      expect(keys.every((k) => typeof k.mac === 'string')).toBe(true);
      expect(transitions.every((t) => typeof t.mac === 'string')).toBe(true);

      const again: unknown[] = [];
      await Keyring.load(l.storage.keys, l.kek, 'ES256', policy, { upgraded: (r) => again.push(r) });
      expect(again).toEqual([]);
      expect(await l.raw.keys()).toEqual(keys);
      expect(await l.raw.transitions()).toEqual(transitions);
      // After the upgrade, the store is as strict as one written by this version.
      await l.raw.writeTransitions([...transitions, { kid: l.k3.kid, type: 'retire', at: new Date().toISOString(), recordedAt: new Date().toISOString() }]);
      await expect(Keyring.load(l.storage.keys, l.kek, 'ES256', policy)).rejects.toThrow(new RegExp(`key transition ${l.k3.kid}:retire is refused`));
    });

    test('a key from the first releases (state "active", no transitions) is upgraded and still signs', async () => {
      const { storage, raw } = backend.open();
      opened.push(storage);
      await storage.init();
      const kek = randomBytes(32);
      const { mac: _m, ...old } = await newStoredKey(kek, 'ES256', 1);
      expect(await storage.keys.insert({ ...old, state: 'active' })).toBe(true);
      const reports: unknown[] = [];
      const ring = await Keyring.load(storage.keys, kek, 'ES256', policy, { upgraded: (r) => reports.push(r) });
      expect(reports).toEqual([{ keys: [old.kid], transitions: [] }]);
      expect(ring.active.kid).toBe(old.kid);
      expect((await raw.keys())[0]).toMatchObject({ state: 'active', mac: expect.any(String) });
    });

    test('a legacy key whose public part was altered refuses the upgrade, and nothing is written', async () => {
      const l = await legacy();
      const attacker = await attackerKey();
      const keys = await l.raw.keys();
      keys[1]!.publicJwk = { ...keys[1]!.publicJwk, x: attacker.publicJwk.x!, y: attacker.publicJwk.y! };
      await l.raw.writeKeys(keys);
      await expect(Keyring.load(l.storage.keys, l.kek, 'ES256', policy)).rejects.toThrow(new RegExp(`stored key ${l.k2.kid} is refused`));
      expect((await l.raw.keys()).some((k) => k.mac !== undefined)).toBe(false);
      expect((await l.raw.transitions()).some((t) => t.mac !== undefined)).toBe(false);
    });

    test('a key injected into a legacy store (the attacker\'s public key, a borrowed sealed blob) refuses the upgrade', async () => {
      const l = await legacy();
      const attacker = await attackerKey();
      const keys = await l.raw.keys();
      await l.raw.writeKeys([...keys, injectedKey(attacker, 4, keys[0]!.sealed, new Date(Date.now() - 20 * HOUR))]);
      await expect(Keyring.load(l.storage.keys, l.kek, 'ES256', policy)).rejects.toThrow(new RegExp(`stored key ${attacker.kid} is refused: key ${attacker.kid} failed authenticated decryption`));
      expect((await l.raw.keys()).some((k) => k.mac !== undefined)).toBe(false);
    });

    test('rotation and retirement from a legacy store go through the upgrade (the CLI runs it first) and write MACed records', async () => {
      const l = await legacy();
      await expect(rotateKeys(l.storage.keys, l.kek, policy, { alg: 'ES256', publishDelaySeconds: 60 })).rejects.toThrow(/carries no integrity MAC/);
      await Keyring.load(l.storage.keys, l.kek, 'ES256', policy);
      const r = await rotateKeys(l.storage.keys, l.kek, policy, { alg: 'ES256', publishDelaySeconds: 60 });
      await retireKey(l.storage.keys, l.kek, r.kid, policy, 'cancelled');
      expect((await readCheckedKeys(l.storage.keys, l.kek)).transitions.filter((t) => t.kid === r.kid).map((t) => t.type).sort()).toEqual(['activate', 'retire']);
    });
  });

  test('addKeyMac and addTransitionMac set a MAC only where there is none', async () => {
    const { storage, raw } = backend.open();
    opened.push(storage);
    await storage.init();
    const kek = randomBytes(32);
    const { mac: _m, ...key } = await newStoredKey(kek, 'ES256', 1);
    await storage.keys.insert(key);
    await storage.keys.addTransition({ kid: key.kid, type: 'activate', at: key.createdAt, recordedAt: key.createdAt });
    await storage.keys.addKeyMac(key.kid, 'first');
    await storage.keys.addKeyMac(key.kid, 'second');
    await storage.keys.addTransitionMac(key.kid, 'activate', 'one');
    await storage.keys.addTransitionMac(key.kid, 'activate', 'two');
    await storage.keys.addTransitionMac(key.kid, 'retire', 'none'); // no such transition: nothing happens
    expect((await storage.keys.list()).map((k) => k.mac)).toEqual(['first']);
    expect((await storage.keys.transitions()).map((t) => [t.type, t.mac])).toEqual([['activate', 'one']]);
    expect((await raw.keys())[0]).toMatchObject({ ...key, mac: 'first' });
  });

  test('replaceKey and replaceTransitionMac replace a record only while its MAC is the one expected', async () => {
    const { storage } = await rotated();
    const [one, two] = await storage.keys.list();
    const replacement = { ...one!, createdAt: new Date(0).toISOString(), mac: 'replaced' };
    expect(await storage.keys.replaceKey(replacement, 'not-its-mac')).toBe(false);
    expect(await storage.keys.replaceKey({ ...replacement, kid: 'no-such-kid' }, one!.mac!)).toBe(false);
    expect(await storage.keys.replaceKey({ ...replacement, seq: 99 }, one!.mac!)).toBe(false); // a key is replaced in its own place only
    expect(await storage.keys.list()).toEqual([one, two]);
    expect(await storage.keys.replaceKey(replacement, one!.mac!)).toBe(true);
    expect(await storage.keys.replaceKey({ ...replacement, mac: 'again' }, one!.mac!)).toBe(false); // its MAC is no longer that one
    expect(await storage.keys.list()).toEqual([replacement, two]);

    const [t] = await storage.keys.transitions();
    expect(await storage.keys.replaceTransitionMac(t!.kid, t!.type, 'not-its-mac', 'x')).toBe(false);
    expect(await storage.keys.replaceTransitionMac(t!.kid, t!.type, t!.mac!, 'new-mac')).toBe(true);
    expect(await storage.keys.replaceTransitionMac(t!.kid, t!.type, t!.mac!, 'newer-mac')).toBe(false);
    expect((await storage.keys.transitions()).find((x) => x.kid === t!.kid && x.type === t!.type)?.mac).toBe('new-mac');
  });

  describe('rotating the KEK (keys/kek-rotation.ts)', () => {
    test('records of the old KEK are read with it as fallback, re-sealed under the new one, and then need no fallback', async () => {
      const { storage, kek: old, first, second } = await rotated();
      const next = randomBytes(32);
      const before = await readCheckedKeys(storage.keys, old);
      await expect(readCheckedKeys(storage.keys, next)).rejects.toThrow(/sealed under another key-encryption key/);
      // With the old KEK as fallback, every record verifies, and all of it is reported as still needing it.
      expect((await readCheckedKeys(storage.keys, next, old)).keys.map((k) => k.kid)).toEqual([first, second]);
      const needing = await keysUnderFallback(storage.keys, next, old);
      expect(needing.keys.sort()).toEqual([first, second].sort());
      expect(needing.transitions.length).toBe(before.transitions.length);

      const report = await resealKeyStore(storage.keys, next, old);
      expect(report.keys.sort()).toEqual([first, second].sort());
      expect(report.transitions.length).toBe(before.transitions.length);
      // Under the new KEK alone now; the old one opens nothing any more; the same keys, windows and private keys.
      const after = await readCheckedKeys(storage.keys, next);
      expect(after.transitions).toEqual(before.transitions);
      expect(after.keys.map((k) => ({ ...k, sealed: undefined }))).toEqual(before.keys.map((k) => ({ ...k, sealed: undefined })));
      for (const k of after.keys) expect(await checkKeyPair(next, k)).toEqual(await checkKeyPair(old, before.keys.find((b) => b.kid === k.kid)!));
      await expect(readCheckedKeys(storage.keys, old)).rejects.toThrow(/sealed under another key-encryption key/);
      expect(await keysUnderFallback(storage.keys, next, old)).toEqual({ keys: [], transitions: [] });
      // A second run finds nothing to do; a keyring loaded with the fallback signs with the same key.
      expect(await resealKeyStore(storage.keys, next, old)).toEqual({ keys: [], transitions: [] });
      const ring = await Keyring.load(storage.keys, next, 'ES256', policy, {}, { fallback: old });
      expect(ring.active.kid).toBe(second);
    });

    test('a keyring that reads with the fallback follows records another process re-sealed, and a keyring load re-seals', async () => {
      const { storage, kek: old, second } = await rotated();
      const next = randomBytes(32);
      // A process still on the old KEK that holds the new one as its fallback (the first step of a rolling rotation).
      const stillOld = await Keyring.load(storage.keys, old, 'ES256', policy, {}, { fallback: next });
      const resealed: string[] = [];
      const moved = await Keyring.load(storage.keys, next, 'ES256', policy, { resealed: (r) => resealed.push(...r.keys) }, { fallback: old });
      expect(resealed).toHaveLength(2);
      expect(moved.active.kid).toBe(second);
      await stillOld.refresh(); // reads the records now sealed under its fallback
      expect(stillOld.active.kid).toBe(second);
      expect(stillOld.publicJwks()).toEqual(moved.publicJwks());
    });

    test('a record of a third KEK refuses the re-sealing, and nothing is written', async () => {
      const { storage, raw, kek: old } = await rotated();
      const third = randomBytes(32);
      const foreign = await newStoredKey(third, 'ES256', 3);
      await raw.writeKeys([...(await raw.keys()), foreign as unknown as RawKey]);
      const stored = await storage.keys.list();
      await expect(resealKeyStore(storage.keys, randomBytes(32), old)).rejects.toThrow(/sealed under another key-encryption key/);
      expect(await storage.keys.list()).toEqual(stored);
    });

    test('twenty processes re-sealing at once leave every record whole and verifying under the new KEK', async () => {
      const { storage, kek: old, first, second } = await rotated();
      const next = randomBytes(32);
      const reports = await Promise.all(Array.from({ length: 20 }, () => resealKeyStore(storage.keys, next, old)));
      // Each key was written by at least one of them; whichever write stands is a whole record of one writer.
      expect(new Set(reports.flatMap((r) => r.keys))).toEqual(new Set([first, second]));
      expect((await readCheckedKeys(storage.keys, next)).keys.map((k) => k.kid)).toEqual([first, second]);
      expect(await keysUnderFallback(storage.keys, next, old)).toEqual({ keys: [], transitions: [] });
    });
  });
});

describe('SQLite key store: a record whose stored text is not JSON is refused as altered, by its kid, not taken for an outage', () => {
  let storage: SqliteStorage;
  let kek: Buffer;
  let ring: Keyring;

  beforeEach(async () => {
    storage = new SqliteStorage({ dataDir: tempDir('agentauth-keys-json-') });
    await storage.init();
    kek = randomBytes(32);
    ring = await Keyring.load(storage.keys, kek, 'ES256', policy);
  });
  afterEach(async () => {
    await storage.close();
  });

  test('a key record: KeyIntegrityError naming the key, everywhere the key store is trusted; the running keyring keeps its keys', async () => {
    const kid = ring.active.kid;
    const before = ring.publicJwks();
    storage.db.prepare('UPDATE signing_keys SET record = ? WHERE kid = ?').run('{"seq":1,', kid);
    await expect(readCheckedKeys(storage.keys, kek)).rejects.toBeInstanceOf(KeyIntegrityError);
    await expect(readCheckedKeys(storage.keys, kek)).rejects.toThrow(new RegExp(`stored key ${kid} is refused: its stored record is not JSON`));
    await expect(Keyring.load(storage.keys, kek, 'ES256', policy)).rejects.toBeInstanceOf(KeyIntegrityError);
    await expect(ring.refresh()).rejects.toThrow(kid);
    expect(ring.publicJwks()).toBe(before);
  });

  test('a transition: KeyIntegrityError naming it', async () => {
    storage.db.prepare('UPDATE key_transitions SET record = ?').run('not json');
    await expect(readCheckedKeys(storage.keys, kek)).rejects.toThrow(new RegExp(`key transition ${ring.active.kid}:activate is refused: its stored record is not JSON`));
  });

  test('a running instance logs keys.refused (what operators alert on), not "could not refresh signing keys"', async () => {
    storage.db.prepare('UPDATE signing_keys SET record = ? WHERE kid = ?').run('[', ring.active.kid);
    const events: Array<{ event?: unknown; msg: string }> = [];
    const log = { error: (o: { event?: unknown }, msg: string) => events.push({ event: o.event, msg }), warn: (o: { event?: unknown }, msg: string) => events.push({ event: o.event, msg }), info: () => undefined };
    const watcher = new KeyWatcher({ keyring: ring, provider: {} as never, store: storage.keys, kek, policy, alg: 'ES256', keys: { refreshIntervalSeconds: 10 } as KeysConfig, log: log as never });
    await watcher.tick();
    expect(events).toEqual([{ event: 'keys.refused', msg: 'signing keys in storage failed their integrity check; keeping the current ones' }]);
  });
});
