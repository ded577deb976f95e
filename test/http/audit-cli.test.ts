import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';

import { ObjectId } from 'mongodb';
import type { Collection } from 'mongodb';

import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AuditRecord } from '../../adapters/types.js';
import { computeHash } from '../../server/audit/chain.js';
import { AuditLog } from '../../server/audit/log.js';
import { newKek, runCli, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

/** How MongoAuditStore keeps a record: _id = seq, details as JSON text. */
interface AuditDoc {
  _id: number;
  time: string;
  type: string;
  client_id?: string;
  sub?: string;
  details: string;
  prev_hash: string;
  hash: string;
}

const toDoc = ({ seq, details, ...rest }: AuditRecord): AuditDoc => ({ _id: seq, ...rest, details: JSON.stringify(details) });
const toRecord = ({ _id, details, ...rest }: AuditDoc): AuditRecord => ({ seq: _id, ...rest, details: JSON.parse(details) as Record<string, unknown> });
const rehash = (r: AuditRecord): AuditRecord => ({ ...r, hash: computeHash(r) });

describe('agentauth audit tail|export|verify against MongoDB', () => {
  const dbName = uniqueDbName('auditcli');
  const env = () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: dbName });
  const dir = tempDir('agentauth-audit-');
  let storage: MongoStorage;
  let events: Collection<AuditDoc>;
  let original: AuditDoc[];
  let written: AuditRecord[];

  const verify = (...args: string[]) => runCli(['audit', 'verify', ...args], env());

  beforeAll(async () => {
    storage = new MongoStorage({ uri: mongoUri(), dbName, timeoutMs: 3000 });
    await storage.init();
    const log = new AuditLog(storage.audit);
    written = [];
    written.push(await log.record({ type: 'client.registered', client_id: 'agent-1', details: { tier: 'default', 'https://api.example.com': ['read'] } }));
    written.push(...(await Promise.all([
      log.record({ type: 'token.issued', client_id: 'agent-1', sub: 'user-1', details: { jti: 'j-1' } }),
      log.record({ type: 'token.issued', client_id: 'agent-1', sub: 'user-2', details: { jti: 'j-2' } }),
      log.record({ type: 'token.revoked', client_id: 'agent-1', details: { jti: 'j-1', reason: 'logout' } }),
    ])));
    written.push(await log.record({ type: 'key.rotated', details: { kid: 'k-2', replaces: 'k-1' } }));
    written.push(await log.record({ type: 'client.deleted', client_id: 'agent-1' }));
    await log.close();
    events = storage.db.collection<AuditDoc>('audit_events');
    original = await events.find({}).sort({ _id: 1 }).toArray();
    expect(original).toHaveLength(6);
  });

  /** Puts the stored log back as it was written. */
  async function restore(): Promise<void> {
    await events.deleteMany({});
    await events.insertMany(original);
  }

  afterEach(restore);

  afterAll(async () => {
    await storage.db.dropDatabase().catch(() => undefined);
    await storage.close();
  });

  const head = () => written.at(-1)!;
  const okLine = (n: number, seq: number, hash: string) => `audit log OK: ${n} records, head seq ${seq} hash ${hash}\n`;

  test('verify: an intact log exits 0 with the OK line and its head; stderr only says which store it read', async () => {
    const res = await verify();
    // No data directory: nothing of a MongoDB store lives in AGENTAUTH_DATA_DIR.
    expect(res.stderr).toBe(`agentauth: store mongodb ${mongoUri().replace(/\/[^/]*$/, '')}/${dbName}, issuer http://localhost:3000 (default: ISSUER is not set)\n`);
    expect(res.stdout).toBe(okLine(6, 6, head().hash));
    expect(res.code).toBe(0);
  });

  test('the context of a MongoDB store names no data directory (data_dir null): nothing of it is in AGENTAUTH_DATA_DIR', async () => {
    const res = await runCli(['keys', 'list', '--json'], env());
    expect(res.code).toBe(0);
    expect((JSON.parse(res.stdout) as { context: unknown }).context).toEqual({
      store: 'mongodb',
      location: `${mongoUri().replace(/\/[^/]*$/, '')}/${dbName}`,
      data_dir: null,
      issuer: 'http://localhost:3000',
      issuer_source: 'default',
    });
    expect(res.stderr).not.toContain('data directory');
  });

  test('tail -n 2 prints the last two records as JSON lines; the default prints up to 20', async () => {
    const two = await runCli(['audit', 'tail', '-n', '2'], env());
    expect(two.code).toBe(0);
    const lines = two.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    expect(lines).toEqual(written.slice(4));
    expect(two.stdout.split('\n')[0]).toMatch(/^\{"seq":5,"time":"[^"]+","type":"key.rotated","details":/);

    const all = await runCli(['audit', 'tail'], env());
    expect(all.code).toBe(0);
    expect(all.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord)).toEqual(written);

    const long = await runCli(['audit', 'tail', '--lines', '3'], env());
    expect(long.stdout.trim().split('\n').map((l) => (JSON.parse(l) as AuditRecord).seq)).toEqual([4, 5, 6]);
  });

  test('tail refuses a line count that is not a positive whole number (a usage error: exit 2)', async () => {
    const res = await runCli(['audit', 'tail', '-n', '0'], env());
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('at least 1');
    expect(res.stdout).toBe('');
  });

  test('export --out writes every record; verify --file checks it; export to stdout is the same', async () => {
    const file = join(dir, 'export.jsonl');
    const res = await runCli(['audit', 'export', '--out', file], env());
    expect(res.code).toBe(0);
    expect(res.stderr).toContain(`exported 6 audit records to ${file}; head seq 6 hash ${head().hash}`);
    const text = readFileSync(file, 'utf8');
    expect(text.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord)).toEqual(written);

    const checked = await runCli(['audit', 'verify', '--file', file], {});
    expect(checked.stdout).toBe(okLine(6, 6, head().hash));
    expect(checked.code).toBe(0);

    const stdout = await runCli(['audit', 'export'], env());
    expect(stdout.code).toBe(0);
    expect(stdout.stdout).toBe(text);

    // An --out that cannot be written is a usage error naming it, before anything is read; no file is left behind.
    for (const [out, message] of [
      [dir, `agentauth: --out ${dir} is a directory; name the file to write\n`],
      [join(dir, 'missing', 'x.jsonl'), `agentauth: --out: directory ${join(dir, 'missing')} does not exist\n`],
    ]) {
      const refused = await runCli(['audit', 'export', '--out', out!], env());
      expect({ out, code: refused.code }).toEqual({ out, code: 2 });
      expect(refused.stderr.endsWith(message!)).toBe(true);
      const keys = await runCli(['keys', 'export', '--public', '--out', out!], { ...env(), ISSUER: 'https://as.example.com' });
      expect({ out, code: keys.code }).toEqual({ out, code: 2 });
      expect(keys.stderr.endsWith(message!)).toBe(true);
    }
  });

  describe('tampering in MongoDB is detected', () => {
    test('an edited event (details changed, hash left) → exit 1 naming the seq and "edited"', async () => {
      await events.updateOne({ _id: 3 }, { $set: { details: JSON.stringify({ jti: 'j-999' }) } });
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 3: edited: content does not match its hash');
      expect(res.stdout).toContain('audit log FAILED: 1 problem in 6 records');
    });

    test('an event rewritten and re-hashed → the next link breaks', async () => {
      const forged = rehash({ ...toRecord(original[2]!), details: { jti: 'j-999' } });
      await events.replaceOne({ _id: 3 }, toDoc(forged));
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 4: broken-link');
    });

    test('details that are no longer JSON → edited at that seq, the rest still verified', async () => {
      await events.updateOne({ _id: 4 }, { $set: { details: '{"jti":' } });
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 4: edited: cannot be decoded');
      expect(res.stdout).toContain('seq 4: deleted');
    });

    test('a deleted event → exit 1 naming the seq and "deleted"', async () => {
      await events.deleteOne({ _id: 3 });
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 3: deleted: missing');
      expect(res.stdout).not.toContain('broken-link');
    });

    test('a forged event spliced in, the rest renumbered and re-hashed → "inserted"', async () => {
      const records = original.map(toRecord);
      const forged = rehash({ ...records[2]!, type: 'client.registered', client_id: 'evil', details: { forged: true }, prev_hash: records[1]!.hash });
      const shifted = records.slice(2).map((r) => rehash({ ...r, seq: r.seq + 1 }));
      await events.deleteMany({});
      await events.insertMany([...records.slice(0, 2), forged, ...shifted].map(toDoc));
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 3: inserted: not part of the chain: seq 4 links past it to seq 2');
    });

    test('a forged event spliced in with the rest only renumbered → "inserted"', async () => {
      const records = original.map(toRecord);
      const forged = rehash({ ...records[2]!, details: { forged: true }, prev_hash: records[1]!.hash });
      await events.deleteMany({});
      await events.insertMany([...records.slice(0, 2), forged, ...records.slice(2).map((r) => ({ ...r, seq: r.seq + 1 }))].map(toDoc));
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toMatch(/seq 4: inserted: seq 3 appears more than once/);
    });

    test('two events swapped (contents exchanged between seqs) → "reordered"', async () => {
      const { _id: _a, ...third } = original[2]!;
      const { _id: _b, ...fourth } = original[3]!;
      await events.replaceOne({ _id: 3 }, fourth);
      await events.replaceOne({ _id: 4 }, third);
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 4: reordered');
      expect(res.stdout).toContain('seq 3: edited: seq was changed: its hash is that of seq 4');
    });

    test('a field added to a stored event → edited', async () => {
      await events.updateOne({ _id: 2 }, { $set: { note: 'hello' } });
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 2: edited: malformed: unexpected field note');
    });

    test('records stored outside every chain (seq 0, an ObjectId, a chain name agentauth does not write, a chain no record names) → exit 1 naming each', async () => {
      const raw = storage.db.collection<{ _id: unknown; [field: string]: unknown }>('audit_events');
      const { _id: _x, ...planted } = toDoc(rehash({ ...toRecord(original[1]!), details: { jti: 'planted' } }));
      const objectId = new ObjectId();
      await raw.insertMany([
        { ...planted, _id: 0 },
        { ...planted, _id: objectId },
        { ...planted, _id: 'not a chain/000000000000001', chain: 'not a chain', seq: 1 },
        { ...planted, _id: 'ghost/000000000000001', seq: 1 },
      ]);
      const res = await verify();
      expect(res.code).toBe(1);
      const strays = res.stdout.split('\n').filter((l) => l.includes('stored outside every chain'));
      // In _id order, which BSON sorts by type first (numbers, strings, then ObjectIds).
      expect(strays.map((l) => l.slice(0, l.indexOf(': edited')))).toEqual(['_id 0', '_id "ghost/000000000000001"', '_id "not a chain/000000000000001"', `_id ${objectId.toHexString()}`]);
      // The chain itself is intact: the strays are the only problems.
      expect(res.stdout).toContain('audit log FAILED: 4 problems in 6 records');
      const json = await verify('--json');
      expect(json.code).toBe(1);
      const body = JSON.parse(json.stdout) as { ok: boolean; records: number; problems: { detail: string }[] };
      expect({ ok: body.ok, records: body.records, problems: body.problems.length }).toEqual({ ok: false, records: 6, problems: 4 });
    });

    test('a record moved to seq 0 → "deleted" where it was, and named where it went', async () => {
      const { _id: _three, ...third } = original[2]!;
      await events.deleteOne({ _id: 3 });
      await events.insertOne({ ...third, _id: 0 });
      const res = await verify();
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 3: deleted: missing');
      expect(res.stdout).toContain('_id 0: edited: stored outside every chain');
    });

    test('truncation leaves a valid chain: only the head in the OK line shows it', async () => {
      await events.deleteOne({ _id: 6 });
      const res = await verify();
      expect(res.code).toBe(0);
      expect(res.stdout).toBe(okLine(5, 5, written[4]!.hash));
      expect(res.stdout).not.toContain(head().hash);
    });
  });

  describe('tampering with an exported file is detected', () => {
    let lines: string[];

    beforeAll(async () => {
      const file = join(dir, 'pristine.jsonl');
      const res = await runCli(['audit', 'export', '--out', file], env());
      expect(res.code).toBe(0);
      lines = readFileSync(file, 'utf8').trim().split('\n');
      expect(lines).toHaveLength(6);
    });

    const verifyLines = async (name: string, content: string[]) => {
      const file = join(dir, name);
      writeFileSync(file, `${content.join('\n')}\n`);
      return runCli(['audit', 'verify', '--file', file], {});
    };

    test('an edited line → exit 1, "edited"', async () => {
      const edited = [...lines];
      edited[2] = edited[2]!.replace('"j-2"', '"j-3"');
      expect(edited[2]).not.toBe(lines[2]);
      const res = await verifyLines('edited.jsonl', edited);
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 3: edited');
    });

    test('a deleted line → exit 1, "deleted"', async () => {
      const res = await verifyLines('deleted.jsonl', lines.filter((_, i) => i !== 3));
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 4: deleted');
    });

    test('two lines swapped → exit 1, "reordered"', async () => {
      const swapped = [lines[0]!, lines[2]!, lines[1]!, ...lines.slice(3)];
      const res = await verifyLines('swapped.jsonl', swapped);
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 2: reordered: comes after seq 3');
    });

    test('a line duplicated → exit 1, "inserted"', async () => {
      const res = await verifyLines('dup.jsonl', [...lines.slice(0, 3), lines[2]!, ...lines.slice(3)]);
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('seq 3: inserted');
    });

    test('a line that is not JSON → exit 1 naming the line', async () => {
      const broken = [...lines];
      broken[1] = broken[1]!.slice(0, 20);
      const res = await verifyLines('broken.jsonl', broken);
      expect(res.code).toBe(1);
      expect(res.stdout).toContain('line 2: edited: not JSON');
    });

    test('an untouched copy still verifies', async () => {
      const res = await verifyLines('copy.jsonl', lines);
      expect(res.code).toBe(0);
      expect(res.stdout).toBe(okLine(6, 6, head().hash));
    });
  });
});

/** Runs `fn` on the SQLite store of `dataDir` (no server running), through a connection of its own. */
async function withSqlite<T>(dataDir: string, fn: (db: DatabaseSync) => T): Promise<T> {
  const storage = new SqliteStorage({ dataDir });
  await storage.init();
  try {
    return fn(storage.db);
  } finally {
    await storage.close();
  }
}

describe('agentauth audit on the embedded store', () => {
  /** A data directory with one confidential client, and a client_credentials request against a server on it. */
  function embeddedSetup(extraEnv: Record<string, string> = {}) {
    const dir = tempDir();
    const env = {
      ...extraEnv,
      AGENTAUTH_DATA_DIR: join(dir, 'data'),
      AGENTAUTH_CONFIG: writeConfig(dir, {
        resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
        clients: [{ client_id: 'svc', client_secret: 'embedded-audit-secret-0123456789abcdef' }],
      }),
    };
    const issue = (url: string) =>
      fetch(`${url}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from('svc:embedded-audit-secret-0123456789abcdef').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials&scope=read',
      });
    return { dir, env, issue };
  }

  test('the log is in the SQLite file of the data directory: it survives a restart and the CLI verifies it', async () => {
    const { dir, env, issue } = embeddedSetup();
    for (let round = 0; round < 2; round += 1) {
      const server = await startServer(env);
      expect((await issue(server.url)).status).toBe(200);
      expect(await server.stop()).toBe(0);
    }
    expect(existsSync(join(dir, 'data', 'agentauth.sqlite'))).toBe(true);
    expect(existsSync(join(dir, 'data', 'audit.jsonl'))).toBe(false);
    const verified = await runCli(['audit', 'verify'], env);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(/^audit log OK: 3 records/);
    const tail = await runCli(['audit', 'tail', '-n', '3'], env);
    expect(tail.stdout.trim().split('\n').map((l) => (JSON.parse(l) as AuditRecord).type)).toEqual(['key.generated', 'token.issued', 'token.issued']);
  });

  test('a record whose stored text names a member twice fails verify: its hash would hold (JSON.parse reads the last) while the revocation index reads the first', async () => {
    const { dir, env, issue } = embeddedSetup();
    const server = await startServer(env);
    expect((await issue(server.url)).status).toBe(200);
    expect(await server.stop()).toBe(0);
    expect((await runCli(['audit', 'verify'], env)).code).toBe(0);
    await withSqlite(join(dir, 'data'), (db) => {
      const changed = db.prepare("UPDATE audit_records SET record = '{\"type\":\"x.y\",' || substr(record, 2) WHERE seq = 2 AND json_extract(record, '$.type') = 'token.issued'").run().changes;
      expect(changed).toBe(1);
    });
    const verified = await runCli(['audit', 'verify'], env);
    expect(verified.code).toBe(1);
    expect(verified.stdout + verified.stderr).toMatch(/seq 2[^\n]*its stored text is not the JSON agentauth wrote \(a member named twice, or the text edited\)/);
  });

  /** Edits the details of the server chain's record at seq 2, leaving its hash: returns the record as edited. */
  type EditServerRecord = (dataDir: string) => Promise<AuditRecord>;
  const editInSqlite: EditServerRecord = (dataDir) =>
    withSqlite(dataDir, (db) => {
      const row = db.prepare("SELECT chain, record FROM audit_records WHERE seq = 2 AND chain NOT LIKE '%#cli'").get() as { chain: string; record: string };
      const record = JSON.parse(row.record) as AuditRecord;
      record.details = { ...record.details, grant_type: 'forged' };
      expect(db.prepare('UPDATE audit_records SET record = ? WHERE chain = ? AND seq = 2').run(JSON.stringify(record), row.chain).changes).toBe(1);
      return record;
    });
  const editInAuditJsonl: EditServerRecord = async (dataDir) => {
    const file = join(dataDir, 'audit.jsonl');
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    const index = lines.findIndex((l) => { const r = JSON.parse(l) as AuditRecord; return r.seq === 2 && !r.chain?.endsWith('#cli'); });
    const edited = JSON.parse(lines[index]!) as AuditRecord;
    edited.details = { ...edited.details, grant_type: 'forged' };
    lines[index] = JSON.stringify(edited);
    writeFileSync(file, `${lines.join('\n')}\n`);
    return edited;
  };

  test.each<{ store: string; env: Record<string, string>; edit: EditServerRecord }>([
    { store: 'SQLite (the default)', env: {}, edit: editInSqlite },
    { store: 'memory (AGENTAUTH_STORE=memory, audit.jsonl)', env: { AGENTAUTH_STORE: 'memory' }, edit: editInAuditJsonl },
  ])('$store: the CLI appends its own chain to the store of a running server; the server keeps issuing; tampering is reported per chain', async ({ env: storeEnv, edit }) => {
    const { dir, env, issue } = embeddedSetup(storeEnv);
    const server = await startServer(env);
    try {
      expect((await issue(server.url)).status).toBe(200);
      // A key command while the server runs: its audit event goes on the CLI's chain, in the same store.
      const rotated = await runCli(['keys', 'rotate'], env);
      expect(rotated.code).toBe(0);
      // The server's cached head of its own chain is still right: the next token is issued and recorded.
      expect((await issue(server.url)).status).toBe(200);
    } finally {
      await server.stop();
    }
    const verified = await runCli(['audit', 'verify'], env);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(/^audit log OK: 4 records in 2 chains, heads \S+#cli seq 1 hash [0-9a-f]{64}, \S+:\d+#0 seq 3 hash [0-9a-f]{64}\n$/);

    // Edit the server chain's second record where the store keeps it, hash left as it was: reported with its chain.
    const edited = await edit(join(dir, 'data'));
    const failed = await runCli(['audit', 'verify'], env);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain(`chain ${edited.chain} seq 2: edited: content does not match its hash`);
    expect(failed.stdout).toMatch(/audit log FAILED: 1 problem in 4 records in 2 chains/);
  });
});

describe('agentauth audit on a SQLite store whose rows were copied or broken (no server running)', () => {
  test('a copied row and an unreadable row far ahead: verify ends at once naming both, export writes the rest and ends with one line', async () => {
    const dir = tempDir();
    const env = {
      AGENTAUTH_DATA_DIR: join(dir, 'data'),
      AGENTAUTH_CONFIG: writeConfig(dir, { resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }], clients: [{ client_id: 'svc', client_secret: 'embedded-audit-secret-0123456789abcdef' }] }),
    };
    const server = await startServer(env);
    for (let i = 0; i < 3; i += 1) {
      await fetch(`${server.url}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from('svc:embedded-audit-secret-0123456789abcdef').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials&scope=read',
      });
    }
    expect(await server.stop()).toBe(0);
    const { chain, top } = await withSqlite(join(dir, 'data'), (db) => {
      const head = db.prepare('SELECT chain, seq, record FROM audit_records ORDER BY seq DESC LIMIT 1').get() as { chain: string; seq: number; record: string };
      // A copy of the newest record one seq further on (its content still says the old seq), and garbage far ahead.
      db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)').run(head.chain, head.seq + 1, head.record);
      db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)').run(head.chain, 1_000_000_000_000, 'x');
      return { chain: head.chain, top: head.seq };
    });
    const started = Date.now();
    const verified = await runCli(['audit', 'verify'], env, 20_000);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(verified.code).toBe(1);
    expect(verified.stdout).toContain(`chain ${chain} seq ${top + 1}: edited`);
    expect(verified.stdout).toContain(`chain ${chain} seq 1000000000000: edited: cannot be decoded`);
    // One problem line per damaged row, not one per seq in between.
    expect(verified.stdout.split('\n').filter((l) => l.includes('cannot be decoded'))).toHaveLength(1);
    const out = join(dir, 'export.jsonl');
    const exported = await runCli(['audit', 'export', '--out', out], env, 20_000);
    expect({ code: exported.code, stack: /\n\s+at /.test(exported.stderr) }).toEqual({ code: 0, stack: false });
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
    expect(lines.at(-1)).toMatchObject({ seq: 1_000_000_000_000, undecodable: expect.any(String) });
    expect((await runCli(['audit', 'verify', '--file', out], {})).code).toBe(1);
  }, 60_000);
});

describe('agentauth audit on a SQLite store with records outside every chain (no server running)', () => {
  test('rows below seq 1 and rows under a chain name agentauth does not write → exit 1 naming each; an intact store passes', async () => {
    const dir = tempDir();
    const dataDir = join(dir, 'data');
    const storage = new SqliteStorage({ dataDir });
    await storage.init();
    const log = new AuditLog(storage.audit, { chain: 'host:3000#1' });
    for (let i = 0; i < 3; i += 1) await log.record({ type: 'token.issued', client_id: 'svc', details: { jti: `j-${i}` } });
    await log.close();
    await storage.close();
    const env = { AGENTAUTH_DATA_DIR: dataDir };
    const intact = await runCli(['audit', 'verify'], env);
    expect({ code: intact.code, ok: intact.stdout.startsWith('audit log OK: 3 records') }).toEqual({ code: 0, ok: true });
    await withSqlite(dataDir, (db) => {
      const { record } = db.prepare('SELECT record FROM audit_records WHERE seq = 2').get() as { record: string };
      const insert = db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)');
      insert.run('host:3000#1', 0, record);
      insert.run('host:3000#1', -7, record);
      insert.run('', 0.5, record);
      insert.run('bad chain/x', 1, record);
      insert.run('bad chain/x', 2, record);
    });
    const res = await runCli(['audit', 'verify'], env);
    expect(res.code).toBe(1);
    const strays = res.stdout.split('\n').filter((l) => l.includes('stored outside every chain'));
    expect(strays.map((l) => l.slice(0, l.indexOf(': edited'))).sort()).toEqual(
      ['chain "bad chain/x" seq 1', 'chain "bad chain/x" seq 2', 'chain "host:3000#1" seq -7', 'chain "host:3000#1" seq 0', 'seq 0.5'].sort(),
    );
    expect(res.stdout).toContain('audit log FAILED: 5 problems in 3 records');
  }, 30_000);
});

describe('agentauth audit only reads: it creates nothing in the store (a read-only database user is enough)', () => {
  test('MongoDB: tail, export and verify work on a database holding only the audit collection, and leave no other collection or index behind', async () => {
    const dbName = uniqueDbName('auditro');
    // Connected only: no index or collection is created by this writer either.
    const writer = new MongoStorage({ uri: mongoUri(), dbName, timeoutMs: 3000, readOnly: true });
    await writer.init();
    try {
      const log = new AuditLog(writer.audit, { chain: 'host:3000#1' });
      for (let i = 0; i < 3; i += 1) await log.record({ type: 'token.issued', client_id: 'svc', details: { jti: `j-${i}` } });
      await log.close();
      const shape = async () => {
        const names = (await writer.db.listCollections().toArray()).map((c) => c.name).sort();
        const indexes = await Promise.all(names.map(async (n) => [n, (await writer.db.collection(n).indexes()).map((i) => i.name)] as const));
        return Object.fromEntries(indexes);
      };
      const before = await shape();
      expect(before).toEqual({ audit_events: ['_id_'] });
      const env = { MONGODB_URI: mongoUri(), MONGODB_DB: dbName };
      const verified = await runCli(['audit', 'verify'], env);
      expect({ code: verified.code, ok: verified.stdout.startsWith('audit log OK: 3 records') }).toEqual({ code: 0, ok: true });
      const tail = await runCli(['audit', 'tail', '-n', '2'], env);
      expect({ code: tail.code, lines: tail.stdout.trim().split('\n').length }).toEqual({ code: 0, lines: 2 });
      const exported = await runCli(['audit', 'export'], env);
      expect({ code: exported.code, lines: exported.stdout.trim().split('\n').length }).toEqual({ code: 0, lines: 3 });
      expect(await shape()).toEqual(before);
      // A command that writes still prepares the store as the server does (the contrast that makes the above mean something).
      // (keys list no longer does: on a database with no signing keys it answers an empty list, reading only.)
      expect((await runCli(['keys', 'list'], env)).code).toBe(0);
      expect(await shape()).toEqual(before);
      expect((await runCli(['keys', 'rotate', '--init'], { ...env, AGENTAUTH_KEK: newKek() })).code).toBe(0);
      expect(Object.keys(await shape()).length).toBeGreaterThan(1);
    } finally {
      await writer.db.dropDatabase().catch(() => undefined);
      await writer.close();
    }
  }, 60_000);

  test('SQLite: verify opens the file without its writer and does not create a table that is missing', async () => {
    const dataDir = join(tempDir(), 'data');
    const storage = new SqliteStorage({ dataDir });
    await storage.init();
    const log = new AuditLog(storage.audit, { chain: 'host:3000#1' });
    for (let i = 0; i < 2; i += 1) await log.record({ type: 'token.issued', client_id: 'svc', details: { jti: `j-${i}` } });
    await log.close();
    await storage.close();
    const tables = () => withSqlite(dataDir, (db) => (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'nonces'").all() as unknown[]).length);
    // withSqlite's own open re-creates it, so the table is dropped through a bare connection.
    const { DatabaseSync } = await import('node:sqlite');
    const drop = () => {
      const db = new DatabaseSync(join(dataDir, 'agentauth.sqlite'));
      db.exec('DROP TABLE nonces');
      db.exec('PRAGMA user_version = 1'); // as a file from before the table was
      const left = (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'nonces'").all() as unknown[]).length;
      db.close();
      return left;
    };
    expect(drop()).toBe(0);
    const res = await runCli(['audit', 'verify'], { AGENTAUTH_DATA_DIR: dataDir });
    expect({ code: res.code, ok: res.stdout.startsWith('audit log OK: 2 records') }).toEqual({ code: 0, ok: true });
    const db = new DatabaseSync(join(dataDir, 'agentauth.sqlite'));
    const after = (db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'nonces'").all() as unknown[]).length;
    db.close();
    expect(after).toBe(0);
    // The server's own open puts it back (what a command that writes would do).
    expect(await tables()).toBe(1);
  }, 30_000);
});

describe('agentauth audit: refusals', () => {
  test('verify --file of a missing file exits 2 (usage) and says so', async () => {
    const res = await runCli(['audit', 'verify', '--file', join(tempDir(), 'nope.jsonl')], {});
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('cannot read');
    expect(res.stderr).toContain('ENOENT');
  });

  test('an empty log verifies with no head', async () => {
    const res = await runCli(['audit', 'verify'], { MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('auditempty') });
    expect(res.code).toBe(0);
    expect(res.stdout).toBe(`audit log OK: 0 records, head seq 0 hash ${'0'.repeat(64)}\n`);
  });

  test('MongoDB unreachable → exit 2 (the command could not run) with a storage error, not a stack trace', async () => {
    const res = await runCli(['audit', 'verify'], { MONGODB_URI: 'mongodb://127.0.0.1:9/', AGENTAUTH_CONFIG: undefined });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/MongoDB connect failed/);
    expect(res.stderr).not.toMatch(/\n\s+at /);
  });
});
