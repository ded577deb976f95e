import { StorageUnavailableError } from '../../adapters/errors.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AdapterPayload, Storage } from '../../adapters/types.js';
import { ClientChangeInProgress, ClientGone, ClientWrites, REVISION_FIELD, revisionOf } from '../../server/admin/client-writes.js';
import { FACTORIES, mongoUri } from '../support/storages.js';

/**
 * Changes of a stored client from several processes (server/admin/client-writes.ts): a compare-and-set on the
 * record built on the store's unique inserts. Each "process" here is a ClientWrites on its own connection to the
 * store (another MongoDB client on the same database, another SQLite connection to the same file; the in-memory
 * store has one), against the real MongoDB-wire server.
 */

/** Another process's view of the same store. */
async function otherProcess(storage: Storage): Promise<Storage> {
  if (storage instanceof SqliteStorage) {
    const other = new SqliteStorage({ dataDir: storage.dataDir });
    await other.init();
    return other;
  }
  if (storage instanceof MongoStorage) {
    const other = new MongoStorage({ uri: mongoUri(), dbName: storage.db.databaseName, timeoutMs: 3000 });
    await other.init();
    return other;
  }
  return storage;
}

const marks = (p: AdapterPayload | undefined) => (Array.isArray(p?.marks) ? (p.marks as number[]) : []);

describe.each(FACTORIES)('ClientWrites on $name storage', (factory) => {
  let storage: Storage;
  let other: Storage;
  let writers: ClientWrites[];

  beforeEach(async () => {
    storage = factory.create('clientwrites');
    await storage.init();
    other = await otherProcess(storage);
    writers = [storage, other].map((s) => new ClientWrites(s.model('Client'), s.nonces));
  });

  afterEach(async () => {
    if (other !== storage) await other.close();
    if (storage instanceof MongoStorage) await storage.db.dropDatabase().catch(() => undefined);
    await storage.close();
  });

  test('50 concurrent changes from two processes, three times: none is lost (each was made on the record as the one before it left it)', async () => {
    for (let round = 0; round < 3; round += 1) {
      const id = `client-${round}`;
      await writers[0]!.create(id, { client_id: id, marks: [] });
      const changes = await Promise.all(
        Array.from({ length: 50 }, (_, i) => writers[i % 2]!.change(id, (current) => ({ write: { ...current, marks: [...marks(current), i] } }))),
      );
      const stored = await storage.model('Client').find(id);
      expect([...marks(stored)].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
      // Every change saw the record its predecessor wrote: 50 distinct revisions, each written once.
      expect(new Set(changes.map((c) => c.after![REVISION_FIELD])).size).toBe(50);
      expect(new Set(changes.map((c) => revisionOf(c.before))).size).toBe(50);
    }
  });

  test('a delete among 49 concurrent changes from two processes: the client ends deleted, every later change is told it is gone', async () => {
    for (let round = 0; round < 3; round += 1) {
      const id = `doomed-${round}`;
      await writers[0]!.create(id, { client_id: id, marks: [] });
      const outcomes = await Promise.allSettled(
        Array.from({ length: 50 }, (_, i) =>
          writers[i % 2]!.change(id, (current) => (i === 25 ? { destroy: true } : { write: { ...current, marks: [...marks(current), i] } })),
        ),
      );
      expect(await storage.model('Client').find(id)).toBeUndefined();
      expect(await other.model('Client').find(id)).toBeUndefined();
      expect(outcomes[25]!.status).toBe('fulfilled');
      for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(ClientGone);
    }
  });

  test('a change whose commit fails (its audit record refused) changes nothing and leaves the client free for the next change at once', async () => {
    await writers[0]!.create('refused', { client_id: 'refused', marks: [] });
    const before = await storage.model('Client').find('refused');
    await expect(
      writers[0]!.change('refused', (c) => ({ write: { ...c, marks: [1] } }), async () => {
        throw new Error('audit store refused the record');
      }),
    ).rejects.toThrow('audit store refused the record');
    const after = await storage.model('Client').find('refused');
    const { [REVISION_FIELD]: _r1, ...content } = after!;
    const { [REVISION_FIELD]: _r0, ...was } = before!;
    expect(content).toEqual(was);
    await expect(writers[1]!.change('refused', (c) => ({ write: { ...c, marks: [2] } }))).resolves.toMatchObject({ after: { marks: [2] } });
  });

  test('a change whose write fails (the store down) frees the client once the store takes writes again, long before its claim lapses', async () => {
    const clients = storage.model('Client');
    let down = false;
    const refused = () => Promise.reject(new StorageUnavailableError('test: the store is down'));
    const flaky = { find: (id: string) => clients.find(id), upsert: (id: string, p: AdapterPayload) => (down ? refused() : clients.upsert(id, p)), destroy: (id: string) => (down ? refused() : clients.destroy(id)) };
    const a = new ClientWrites(flaky, storage.nonces);
    for (const [id, decide] of [['flaky-write', (c: AdapterPayload) => ({ write: { ...c, marks: [1] } })], ['flaky-delete', () => ({ destroy: true as const })]] as const) {
      await a.create(id, { client_id: id, marks: [] });
      down = true;
      await expect(a.change(id, decide)).rejects.toBeInstanceOf(StorageUnavailableError);
      // Still down for a while: the record stays as it was, claimed.
      await new Promise((r) => setTimeout(r, 600));
      expect(marks(await clients.find(id))).toEqual([]);
      down = false;
      // The claim lives 60 s; another process's change waits at most 5 s for the record to move on, and gets it.
      await expect(writers[1]!.change(id, (c) => ({ write: { ...c, marks: [...marks(c), 2] } }))).resolves.toMatchObject({ after: { marks: [2] } });
      expect(marks(await clients.find(id))).toEqual([2]);
    }
  });

  test('a change whose write was applied though it failed (a timeout after the store took it) is kept, never written back', async () => {
    const clients = storage.model('Client');
    const late = { find: (id: string) => clients.find(id), upsert: async (id: string, p: AdapterPayload) => { await clients.upsert(id, p); throw new StorageUnavailableError('test: timed out after the write'); }, destroy: (id: string) => clients.destroy(id) };
    await writers[0]!.create('late', { client_id: 'late', marks: [] });
    await expect(new ClientWrites(late, storage.nonces).change('late', (c) => ({ write: { ...c, marks: [1] } }))).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(writers[1]!.change('late', (c) => ({ write: { ...c, marks: [...marks(c), 2] } }))).resolves.toMatchObject({ after: { marks: [1, 2] } });
    // Past every attempt the failed change would make to free the record: nothing it wrote back.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(marks(await clients.find('late'))).toEqual([1, 2]);
  });

  test('a change that stops for good between its claim and its write (its process ended) writes nothing; others wait, are told, and the client is free again once the claim lapses', async () => {
    const [a, b] = [storage, other].map((s) => new ClientWrites(s.model('Client'), s.nonces, { claimTtlSeconds: 1, waitMs: 300 }));
    await a!.create('halted', { client_id: 'halted', marks: [] });
    const before = await storage.model('Client').find('halted');
    let claimed!: () => void;
    const holding = new Promise<void>((resolve) => (claimed = resolve));
    // The commit never returns: as if the process ended right after claiming.
    void a!.change('halted', (c) => ({ write: { ...c, marks: [1] } }), async () => {
      claimed();
      await new Promise(() => undefined);
    });
    await holding;
    await expect(b!.change('halted', (c) => ({ write: { ...c, marks: [2] } }))).rejects.toBeInstanceOf(ClientChangeInProgress);
    expect(await storage.model('Client').find('halted')).toEqual(before);
    await new Promise((r) => setTimeout(r, 1100));
    // MongoDB's lapsed marker stays until the TTL monitor (or the sweep on FerretDB) removes it.
    if (storage instanceof MongoStorage) await storage.sweep();
    await expect(b!.change('halted', (c) => ({ write: { ...c, marks: [3] } }))).resolves.toMatchObject({ after: { marks: [3] } });
  });

  test('"keep" writes nothing and claims nothing; a record that was never there is ClientGone', async () => {
    await writers[0]!.create('kept', { client_id: 'kept' });
    const before = await storage.model('Client').find('kept');
    const commits: string[] = [];
    const kept = await writers[1]!.change('kept', () => ({ keep: true }), async (_c, d) => void commits.push(Object.keys(d)[0]!));
    expect(kept.after).toBeUndefined();
    expect(commits).toEqual(['keep']);
    expect(await storage.model('Client').find('kept')).toEqual(before);
    await expect(writers[0]!.change('never-there', () => ({ destroy: true }))).rejects.toBeInstanceOf(ClientGone);
  });

  test('a record stored before revisions existed (none in it) is changed once, by one of two racing processes', async () => {
    await storage.model('Client').upsert('legacy', { client_id: 'legacy', marks: [] });
    const results = await Promise.all([0, 1].map((i) => writers[i]!.change('legacy', (c) => ({ write: { ...c, marks: [...marks(c), i] } }))));
    expect([...marks(await storage.model('Client').find('legacy'))].sort()).toEqual([0, 1]);
    expect(results.filter((r) => r.before[REVISION_FIELD] === undefined)).toHaveLength(1);
  });
});
