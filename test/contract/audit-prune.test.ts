import { AuditCheckpointError } from '../../adapters/errors.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AuditCheckpoint, AuditRecord, AuditStore, Storage } from '../../adapters/types.js';
import { LogVerifier } from '../../server/audit/chain.js';
import { AuditLog } from '../../server/audit/log.js';
import { mongoFactory, mongoUri, sqliteFactory } from '../support/storages.js';

/** Every record of `chain` from `from` on, ascending. */
async function all(store: AuditStore, chain: string, from = 1): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (let next = from; ;) {
    const page = await store.list(next, 100, chain);
    if (page.length === 0) return out;
    out.push(...page);
    next = page.at(-1)!.seq + 1;
  }
}

const checkpointOf = (r: AuditRecord, prunedAt = new Date().toISOString()): AuditCheckpoint => ({ chain: r.chain ?? '', seq: r.seq, hash: r.hash, time: r.time, pruned_at: prunedAt });

/** Writes `n` records to `chain` (undefined: the default chain). */
async function fill(storage: Storage, n: number, chain?: string): Promise<AuditRecord[]> {
  const log = new AuditLog(storage.audit, chain === undefined ? {} : { chain });
  const out: AuditRecord[] = [];
  for (let i = 0; i < n; i += 1) out.push(await log.record({ type: 'token.revoked', client_id: `c${i}`, details: { jti: `jti-${chain ?? 'default'}-${i}`, format: 'jwt' } }));
  await log.close();
  return out;
}

/** Verifies the stored log as `audit verify` does: each pruned chain from its checkpoint. */
async function verifyStored(store: AuditStore): Promise<ReturnType<LogVerifier['result']>> {
  const verifier = new LogVerifier();
  const checkpoints = new Map((await store.checkpoints()).map((c) => [c.chain, c]));
  for (const c of checkpoints.values()) verifier.startAfter(c.chain, c.seq, c.hash);
  for (const chain of await store.chains()) for (const r of await all(store, chain, (checkpoints.get(chain)?.seq ?? 0) + 1)) verifier.push(r);
  return verifier.result();
}

describe.each([sqliteFactory, mongoFactory])('audit pruning on $name storage', (factory) => {
  let storage: Storage;

  beforeEach(async () => {
    storage = factory.create('auditprune');
    await storage.init();
  });
  afterEach(async () => {
    if (storage instanceof MongoStorage) await storage.db.dropDatabase().catch(() => undefined);
    await storage.close();
  });

  test('prune removes a chain\'s records through the checkpoint, in batches, and the rest verifies from it', async () => {
    const defaults = await fill(storage, 23);
    const named = await fill(storage, 7, 'api-1:3000#0');
    // Batches of 5 over seq 1..17: four writes.
    expect(await storage.audit.prune(checkpointOf(defaults[16]!), 5)).toBe(17);
    expect((await all(storage.audit, '')).map((r) => r.seq)).toEqual([18, 19, 20, 21, 22, 23]);
    // The other chain is untouched, and both still verify (the pruned one from its checkpoint).
    expect(await all(storage.audit, 'api-1:3000#0')).toHaveLength(7);
    expect(await storage.audit.checkpoints()).toEqual([checkpointOf(defaults[16]!, (await storage.audit.checkpoints())[0]!.pruned_at)]);
    expect(await verifyStored(storage.audit)).toMatchObject({ ok: true, checked: 13 });
    // The head stays where it was: the next record continues the chain.
    const next = await fill(storage, 1);
    expect(next[0]).toMatchObject({ seq: 24, prev_hash: defaults[22]!.hash });
    // Revocation lookups see only what is kept.
    expect(await storage.audit.revocations({ jti: 'jti-default-3' }, 10)).toEqual([]);
    expect(await storage.audit.revocations({ jti: 'jti-default-20' }, 10)).toHaveLength(1);
    expect(named).toHaveLength(7);
  });

  test('without its checkpoint, the pruned chain fails verification (the removal is not silent)', async () => {
    const records = await fill(storage, 6);
    await storage.audit.prune(checkpointOf(records[2]!), 100);
    const fromOne = new LogVerifier();
    for (const r of await all(storage.audit, '')) fromOne.push(r);
    expect(fromOne.result().chains[0]!.verification.problems).toEqual([expect.objectContaining({ seq: 1, kind: 'deleted' })]);
    // A checkpoint naming another hash breaks the first link kept.
    const forged = new LogVerifier();
    forged.startAfter('', 3, 'f'.repeat(64));
    for (const r of await all(storage.audit, '', 4)) forged.push(r);
    expect(forged.result().chains[0]!.verification.problems).toEqual([expect.objectContaining({ seq: 4, kind: 'broken-link' })]);
  });

  test('a lower checkpoint never replaces a higher one, also when 50 prunes race (three rounds, two connections)', async () => {
    const other = storage instanceof SqliteStorage ? new SqliteStorage({ dataDir: storage.dataDir }) : new MongoStorage({ uri: mongoUri(), dbName: (storage as MongoStorage).db.databaseName, timeoutMs: 3000 });
    await other.init();
    try {
      for (const round of [1, 2, 3]) {
        const chain = `race-${round}:3000#0`;
        const records = await fill(storage, 60, chain);
        const seqs = Array.from({ length: 50 }, (_, i) => ((i * 37 + round) % 50) + 1); // 1..50 in a scrambled order
        await Promise.all(seqs.map((seq, i) => (i % 2 ? other : storage).audit.prune(checkpointOf(records[seq - 1]!), 7)));
        const checkpoint = (await storage.audit.checkpoints()).find((c) => c.chain === chain);
        expect(checkpoint).toMatchObject({ chain, seq: 50, hash: records[49]!.hash });
        // Whatever order they ran in, every record through the highest checkpoint is gone and the rest verifies.
        expect((await all(storage.audit, chain)).map((r) => r.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 51 + i));
        // An older prune after it changes nothing.
        expect(await storage.audit.prune(checkpointOf(records[9]!), 7)).toBe(0);
        expect((await storage.audit.checkpoints()).find((c) => c.chain === chain)!.seq).toBe(50);
      }
      expect(await verifyStored(storage.audit)).toMatchObject({ ok: true, checked: 30 });
    } finally {
      await other.close();
    }
  });

  test('an altered checkpoint is refused, not trusted', async () => {
    const records = await fill(storage, 4);
    await storage.audit.prune(checkpointOf(records[1]!), 10);
    if (storage instanceof SqliteStorage) {
      storage.db.prepare("UPDATE audit_checkpoints SET record = json_set(record, '$.hash', 'not-a-hash')").run();
    } else {
      await (storage as MongoStorage).db.collection('audit_checkpoints').updateOne({}, { $set: { hash: 'not-a-hash' } });
    }
    await expect(storage.audit.checkpoints()).rejects.toBeInstanceOf(AuditCheckpointError);
  });
});

test('a SQLite file opened read-only before any server created the checkpoint table has no checkpoints', async () => {
  const storage = sqliteFactory.create('x') as SqliteStorage;
  await storage.init();
  await fill(storage, 2);
  storage.db.exec('DROP TABLE audit_checkpoints');
  await storage.close();
  const readOnly = new SqliteStorage({ dataDir: storage.dataDir, readOnly: true });
  await readOnly.init();
  try {
    expect(await readOnly.audit.checkpoints()).toEqual([]);
    expect(await all(readOnly.audit, '')).toHaveLength(2);
  } finally {
    await readOnly.close();
  }
});
