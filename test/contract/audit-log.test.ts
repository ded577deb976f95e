import { appendFileSync } from 'node:fs';
import { join } from 'node:path';

import { BSON } from 'mongodb';

import { StorageUnavailableError } from '../../adapters/errors.js';
import { FileAuditStore } from '../../adapters/file-audit.js';
import { MongoStorage, auditRecordFromBytes } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AuditCheckpoint, AuditRecord, AuditStore, RevocationKeys, Storage } from '../../adapters/types.js';
import { InvalidAuditEventError, computeHash, verifyChain, verifyLog } from '../../server/audit/chain.js';
import { AuditLog, AuditLogClosedError } from '../../server/audit/log.js';
import { tempDir, uniqueDbName } from '../support/server.js';
import { FACTORIES, mongoUri } from '../support/storages.js';

/** Every record in the store, ascending. */
async function all(store: AuditStore, chain?: string): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (let from = 1; ; ) {
    const page = await store.list(from, 500, chain);
    if (page.length === 0) return out;
    out.push(...page);
    from = page.at(-1)!.seq + 1;
  }
}

/** Counts calls to the store, to show batching and head caching. */
class CountingStore implements AuditStore {
  heads = 0;
  batches: number[] = [];

  constructor(private readonly inner: AuditStore) {}

  head(chain?: string) {
    this.heads += 1;
    return this.inner.head(chain);
  }

  insertBatch(records: AuditRecord[]) {
    this.batches.push(records.length);
    return this.inner.insertBatch(records);
  }

  list(fromSeq: number, limit: number, chain?: string) {
    return this.inner.list(fromSeq, limit, chain);
  }

  chains() {
    return this.inner.chains();
  }

  strays(limit: number) {
    return this.inner.strays(limit);
  }

  revocations(keys: RevocationKeys, limit: number) {
    return this.inner.revocations(keys, limit);
  }

  checkpoints() {
    return this.inner.checkpoints();
  }

  prune(checkpoint: AuditCheckpoint, batch: number) {
    return this.inner.prune(checkpoint, batch);
  }
}

function expectOneValidChain(records: AuditRecord[], length: number): void {
  expect(records.map((r) => r.seq)).toEqual(Array.from({ length }, (_, i) => i + 1));
  expect(verifyChain(records)).toMatchObject({ ok: true, checked: length, headSeq: length, problems: [] });
}

/** A second process's view of the same store: for MongoDB, another client on the same database; for SQLite, another connection to the file. */
async function secondWriter(storage: Storage): Promise<Storage> {
  if (storage instanceof SqliteStorage) {
    // Another connection to the same file, as a second server process (or the CLI) has.
    const other = new SqliteStorage({ dataDir: storage.dataDir });
    await other.init();
    return other;
  }
  if (!(storage instanceof MongoStorage)) return storage;
  const other = new MongoStorage({ uri: mongoUri(), dbName: storage.db.databaseName, timeoutMs: 3000 });
  await other.init();
  return other;
}

describe.each(FACTORIES)('AuditLog on $name storage', (factory) => {
  let storage: Storage;

  beforeEach(async () => {
    storage = factory.create('auditlog');
    await storage.init();
  });

  afterEach(async () => {
    if (storage instanceof MongoStorage) await storage.db.dropDatabase().catch(() => undefined);
    await storage.close();
  });

  test('appends records that form a valid chain and round-trip exactly', async () => {
    const log = new AuditLog(storage.audit);
    const first = await log.record({ type: 'client.registered', client_id: 'agent-1', details: { 'https://api.example.com': ['read'], tier: 'default' } });
    const second = await log.record({ type: 'token.issued', client_id: 'agent-1', sub: 'user-1', details: { jti: 'j1', exp: 1_900_000_000 } });
    const third = await log.record({ type: 'key.rotated' });
    await log.close();

    expect(first).toMatchObject({ seq: 1, type: 'client.registered', client_id: 'agent-1' });
    expect(second.prev_hash).toBe(first.hash);
    expect(third).toMatchObject({ seq: 3, prev_hash: second.hash, details: {} });
    expect(third).not.toHaveProperty('client_id');
    const stored = await all(storage.audit);
    expect(stored).toEqual([first, second, third]);
    for (const r of stored) expect(computeHash(r)).toBe(r.hash);
    expectOneValidChain(stored, 3);
    expect((await storage.audit.head())?.hash).toBe(third.hash);
  });

  test('200 concurrent record() calls: one valid chain, no gaps, each caller gets its own record, few writes', async () => {
    const counting = new CountingStore(storage.audit);
    const log = new AuditLog(counting);
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => log.record({ type: 'token.issued', client_id: `c${i % 7}`, details: { i } })),
    );
    const stored = await all(storage.audit);
    expectOneValidChain(stored, 200);
    expect(results.map((r) => r.details.i)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    for (const r of results) expect(stored[r.seq - 1]).toEqual(r);
    // Everything queued before a write starts goes in one batch.
    expect(counting.batches).toEqual([200]);
    expect(counting.heads).toBe(1);
  });

  test('batches are capped at maxBatch and the head is read once, then cached', async () => {
    const counting = new CountingStore(storage.audit);
    const log = new AuditLog(counting, { maxBatch: 16 });
    await Promise.all(Array.from({ length: 40 }, (_, i) => log.record({ type: 'token.issued', details: { i } })));
    for (let i = 0; i < 3; i += 1) await log.record({ type: 'token.revoked', details: { i } });
    expect(counting.batches).toEqual([16, 16, 8, 1, 1, 1]);
    expect(counting.heads).toBe(1);
    expectOneValidChain(await all(storage.audit), 43);
  });

  test('a log appended by an earlier writer is continued, not restarted', async () => {
    const before = new AuditLog(storage.audit);
    await before.record({ type: 'client.registered', details: { n: 1 } });
    await before.close();
    const after = new AuditLog(storage.audit);
    expect((await after.record({ type: 'client.deleted', details: { n: 2 } })).seq).toBe(2);
    expectOneValidChain(await all(storage.audit), 2);
  });

  test('two AuditLog instances (two writers) appending concurrently keep one chain with every event exactly once', async () => {
    // Two writers on one store: for MongoDB, two clients on the same database, as two server processes would be.
    const otherStorage = await secondWriter(storage);
    try {
      const storeA = new CountingStore(storage.audit);
      const storeB = new CountingStore(otherStorage.audit);
      const a = new AuditLog(storeA, { maxBatch: 8 });
      const b = new AuditLog(storeB, { maxBatch: 8 });
      const calls: Array<Promise<AuditRecord>> = [];
      for (let i = 0; i < 100; i += 1) {
        calls.push(a.record({ type: 'token.issued', details: { writer: 'a', i } }));
        calls.push(b.record({ type: 'token.issued', details: { writer: 'b', i } }));
        if (i % 10 === 0) await new Promise((r) => setImmediate(r));
      }
      const results = await Promise.all(calls);
      const stored = await all(storage.audit);
      expectOneValidChain(stored, 200);
      const ids = stored.map((r) => `${String(r.details.writer)}-${String(r.details.i)}`);
      expect(new Set(ids).size).toBe(200);
      expect(ids.sort()).toEqual([...['a', 'b'].flatMap((w) => Array.from({ length: 100 }, (_, i) => `${w}-${i}`))].sort());
      for (const r of results) expect(stored[r.seq - 1]).toEqual(r);
      // The writers did collide (a head re-read after a taken seq), and recovered.
      expect(storeA.heads + storeB.heads).toBeGreaterThan(2);
      expect([...storeA.batches, ...storeB.batches].reduce((x, y) => x + y, 0)).toBeGreaterThan(200);
    } finally {
      if (otherStorage !== storage) await otherStorage.close();
    }
  });

  test('writers with their own chains (server processes, the CLI) never collide, and every chain verifies', async () => {
    const otherStorage = await secondWriter(storage);
    try {
      const storeA = new CountingStore(storage.audit);
      const storeB = new CountingStore(otherStorage.audit);
      const a = new AuditLog(storeA, { maxBatch: 8, chain: 'host-a#1' });
      const b = new AuditLog(storeB, { maxBatch: 8, chain: 'host-a#2' });
      const legacy = new AuditLog(storage.audit); // the default chain, as logs written before chains existed
      const calls: Array<Promise<AuditRecord>> = [legacy.record({ type: 'key.generated', details: {} })];
      for (let i = 0; i < 100; i += 1) {
        calls.push(a.record({ type: 'token.issued', details: { writer: 'a', i } }));
        calls.push(b.record({ type: 'token.issued', details: { writer: 'b', i } }));
        if (i % 10 === 0) await new Promise((r) => setImmediate(r));
      }
      const results = await Promise.all(calls);
      // One head read per writer: no seq was ever taken by the other.
      expect(storeA.heads).toBe(1);
      expect(storeB.heads).toBe(1);
      expect([...storeA.batches, ...storeB.batches].reduce((x, y) => x + y, 0)).toBe(200);
      expect(await storage.audit.chains()).toEqual(['', 'host-a#1', 'host-a#2']);
      const chainA = await all(storage.audit, 'host-a#1');
      const chainB = await all(storage.audit, 'host-a#2');
      expectOneValidChain(chainA, 100);
      expectOneValidChain(chainB, 100);
      expect(chainA.every((r) => r.chain === 'host-a#1' && r.details.writer === 'a')).toBe(true);
      expect(await all(storage.audit)).toHaveLength(1);
      expect((await storage.audit.head('host-a#2'))?.seq).toBe(100);
      expect(await storage.audit.head('no-such-chain')).toBeUndefined();
      for (const r of results) {
        const [stored] = await storage.audit.list(r.seq, 1, r.chain ?? '');
        expect(stored).toEqual(r);
      }
      // Interleaved as a reader might see them, the whole log verifies chain by chain.
      const mixed = chainA.flatMap((r, i) => [r, chainB[i]!]);
      expect(verifyLog(mixed)).toMatchObject({ ok: true, checked: 200 });
      // A record moved to the other chain (its chain field rewritten) breaks its hash there and leaves a gap here.
      const moved = { ...chainA[10]!, chain: 'host-a#2' };
      const tampered = verifyLog([...chainA.filter((_, i) => i !== 10), ...chainB, moved]);
      expect(tampered.ok).toBe(false);
      expect(tampered.chains.find((c) => c.chain === 'host-a#1')?.verification.problems).toEqual([expect.objectContaining({ seq: 11, kind: 'deleted' })]);
      expect(tampered.chains.find((c) => c.chain === 'host-a#2')?.verification.problems.some((p) => p.kind === 'edited')).toBe(true);
      // Every record the writers wrote is where a reading of the log reaches it.
      expect(await storage.audit.strays(10)).toEqual([]);
    } finally {
      if (otherStorage !== storage) await otherStorage.close();
    }
  });

  test('revocations: the records that revoke a jti, a grant or a client, from every chain, and no other record naming the same string', async () => {
    const a = new AuditLog(storage.audit, { chain: 'host-a#1' });
    const b = new AuditLog(storage.audit, { chain: 'host-b#1' });
    const plain = new AuditLog(storage.audit);
    const want = [
      await a.record({ type: 'token.revoked', client_id: 'c9', details: { jti: 'j1' } }),
      await b.record({ type: 'grant.revoked', client_id: 'c9', details: { grant_id: 'g1' } }),
      await b.record({ type: 'client.disabled', client_id: 'c1', details: {} }),
      await plain.record({ type: 'client.deleted', client_id: 'c1', details: {} }),
      await a.record({ type: 'client.disabled', client_id: 'c1', details: { again: true } }),
    ];
    // Records that name j1, g1 or c1 without revoking it: a different kind, a different field, another id.
    await a.record({ type: 'token.issued', client_id: 'c1', details: { jti: 'j1', grant_id: 'g1' } });
    await a.record({ type: 'token.revoked', client_id: 'c1', details: { jti: 'j2', grant_id: 'g1' } });
    await b.record({ type: 'grant.revoked', client_id: 'c1', details: { grant_id: 'g2', jti: 'j1' } });
    await b.record({ type: 'token.revoked', client_id: 'c9', details: { jti: 'c1' } });
    await plain.record({ type: 'client.registered', client_id: 'c1', details: { grant_id: 'g1' } });
    await plain.record({ type: 'client.disabled', client_id: 'c2', details: { jti: 'j1' } });
    await Promise.all([a.close(), b.close(), plain.close()]);

    const found = await storage.audit.revocations({ jti: 'j1', grantId: 'g1', clientId: 'c1' }, 100);
    // Ordered by chain ('' first), then seq; each exactly as stored (the hash still holds).
    const order = (r: AuditRecord) => [r.chain ?? '', r.seq] as const;
    expect(found).toEqual([...want].sort((x, y) => (order(x)[0] < order(y)[0] ? -1 : order(x)[0] > order(y)[0] ? 1 : order(x)[1] - order(y)[1])));
    for (const r of found) expect(computeHash(r)).toBe(r.hash);
    // Each key alone; the limit; nothing asked, nothing found; hostile strings are values, not syntax.
    expect((await storage.audit.revocations({ jti: 'j1' }, 100)).map((r) => r.type)).toEqual(['token.revoked']);
    expect((await storage.audit.revocations({ grantId: 'g1' }, 100)).map((r) => r.details.grant_id)).toEqual(['g1']);
    expect((await storage.audit.revocations({ clientId: 'c1' }, 100)).map((r) => r.type).sort()).toEqual(['client.deleted', 'client.disabled', 'client.disabled']);
    expect(await storage.audit.revocations({ clientId: 'c1' }, 2)).toHaveLength(2);
    expect(await storage.audit.revocations({}, 100)).toEqual([]);
    // A person's revocation (subjects revoke), found by the sub it names, and not by a client id or jti of that text.
    const person = new AuditLog(storage.audit, { chain: 'host-c#1' });
    const revokedPerson = await person.record({ type: 'subject.revoked', sub: 'did:pkh:eip155:1:0xAbC', details: { grants: 1, sessions: 0 } });
    await person.record({ type: 'login.succeeded', sub: 'did:pkh:eip155:1:0xAbC', details: {} });
    await person.close();
    expect(await storage.audit.revocations({ sub: 'did:pkh:eip155:1:0xAbC' }, 100)).toEqual([revokedPerson]);
    expect(await storage.audit.revocations({ jti: 'did:pkh:eip155:1:0xAbC', clientId: 'did:pkh:eip155:1:0xAbC' }, 100)).toEqual([]);
    expect(await storage.audit.revocations({ sub: 'did:pkh:eip155:1:0xabc' }, 100)).toEqual([]);
    for (const hostile of ["' OR 1=1 --", '%', '{"$ne":null}', 'j'.repeat(5000)]) {
      expect(await storage.audit.revocations({ jti: hostile, grantId: hostile, clientId: hostile, sub: hostile }, 100)).toEqual([]);
    }
  });

  test('revocations leave out records no reading of the log reaches (a seq below 1, an unknown chain)', async () => {
    const log = new AuditLog(storage.audit, { chain: 'host-a#1' });
    const real = await log.record({ type: 'token.revoked', details: { jti: 'j1' } });
    await log.close();
    const planted = { ...real, seq: 0, hash: 'x' };
    if (storage instanceof SqliteStorage) {
      storage.db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)').run('host-a#1', 0, JSON.stringify(planted));
      storage.db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)').run('bad/chain', 5, JSON.stringify({ ...real, chain: 'bad/chain', seq: 5 }));
    } else if (storage instanceof MongoStorage) {
      await storage.db.collection('audit_events').insertOne({ _id: 0 as never, ...planted, chain: undefined, details: JSON.stringify(planted.details), revokes: 'j1' });
    } else if (storage.audit instanceof FileAuditStore) {
      appendFileSync(storage.audit.path, `${JSON.stringify(planted)}\n`);
    } else {
      throw new Error(`no way to plant a record in the ${storage.kind} store`);
    }
    expect(await storage.audit.revocations({ jti: 'j1' }, 100)).toEqual([real]);
  });

  test('invalid events are refused before anything is written', async () => {
    const log = new AuditLog(storage.audit);
    await expect(log.record({ type: 'Not A Type' })).rejects.toBeInstanceOf(InvalidAuditEventError);
    await expect(log.record({ type: 'token.issued', details: { n: 10n } as unknown as Record<string, unknown> })).rejects.toBeInstanceOf(InvalidAuditEventError);
    await expect(log.record({ type: 'token.issued', details: { at: new Date() } })).rejects.toThrow(/toISOString/);
    expect(await storage.audit.head()).toBeUndefined();
    await log.record({ type: 'token.issued' });
    expect((await storage.audit.head())?.seq).toBe(1);
  });

  test('after close() nothing more is accepted, and what was queued is written', async () => {
    const log = new AuditLog(storage.audit);
    const queued = log.record({ type: 'token.issued' });
    await log.close();
    await expect(queued).resolves.toMatchObject({ seq: 1 });
    await expect(log.record({ type: 'token.issued' })).rejects.toBeInstanceOf(AuditLogClosedError);
  });
});

describe('AuditStore.revocations reads an index, not the log', () => {
  test('SQLite: through audit_records_revocations, named (without it the lookup fails instead of reading every record)', async () => {
    const storage = new SqliteStorage({ dataDir: tempDir('agentauth-sqlite-') });
    await storage.init();
    try {
      const log = new AuditLog(storage.audit);
      await log.record({ type: 'grant.revoked', details: { grant_id: 'g1' } });
      await log.close();
      const { sql } = storage.db.prepare("SELECT sql FROM sqlite_schema WHERE name = 'audit_records_revocations'").get() as { sql: string };
      const plan = (storage.db.prepare("EXPLAIN QUERY PLAN SELECT seq FROM audit_records INDEXED BY audit_records_revocations WHERE (CASE WHEN json_valid(record) THEN json_extract(record, '$.type') END) IN ('token.revoked', 'grant.revoked', 'client.deleted', 'client.disabled', 'subject.revoked') AND (CASE (CASE WHEN json_valid(record) THEN json_extract(record, '$.type') END) WHEN 'token.revoked' THEN json_extract(record, '$.details.jti') WHEN 'grant.revoked' THEN json_extract(record, '$.details.grant_id') WHEN 'subject.revoked' THEN json_extract(record, '$.sub') ELSE json_extract(record, '$.client_id') END) IN (?)").all('g1') as Array<{ detail: string }>).map((r) => r.detail);
      expect(plan.join(' ')).toContain('USING INDEX audit_records_revocations');
      storage.db.exec('DROP INDEX audit_records_revocations');
      try {
        await expect(storage.audit.revocations({ grantId: 'g1' }, 10)).rejects.toThrow(/no such index/);
      } finally {
        storage.db.exec(sql);
      }
      expect(await storage.audit.revocations({ grantId: 'g1' }, 10)).toHaveLength(1);
    } finally {
      await storage.close();
    }
  });

  test('SQLite: a row that is not JSON neither stops its insert nor the index being built on a file that holds one', async () => {
    const dataDir = tempDir('agentauth-sqlite-');
    const first = new SqliteStorage({ dataDir });
    await first.init();
    try {
      const log = new AuditLog(first.audit);
      await log.record({ type: 'grant.revoked', details: { grant_id: 'g1' } });
      await log.close();
      // Damage written while the index exists, and before it exists (a file from before it, reopened).
      first.db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)').run('', 50, 'x');
      first.db.exec('DROP INDEX audit_records_revocations');
      first.db.exec('PRAGMA user_version = 1'); // as a file from before the index was
      first.db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)').run('', 60, '{"type":"grant.revoked"');
    } finally {
      await first.close();
    }
    const second = new SqliteStorage({ dataDir });
    await second.init();
    try {
      expect(second.db.prepare("SELECT name FROM sqlite_schema WHERE name = 'audit_records_revocations'").get()).toBeDefined();
      expect((await second.audit.revocations({ grantId: 'g1' }, 10)).map((r) => r.seq)).toEqual([1]);
    } finally {
      await second.close();
    }
  });

  test('MongoDB: records carry what they revoke beside the record (never in it), under an index; records stored before the field are still found', async () => {
    const storage = new MongoStorage({ uri: mongoUri(), dbName: uniqueDbName('revocations'), timeoutMs: 3000 });
    await storage.init();
    try {
      const log = new AuditLog(storage.audit);
      const revoked = await log.record({ type: 'token.revoked', details: { jti: 'j1' } });
      const issued = await log.record({ type: 'token.issued', details: { jti: 'j1' } });
      await log.close();
      const col = storage.db.collection('audit_events');
      expect(await col.findOne({ _id: revoked.seq as never })).toMatchObject({ revokes: 'j1' });
      expect(await col.findOne({ _id: issued.seq as never })).not.toHaveProperty('revokes');
      expect((await col.listIndexes().toArray()).map((i) => i.name)).toContain('type_1_revokes_1');
      // Read back, the record is what was hashed: the index field is not part of it.
      expect(await storage.audit.list(1, 10)).toEqual([revoked, issued]);
      // A revocation stored by an earlier version (no revokes field) is matched on its details.
      await col.updateOne({ _id: revoked.seq as never }, { $unset: { revokes: '' } });
      expect(await storage.audit.revocations({ jti: 'j1' }, 10)).toEqual([revoked]);
      expect(await storage.audit.revocations({ jti: 'j2' }, 10)).toEqual([]);
    } finally {
      await storage.db.dropDatabase().catch(() => undefined);
      await storage.close();
    }
  });

  test('MongoDB: a revokes field edited to another value (not hashed) makes the record undecodable, so audit verify fails it', async () => {
    const storage = new MongoStorage({ uri: mongoUri(), dbName: uniqueDbName('revokesedit'), timeoutMs: 3000 });
    await storage.init();
    try {
      const log = new AuditLog(storage.audit);
      const revoked = await log.record({ type: 'token.revoked', details: { jti: 'j1' } });
      const issued = await log.record({ type: 'token.issued', details: { jti: 'j1' } });
      await log.close();
      const col = storage.db.collection('audit_events');
      // Edited, the index no longer leads agentauth verify to the revocation, while the record's hash still holds:
      // reading the record is what must fail.
      await col.updateOne({ _id: revoked.seq as never }, { $set: { revokes: 'another' } });
      expect(await storage.audit.revocations({ jti: 'j1' }, 10)).toEqual([]);
      const [first, second] = await storage.audit.list(1, 10);
      expect(first).toMatchObject({ seq: revoked.seq, undecodable: 'its revokes field does not name what the record revokes' });
      expect(second).toEqual(issued);
      // Planted on a record that revokes nothing, the same.
      await col.updateOne({ _id: revoked.seq as never }, { $set: { revokes: 'j1' } });
      await col.updateOne({ _id: issued.seq as never }, { $set: { revokes: 'j1' } });
      expect(await storage.audit.list(1, 10)).toEqual([revoked, expect.objectContaining({ seq: issued.seq, undecodable: 'its revokes field does not name what the record revokes' })]);

      // A field named twice: FerretDB refuses to store one (MongoDB stores what it is sent), so the bytes the server
      // hands back are made here from the record as stored: its _id, then a second "type" before the hashed one.
      await col.updateOne({ _id: issued.seq as never }, { $unset: { revokes: '' } });
      const stored = Buffer.from((await col.findOne({ _id: issued.seq as never }, { raw: true })) as unknown as Uint8Array);
      expect(auditRecordFromBytes(stored)).toEqual(issued);
      const idElement = BSON.serialize({ _id: issued.seq }).subarray(4, -1);
      expect(stored.subarray(4, 4 + idElement.length)).toEqual(idElement);
      const typeElement = BSON.serialize({ type: 'x.y' }).subarray(4, -1);
      const doubled = Buffer.concat([Buffer.alloc(4), stored.subarray(4, 4 + idElement.length), typeElement, stored.subarray(4 + idElement.length)]);
      doubled.writeInt32LE(doubled.length, 0);
      expect(BSON.deserialize(doubled)).toMatchObject({ type: 'token.issued' }); // the driver reads the last
      // A string that is not UTF-8 (MongoDB stores what it is sent): undecodable, read at its _id, not a thrown error.
      const notUtf8 = Buffer.from(stored);
      notUtf8[notUtf8.indexOf('token.issued')] = 0xff;
      expect(auditRecordFromBytes(notUtf8)).toMatchObject({ seq: issued.seq, undecodable: expect.any(String) });
      expect(auditRecordFromBytes(doubled)).toMatchObject({
        seq: issued.seq,
        undecodable: 'its stored document is not the one agentauth wrote (a field named twice, or a value stored as another BSON type)',
      });
    } finally {
      await storage.db.dropDatabase().catch(() => undefined);
      await storage.close();
    }
  });
});

describe('AuditLog when the store fails', () => {
  test('record() rejects with StorageUnavailableError when MongoDB is gone', async () => {
    const storage = new MongoStorage({ uri: mongoUri(), dbName: uniqueDbName('auditdown'), timeoutMs: 1000 });
    await storage.init();
    const log = new AuditLog(storage.audit);
    await log.record({ type: 'token.issued' });
    await storage.db.dropDatabase();
    await storage.close();
    const failing = await Promise.allSettled([log.record({ type: 'token.revoked' }), log.record({ type: 'token.revoked' })]);
    for (const r of failing) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toBeInstanceOf(StorageUnavailableError);
    }
  });

  test('each record() rejects with the store error; a later record re-reads the head and succeeds', async () => {
    const storage = FACTORIES[0]!.create('flaky');
    const inner = storage.audit;
    let failInserts = 1;
    let heads = 0;
    const flaky: AuditStore = {
      head: () => {
        heads += 1;
        return inner.head();
      },
      insertBatch: async (records) => {
        if (failInserts > 0) {
          failInserts -= 1;
          throw new StorageUnavailableError('MongoDB audit.insert failed (connection reset)');
        }
        return inner.insertBatch(records);
      },
      list: (from, limit) => inner.list(from, limit),
      chains: () => inner.chains(),
      strays: (limit) => inner.strays(limit),
      revocations: (keys, limit) => inner.revocations(keys, limit),
      checkpoints: () => inner.checkpoints(),
      prune: (checkpoint, batch) => inner.prune(checkpoint, batch),
    };
    const log = new AuditLog(flaky);
    const results = await Promise.allSettled([log.record({ type: 'token.issued' }), log.record({ type: 'token.issued' })]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect((results[0] as PromiseRejectedResult).reason.message).toContain('connection reset');
    expect(await inner.head()).toBeUndefined();
    await expect(log.record({ type: 'token.revoked' })).resolves.toMatchObject({ seq: 1 });
    expect(heads).toBe(2);
    await storage.close();
  });

  test('record() resolves only once its record is in the store', async () => {
    const storage = FACTORIES[0]!.create('gated');
    const inner = storage.audit;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const gated: AuditStore = {
      head: () => inner.head(),
      insertBatch: async (records) => {
        await gate;
        return inner.insertBatch(records);
      },
      list: (from, limit) => inner.list(from, limit),
      chains: () => inner.chains(),
      strays: (limit) => inner.strays(limit),
      revocations: (keys, limit) => inner.revocations(keys, limit),
      checkpoints: () => inner.checkpoints(),
      prune: (checkpoint, batch) => inner.prune(checkpoint, batch),
    };
    const log = new AuditLog(gated);
    let settled = false;
    const pending = log.record({ type: 'token.issued' }).then((r) => {
      settled = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(settled).toBe(false);
    release();
    const record = await pending;
    expect((await inner.head())?.hash).toBe(record.hash);
    await storage.close();
  });

  test('a writer that keeps losing the race gives up after maxAttempts with StorageUnavailableError', async () => {
    const storage = FACTORIES[0]!.create('contended');
    const inner = storage.audit;
    let stolen = 0;
    // Another writer that always gets there first: before each of our inserts, it appends a record of its own.
    const rival = new AuditLog(inner);
    const contended: AuditStore = {
      head: () => inner.head(),
      insertBatch: async (records) => {
        await rival.record({ type: 'token.issued', details: { rival: (stolen += 1) } });
        return inner.insertBatch(records);
      },
      list: (from, limit) => inner.list(from, limit),
      chains: () => inner.chains(),
      strays: (limit) => inner.strays(limit),
      revocations: (keys, limit) => inner.revocations(keys, limit),
      checkpoints: () => inner.checkpoints(),
      prune: (checkpoint, batch) => inner.prune(checkpoint, batch),
    };
    const log = new AuditLog(contended, { maxAttempts: 5 });
    await expect(log.record({ type: 'token.revoked' })).rejects.toThrow(StorageUnavailableError);
    expect(stolen).toBe(5);
    expectOneValidChain(await all(inner), 5);
    await storage.close();
  });

  test('a write that was applied but reported as a conflict (a retried insert) is not written twice', async () => {
    const storage = FACTORIES[0]!.create('retried');
    const inner = storage.audit;
    let first = true;
    const retried: AuditStore = {
      head: () => inner.head(),
      insertBatch: async (records) => {
        if (first) {
          // The first insert lands, but the answer is lost and the retry finds the seq taken.
          first = false;
          await inner.insertBatch(records.slice(0, 1));
          return 0;
        }
        return inner.insertBatch(records);
      },
      list: (from, limit) => inner.list(from, limit),
      chains: () => inner.chains(),
      strays: (limit) => inner.strays(limit),
      revocations: (keys, limit) => inner.revocations(keys, limit),
      checkpoints: () => inner.checkpoints(),
      prune: (checkpoint, batch) => inner.prune(checkpoint, batch),
    };
    const log = new AuditLog(retried);
    const [a, b] = await Promise.all([log.record({ type: 'token.issued', details: { n: 1 } }), log.record({ type: 'token.issued', details: { n: 2 } })]);
    expect([a.seq, b.seq]).toEqual([1, 2]);
    const stored = await all(inner);
    expectOneValidChain(stored, 2);
    expect(stored.map((r) => r.details.n)).toEqual([1, 2]);
    await storage.close();
  });
});

describe('FileAuditStore (the embedded store\'s audit.jsonl): records no reading reaches', () => {
  test('a line below seq 1 or without a seq is named; what writers append is not; the limit holds', async () => {
    const dir = tempDir('agentauth-file-audit-');
    const store = new FileAuditStore(dir);
    const log = new AuditLog(store, { chain: 'host-f#1' });
    await Promise.all([0, 1, 2].map((i) => log.record({ type: 'token.issued', details: { i } })));
    await log.close();
    await store.close();
    expect(await store.strays(10)).toEqual([]);
    const [first] = await store.list(1, 1, 'host-f#1');
    const { seq: _seq, ...noSeq } = first!;
    appendFileSync(join(dir, 'audit.jsonl'), `${JSON.stringify({ ...first, seq: 0 })}\n${JSON.stringify(noSeq)}\n${JSON.stringify({ ...first, seq: -3 })}\n`);
    expect(await store.strays(10)).toEqual(['record 4 of audit.jsonl (seq 0)', 'record 5 of audit.jsonl (seq missing)', 'record 6 of audit.jsonl (seq -3)']);
    expect(await store.strays(2)).toHaveLength(2);
    // The chain itself still reads whole.
    expectOneValidChain(await all(store, 'host-f#1'), 3);
  });
});
