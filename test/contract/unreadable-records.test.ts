import { UnreadableRecordError } from '../../adapters/errors.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { ModelName, Storage } from '../../adapters/types.js';
import { tempDir, uniqueDbName } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

/**
 * A stored oidc-provider record whose payload is not a JSON object (damage, or an edit outside agentauth): a lookup
 * answers it as absent and tells the store's `onUnreadable` listener (the server logs it), a listing for an operator
 * fails naming it, and a unique insert of its id does not take it over as if it were gone.
 */
interface Damageable {
  storage: Storage;
  told: UnreadableRecordError[];
  /** Replaces the stored payload of `model` record `id` by `payload` as stored text (or, on MongoDB, any value). */
  damage(model: ModelName, id: string, payload: unknown): Promise<void>;
  close(): Promise<void>;
}

async function sqlite(): Promise<Damageable> {
  const told: UnreadableRecordError[] = [];
  const storage = new SqliteStorage({ dataDir: tempDir('agentauth-sqlite-'), onUnreadable: (err) => told.push(err) });
  await storage.init();
  return {
    storage,
    told,
    async damage(model, id, payload) {
      storage.db.prepare('UPDATE oidc_records SET payload = ? WHERE model = ? AND id = ?').run(String(payload), model, id);
    },
    close: () => storage.close(),
  };
}

async function mongo(): Promise<Damageable> {
  const told: UnreadableRecordError[] = [];
  const storage = new MongoStorage({ uri: mongoUri(), dbName: uniqueDbName('unreadable'), timeoutMs: 3000, onUnreadable: (err) => told.push(err) });
  await storage.init();
  return {
    storage,
    told,
    async damage(model, id, payload) {
      await storage.db.collection<{ _id: string }>(`oidc_${model}`).updateOne({ _id: id }, { $set: { payload } });
    },
    close: () => storage.close(),
  };
}

const STORES: Array<[string, () => Promise<Damageable>, unknown[]]> = [
  // The last ones are JSON objects whose fields are not of the types oidc-provider writes (adapters/payload-shape.ts).
  ['SQLite', sqlite, ['not json {', '[1,2]', 'null', '"text"', '', '{"grantId":"g1","scope":5}', '{"grantId":"g1","exp":"soon"}', '{"aud":[1]}']],
  ['MongoDB', mongo, ['not json {', '[1,2]', 'null', 42, { grantId: 'g' }, null, '{"clientId":{}}', '{"extra":"x"}', '{"expiresWithSession":"yes"}']],
];

describe.each(STORES)('a stored record that is not readable: %s', (_name, open, payloads) => {
  let store: Damageable;
  beforeEach(async () => {
    store = await open();
  });
  afterEach(() => store.close());

  test.each(payloads.map((p) => [JSON.stringify(p), p]))('payload %s: a lookup by id, uid or user code answers absent, and the listener is told the model', async (_label, payload) => {
    const tokens = store.storage.model('DeviceCode');
    await tokens.upsert('dc1', { uid: 'u1', userCode: 'UC-1', grantId: 'g1' }, 60);
    expect(await tokens.find('dc1')).toMatchObject({ uid: 'u1' });
    await store.damage('DeviceCode', 'dc1', payload);

    expect(await tokens.find('dc1')).toBeUndefined();
    expect(await tokens.findByUid('u1')).toBeUndefined();
    expect(await tokens.findByUserCode('UC-1')).toBeUndefined();
    expect(store.told.map((e) => [e.model, e.id])).toEqual([['DeviceCode', undefined], ['DeviceCode', undefined], ['DeviceCode', undefined]]);
    // Its id stays taken: a unique insert does not take it over as if it were gone.
    expect(await tokens.insertOnce('dc1', { uid: 'u2' }, 60)).toBe(false);
    expect(await tokens.find('dc1')).toBeUndefined();
  });

  test('a listing fails naming the record (the operator repairs it); other records still read', async () => {
    const clients = store.storage.model('Client');
    await clients.upsert('client-a', { client_id: 'client-a' });
    await clients.upsert('client-b', { client_id: 'client-b' });
    await store.damage('Client', 'client-a', 'not json {');
    const err = await clients.list(undefined, 10).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnreadableRecordError);
    expect(err).toMatchObject({ code: 'unreadable_record', model: 'Client', id: 'client-a' });
    expect(await clients.find('client-b')).toEqual({ client_id: 'client-b' });
    expect(store.told).toEqual([]);
  });

  test("a person's grants are still found when another of the model's records is not readable", async () => {
    const grants = store.storage.model('Grant');
    await grants.upsert('grant-1', { accountId: 'acct', clientId: 'c' }, 60);
    await grants.upsert('grant-2', { accountId: 'acct', clientId: 'c' }, 60);
    if (store.storage.kind === 'sqlite') {
      // SQLite's account index reads the payload: it refuses to store a payload that is not JSON in a grant at all.
      await expect(store.damage('Grant', 'grant-2', 'not json {')).rejects.toThrow(/malformed JSON/);
    } else {
      await store.damage('Grant', 'grant-2', 'not json {');
      // A grant stored before its account was kept beside the payload, the payload damaged: not the person's, no error.
      await (store.storage as MongoStorage).db.collection<{ _id: string }>('oidc_Grant').insertOne({ _id: 'grant-0', payload: 'not json {', expiresAt: new Date(Date.now() + 60_000) } as never);
    }
    expect((await grants.idsByAccount('acct', undefined, 10)).ids).toEqual(['grant-1', 'grant-2']);
    expect(await grants.find('grant-1')).toEqual({ accountId: 'acct', clientId: 'c' });
  });
});
