// What the SQLite store adds to the storage contract (which storage.contract.test.ts runs on it): the file and its
// journal settings, durability across reopening, failing closed when the file is locked, unreadable or closed, and
// single use that stays atomic between separate processes on one file.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { DatabaseSync } from 'node:sqlite';

import { StorageUnavailableError } from '../../adapters/errors.js';
import { oidcAdapterFactory } from '../../adapters/oidc-adapter.js';
import { SQLITE_FILE, SqliteStorage } from '../../adapters/sqlite.js';
import { SqliteWriter } from '../../adapters/sqlite-writer.js';
import { ROOT, tempDir } from '../support/server.js';

const rid = () => Math.random().toString(36).slice(2) + Date.now().toString(36);

const opened: SqliteStorage[] = [];
async function open(dataDir = tempDir('agentauth-sqlite-'), busyTimeoutMs?: number): Promise<SqliteStorage> {
  const storage = new SqliteStorage({ dataDir, busyTimeoutMs });
  opened.push(storage);
  await storage.init();
  return storage;
}

afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
});

/**
 * `count` processes of `script` (test/support/start-signal.mjs), released at the same moment once all are ready; the
 * lines each printed, once it has exited 0.
 */
async function releaseTogether(script: string, args: string[], count: number): Promise<string[][]> {
  const children = Array.from({ length: count }, () => spawn(process.execPath, ['--no-warnings', script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] }));
  const outputs = children.map(async (child) => {
    const lines: string[] = [];
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    for await (const line of createInterface({ input: child.stdout! })) lines.push(line);
    expect(await exited).toBe(0);
    return lines;
  });
  const ready = children.map(
    (child) => new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', (chunk: Buffer) => (String(chunk).startsWith('ready') ? resolve() : reject(new Error(String(chunk)))));
      child.once('exit', () => reject(new Error(`${script} exited before it was ready`)));
    }),
  );
  await Promise.all(ready);
  const at = Date.now() + 300;
  for (const child of children) child.stdin!.end(`go ${at}\n`);
  return Promise.all(outputs);
}

describe('SQLite store: the file', () => {
  test('one database file in the data directory, WAL journal, synchronous=FULL, busy_timeout set, mode 0600', async () => {
    const storage = await open(undefined, 1234);
    expect(storage.file).toBe(join(storage.dataDir, SQLITE_FILE));
    const pragma = (name: string) => Object.values(storage.db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown>)[0];
    expect(pragma('journal_mode')).toBe('wal');
    expect(pragma('synchronous')).toBe(2); // FULL (this connection only reads; the writer thread's is checked below)
    expect(pragma('busy_timeout')).toBe(1234);
    expect(pragma('foreign_keys')).toBe(0);
    await storage.model('Client').upsert(rid(), { client_id: 'c' });
    expect(statSync(storage.file).mode & 0o777).toBe(0o600);
    expect(statSync(`${storage.file}-wal`).mode & 0o777).toBe(0o600);
  });

  test('everything written is there after close and reopen: clients, tokens, revocations, nonces, keys, audit', async () => {
    const first = await open();
    const clientId = `client-${rid()}`;
    const code = rid();
    const jti = rid();
    const nonce = rid();
    const exp = Math.floor(Date.now() / 1000) + 600;
    await first.model('Client').upsert(clientId, { client_id: clientId, redirect_uris: ['https://a.example/cb'] });
    await first.model('AuthorizationCode').upsert(code, { kind: 'AuthorizationCode', grantId: 'g1', clientId }, 600);
    expect(await first.model('AuthorizationCode').consume(code)).toBe(true);
    await first.revokedTokens.revoke(jti, exp);
    await first.nonces.issue(nonce, 600, `client:${clientId}`);
    expect(await first.nonces.consume(nonce)).toBe(true);
    expect(await first.nonces.takeAttempt('k', 1, 600)).toBe(true);
    const key = { kid: 'k1', seq: 1, alg: 'ES256' as const, createdAt: new Date().toISOString(), publicJwk: { kty: 'EC' }, sealed: { kekId: 'k', iv: 'i', ciphertext: 'c', tag: 't' } };
    expect(await first.keys.insert(key)).toBe(true);
    await first.keys.addKeyMac('k1', 'mac-1');
    expect(await first.keys.addTransition({ kid: 'k1', type: 'activate', at: key.createdAt, recordedAt: key.createdAt })).toBe(true);
    const record = { chain: 'host#1', seq: 1, time: key.createdAt, type: 'test', details: { 'https://x.example': [1] }, prev_hash: 'p', hash: 'h' };
    expect(await first.audit.insertBatch([record])).toBe(1);
    await first.close();

    const again = await open(first.dataDir);
    expect((await again.model('Client').find(clientId))?.redirect_uris).toEqual(['https://a.example/cb']);
    expect(typeof (await again.model('AuthorizationCode').find(code))?.consumed).toBe('number');
    expect(await again.model('AuthorizationCode').consume(code)).toBe(false);
    expect(await again.revokedTokens.isRevoked(jti)).toBe(true);
    expect(await again.nonces.consume(nonce)).toBe(false);
    expect(await again.nonces.boundTo(nonce)).toBe(`client:${clientId}`);
    expect(await again.nonces.takeAttempt('k', 1, 600)).toBe(false);
    expect(await again.keys.list()).toEqual([{ ...key, mac: 'mac-1' }]);
    await again.keys.addKeyMac('k1', 'mac-2');
    expect((await again.keys.list())[0]?.mac).toBe('mac-1');
    expect((await again.keys.transitions()).map((t) => [t.kid, t.type])).toEqual([['k1', 'activate']]);
    expect(await again.audit.list(1, 10, 'host#1')).toEqual([record]);
    expect(await again.audit.chains()).toEqual(['host#1']);
  });

  test('the periodic sweep deletes expired rows of every table, in batches, and keeps live ones', async () => {
    const dataDir = tempDir('agentauth-sqlite-sweep-');
    const storage = new SqliteStorage({ dataDir, sweepIntervalMs: 50 });
    opened.push(storage);
    await storage.init();
    const past = Date.now() - 1000;
    const insert = storage.db.prepare("INSERT INTO oidc_records (model, id, payload, expires_at) VALUES ('AccessToken', ?, '{}', ?)");
    storage.db.exec('BEGIN');
    for (let i = 0; i < 1200; i += 1) insert.run(`old-${i}`, past);
    storage.db.exec('COMMIT');
    storage.db.prepare('INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?)').run('old-jti', past);
    storage.db.prepare("INSERT INTO nonces (nonce, binding, expires_at) VALUES (?, 'client:c', ?)").run('old-nonce', past);
    storage.db.prepare('INSERT INTO attempts (key, taken, expires_at) VALUES (?, 1, ?)').run('old-key', past);
    await storage.model('AccessToken').upsert('live', { kind: 'AccessToken' }, 600);
    await storage.model('Client').upsert('forever', { client_id: 'forever' });
    await storage.revokedTokens.revoke('live-jti', Math.floor(Date.now() / 1000) + 600);
    const count = (table: string) => (storage.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    // One sweep goes through the tables in turn, each batch acknowledged after its fsync: wait for the last table.
    const swept = () => count('oidc_records') === 2 && count('revoked_tokens') === 1 && count('nonces') === 0 && count('attempts') === 0;
    for (let waited = 0; !swept() && waited < 5000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    expect(count('oidc_records')).toBe(2);
    expect(count('revoked_tokens')).toBe(1);
    expect(count('nonces')).toBe(0);
    expect(count('attempts')).toBe(0);
    expect(await storage.model('AccessToken').find('live')).toEqual({ kind: 'AccessToken' });
    expect(await storage.revokedTokens.isRevoked('live-jti')).toBe(true);
  });

  test('attempt slots start over once their window has passed, even before the sweep', async () => {
    const storage = await open();
    const key = `nonce:${rid()}`;
    expect(await storage.nonces.takeAttempt(key, 1, 1)).toBe(true);
    expect(await storage.nonces.takeAttempt(key, 1, 1)).toBe(false);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await storage.nonces.takeAttempt(key, 1, 60)).toBe(true);
    expect(await storage.nonces.takeAttempt(key, 1, 60)).toBe(false);
    expect(await storage.nonces.takeAttempt(rid(), 0, 60)).toBe(false);
  });

  test('a live nonce is not issued twice (its consumed mark would be lost)', async () => {
    const storage = await open();
    const nonce = rid();
    await storage.nonces.issue(nonce, 60, 'client:a');
    expect(await storage.nonces.consume(nonce)).toBe(true);
    await expect(storage.nonces.issue(nonce, 60, 'client:b')).rejects.toBeInstanceOf(StorageUnavailableError);
    expect(await storage.nonces.boundTo(nonce)).toBe('client:a');
    expect(await storage.nonces.consume(nonce)).toBe(false);
  });
});

describe('SQLite store: several processes opening a new data directory at once', () => {
  const OPENER = join(ROOT, 'test', 'support', 'sqlite-opener.mjs');
  const PROCESSES = 4;
  const ROUNDS = 8;

  /** PROCESSES openers of one fresh data directory, released at the same moment; what each printed last. */
  async function openTogether(dataDir: string): Promise<Array<{ ok: boolean; error?: string }>> {
    const outputs = await releaseTogether(OPENER, [dataDir], PROCESSES);
    return outputs.map((lines) => JSON.parse(lines.at(-1)!) as { ok: boolean; error?: string });
  }

  // SQLite refuses some of these at once with SQLITE_BUSY, without waiting busy_timeout (switching a new file to WAL,
  // where waiting could deadlock): before the fix, 13 of 30 such rounds had an opener fail "database is locked".
  test(`${PROCESSES} processes opening one new data directory at the same moment all open it and write (${ROUNDS} rounds): agentauth start --workers ${PROCESSES} on a fresh directory`, async () => {
    for (let round = 0; round < ROUNDS; round += 1) {
      const dataDir = tempDir('agentauth-sqlite-open-');
      const results = await openTogether(dataDir);
      expect(results).toEqual(Array.from({ length: PROCESSES }, () => ({ ok: true })));
      const db = new DatabaseSync(join(dataDir, SQLITE_FILE), { readOnly: true });
      try {
        expect((db.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('wal');
        expect((db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'ReplayDetection' AND id LIKE 'opener-%'").get() as { n: number }).n).toBe(PROCESSES);
      } finally {
        db.close();
      }
    }
  }, 120_000);
});

describe('SQLite store: fails closed', () => {
  test('a write that waits longer than busy_timeout for another writer fails as StorageUnavailableError (503 through the oidc adapter); reads go on', async () => {
    const storage = await open(undefined, 150);
    const id = rid();
    await storage.model('AuthorizationCode').upsert(id, { kind: 'AuthorizationCode' }, 60);
    // Another process holding the write lock (a long transaction, a stuck writer): here, a second connection.
    const other = new DatabaseSync(storage.file);
    other.exec('BEGIN IMMEDIATE');
    try {
      await expect(storage.model('AuthorizationCode').consume(id)).rejects.toBeInstanceOf(StorageUnavailableError);
      await expect(storage.model('RefreshToken').setSuccessor(id, rid())).rejects.toBeInstanceOf(StorageUnavailableError);
      await expect(storage.model('Session').upsert(rid(), { kind: 'Session' }, 60)).rejects.toThrow(/SQLite upsert failed \(SQLite error 5: database is locked\)/);
      await expect(storage.audit.insertBatch([{ seq: 1, time: 't', type: 'x', details: {}, prev_hash: 'p', hash: 'h' }])).rejects.toBeInstanceOf(StorageUnavailableError);
      const adapter = oidcAdapterFactory(storage)('AuthorizationCode');
      await expect(adapter.consume(id)).rejects.toMatchObject({ statusCode: 503, error: 'temporarily_unavailable' });
      // WAL: readers are not blocked by the writer.
      expect((await storage.model('AuthorizationCode').find(id))?.consumed).toBeUndefined();
      // But the health ping is: a store nothing can be written to is down (/readyz 503), not only an unreadable one.
      await expect(storage.ping()).rejects.toThrow(/SQLite ping failed \(SQLite error 5: database is locked\)/);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    await expect(storage.ping()).resolves.toBeUndefined();
    expect(await storage.model('AuthorizationCode').consume(id)).toBe(true);
    expect(await storage.audit.insertBatch([{ seq: 1, time: 't', type: 'x', details: {}, prev_hash: 'p', hash: 'h' }])).toBe(1);
  });

  test('writes sent while others wait for another writer\'s lock wait at most busy_timeout from when they were sent, not twice', async () => {
    const busy = 1500;
    const storage = await open(undefined, busy);
    const other = new DatabaseSync(storage.file);
    other.exec('BEGIN IMMEDIATE');
    try {
      // The first write takes the thread into its wait for the lock; the others arrive during that wait, so they form
      // the next group, which used to wait a whole busy_timeout of its own after the first group gave up.
      const sent: Array<Promise<number>> = [];
      const write = () => {
        const at = Date.now();
        return storage.model('Session').upsert(rid(), { kind: 'Session' }, 60).then(
          () => {
            throw new Error('a write succeeded while another connection held the write lock');
          },
          (err: unknown) => {
            expect(err).toBeInstanceOf(StorageUnavailableError);
            return Date.now() - at;
          },
        );
      };
      const start = Date.now();
      sent.push(write());
      for (const at of [200, 700, 1200]) {
        await new Promise((r) => setTimeout(r, start + at - Date.now()));
        sent.push(write());
      }
      const waited = await Promise.all(sent);
      // Each failed within busy_timeout of being sent (plus the time to hand it to the thread and back), where the
      // late ones used to wait until about 2 × busy_timeout.
      for (const ms of waited) expect(ms).toBeLessThan(busy + 700);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    await storage.model('Session').upsert(rid(), { kind: 'Session' }, 60);
  });

  test('a write sent late in another group\'s wait keeps its own wait: it succeeds when the lock comes free in time', async () => {
    const busy = 1500;
    const storage = await open(undefined, busy);
    const other = new DatabaseSync(storage.file);
    other.exec('BEGIN IMMEDIATE');
    const start = Date.now();
    const at = (ms: number) => new Promise((r) => setTimeout(r, start + ms - Date.now()));
    const outcome = (p: Promise<unknown>) => p.then(() => 'written', (err: unknown) => (err instanceof StorageUnavailableError ? 'refused' : `other: ${String(err)}`));
    const first = outcome(storage.model('Session').upsert(rid(), { kind: 'Session' }, 60));
    await at(200);
    // Sent while the first waits: these two form the next group, the older one's wait ends first.
    const early = outcome(storage.model('Session').upsert(rid(), { kind: 'Session' }, 60));
    await at(busy - 200);
    const late = outcome(storage.model('Session').upsert(rid(), { kind: 'Session' }, 60));
    // The lock comes free after the early one's wait ended and well inside the late one's.
    await at(busy + 700);
    other.exec('ROLLBACK');
    other.close();
    expect({ first: await first, early: await early, late: await late }).toEqual({ first: 'refused', early: 'refused', late: 'written' });
  });

  test('a store file removed or replaced under the open store: the ping fails, naming what happened', async () => {
    for (const how of ['removed', 'replaced'] as const) {
      const dataDir = tempDir('agentauth-sqlite-gone-');
      const storage = await open(dataDir);
      await storage.model('Session').upsert(rid(), { kind: 'Session' }, 60);
      await expect(storage.ping()).resolves.toBeUndefined();
      const file = join(dataDir, SQLITE_FILE);
      if (how === 'removed') rmSync(dataDir, { recursive: true, force: true });
      else {
        // A copy put in its place (a restore onto a running server): the same content, another file.
        copyFileSync(file, `${file}.copy`);
        renameSync(`${file}.copy`, file);
      }
      await expect(storage.ping()).rejects.toThrow(new RegExp(`SQLite store .*${SQLITE_FILE} was ${how === 'removed' ? 'removed' : 'replaced by another file'} while this process had it open`));
      await expect(storage.ping()).rejects.toBeInstanceOf(StorageUnavailableError);
      // Every read and write of this process fails from then on, not only the ping: what it wrote would be lost, and
      // what it read is the lost file.
      await expect(storage.model('Session').upsert(rid(), { kind: 'Session' }, 60)).rejects.toBeInstanceOf(StorageUnavailableError);
      await expect(storage.model('Client').find('anything')).rejects.toBeInstanceOf(StorageUnavailableError);
      await expect(storage.model('Client').destroy('anything')).rejects.toThrow(/while this process had it open/);
    }
  });

  test('a data directory whose database file is not a database: init fails as StorageUnavailableError naming the file', async () => {
    const dataDir = tempDir('agentauth-sqlite-bad-');
    writeFileSync(join(dataDir, SQLITE_FILE), 'this is not an SQLite database, just text that is long enough to have a header'.repeat(20));
    const storage = new SqliteStorage({ dataDir });
    await expect(storage.init()).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(storage.init()).rejects.toThrow(SQLITE_FILE);
  });

  test('a file written by a newer agentauth (higher schema version) is refused', async () => {
    const dataDir = tempDir('agentauth-sqlite-new-');
    const db = new DatabaseSync(join(dataDir, SQLITE_FILE));
    db.exec('PRAGMA user_version = 99');
    db.close();
    await expect(new SqliteStorage({ dataDir }).init()).rejects.toThrow(/schema version 99, newer than this agentauth understands/);
  });

  test('before init and after close every call fails as StorageUnavailableError, ping included', async () => {
    const dataDir = tempDir('agentauth-sqlite-closed-');
    const unopened = new SqliteStorage({ dataDir });
    await expect(unopened.model('Client').find('x')).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(unopened.ping()).rejects.toBeInstanceOf(StorageUnavailableError);
    const storage = await open(dataDir);
    await expect(storage.ping()).resolves.toBeUndefined();
    await storage.close();
    await expect(storage.ping()).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(storage.revokedTokens.isRevoked('x')).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(storage.keys.list()).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(storage.nonces.consume('x')).rejects.toBeInstanceOf(StorageUnavailableError);
  });
});

describe('SQLite store: writes run on a thread of their own', () => {
  const exp = () => Math.floor(Date.now() / 1000) + 600;
  /** The writer thread's own setting, read through its connection. */
  const writerPragma = async (storage: SqliteStorage, name: string) =>
    Object.values(((await storage.writer.run('pragma', [{ sql: `PRAGMA ${name}`, params: [], read: true }])) as Record<string, unknown>[])[0]!)[0];

  test('the writer commits with synchronous=FULL by default (the WAL is fsynced before a write is acknowledged), NORMAL when configured', async () => {
    const full = await open();
    expect(await writerPragma(full, 'synchronous')).toBe(2);
    const normal = new SqliteStorage({ dataDir: tempDir('agentauth-sqlite-normal-'), synchronous: 'normal' });
    opened.push(normal);
    await normal.init();
    expect(await writerPragma(normal, 'synchronous')).toBe(1);
  });

  test('an acknowledged write is committed: another connection (another process) sees it at once', async () => {
    const storage = await open();
    const jti = rid();
    await storage.revokedTokens.revoke(jti, exp());
    const other = new DatabaseSync(storage.file, { readOnly: true });
    try {
      expect(other.prepare('SELECT count(*) AS n FROM revoked_tokens WHERE jti = ?').get(jti)?.n).toBe(1);
    } finally {
      other.close();
    }
  });

  test('a write waiting for another process\'s lock does not stop the event loop: timers fire and reads answer meanwhile; then it fails (503)', async () => {
    const storage = await open(undefined, 400);
    const id = rid();
    await storage.model('Session').upsert(id, { kind: 'Session' }, 60);
    const other = new DatabaseSync(storage.file);
    other.exec('BEGIN IMMEDIATE');
    try {
      const write = storage.revokedTokens.revoke(rid(), exp());
      write.catch(() => undefined);
      let ticks = 0;
      const timer = setInterval(() => (ticks += 1), 10);
      await new Promise((resolve) => setTimeout(resolve, 200));
      clearInterval(timer);
      expect(ticks).toBeGreaterThanOrEqual(5); // with the write on the event loop, not one tick would run while it waited
      expect(await storage.model('Session').find(id)).toEqual({ kind: 'Session' });
      await expect(write).rejects.toThrow(/SQLite revoke failed \(SQLite error 5: database is locked\)/);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    await expect(storage.revokedTokens.revoke(rid(), exp())).resolves.toBeUndefined();
  });

  test('two writers that keep one file busy (two workers, or a worker and the CLI) each get the lock in turn: none waits out busy_timeout', async () => {
    // Each writer is a thread with its own connection, as each process of `agentauth start --workers 2` has. With
    // SQLite's own busy handler (sleeps growing to 100 ms) the waiting one kept missing the moments the other left the
    // lock free, and failed with "database is locked" (a 503) although the other's transactions each took milliseconds.
    const storage = await open();
    const writers = [0, 1].map(() => new SqliteWriter({ file: storage.file, busyTimeoutMs: 100, synchronous: 'full', timeoutMs: 2100 }));
    try {
      await Promise.all(writers.map((w) => w.start()));
      const until = Date.now() + 1500;
      const outcomes = await Promise.all(
        writers.map(async (writer) => {
          const seen = { committed: 0, failed: [] as string[] };
          while (Date.now() < until) {
            const round = await Promise.allSettled(
              Array.from({ length: 16 }, () => writer.run('revoke', [{ sql: 'INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?)', params: [rid(), exp()] }])),
            );
            for (const r of round) {
              if (r.status === 'fulfilled') seen.committed += 1;
              else seen.failed.push(String((r.reason as Error).message));
            }
          }
          return seen;
        }),
      );
      for (const o of outcomes) {
        expect(o.failed).toEqual([]);
        expect(o.committed).toBeGreaterThan(100);
      }
    } finally {
      await Promise.all(writers.map((w) => w.close()));
    }
  });

  test('a writer with one write at a time is not starved by one that always has 64 queued (the CLI beside a busy worker)', async () => {
    // The busy writer has jobs waiting at every commit, so it could take the lock again at once; the courtesy gap after
    // each commit (longer than the waiter's longest pause) is what lets the other in before busy_timeout.
    const storage = await open();
    const newWriter = () => new SqliteWriter({ file: storage.file, busyTimeoutMs: 100, synchronous: 'full', timeoutMs: 2100 });
    const busy = newWriter();
    const light = newWriter();
    try {
      await Promise.all([busy.start(), light.start()]);
      const until = Date.now() + 1500;
      const insert = (writer: SqliteWriter) => writer.run('revoke', [{ sql: 'INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?)', params: [rid(), exp()] }]);
      const lane = async (writer: SqliteWriter, seen: { committed: number; failed: string[] }) => {
        while (Date.now() < until) {
          try {
            await insert(writer);
            seen.committed += 1;
          } catch (err) {
            seen.failed.push(String((err as Error).message));
          }
        }
      };
      const heavy = { committed: 0, failed: [] as string[] };
      const lone = { committed: 0, failed: [] as string[] };
      await Promise.all([...Array.from({ length: 64 }, () => lane(busy, heavy)), lane(light, lone)]);
      expect(lone.failed).toEqual([]);
      expect(heavy.failed).toEqual([]);
      expect(lone.committed).toBeGreaterThan(50);
      expect(heavy.committed).toBeGreaterThan(lone.committed);
    } finally {
      await Promise.all([busy.close(), light.close()]);
    }
  });

  test('a write the thread does not answer within writeTimeoutMs fails (503) instead of hanging', async () => {
    const dataDir = tempDir('agentauth-sqlite-hung-');
    const storage = new SqliteStorage({ dataDir, busyTimeoutMs: 5000, writeTimeoutMs: 300 });
    opened.push(storage);
    await storage.init();
    const other = new DatabaseSync(storage.file);
    other.exec('BEGIN IMMEDIATE');
    try {
      const started = Date.now();
      await expect(storage.revokedTokens.revoke(rid(), exp())).rejects.toThrow(/no answer from the writer thread within 300 ms/);
      expect(Date.now() - started).toBeLessThan(4000);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
  });

  test('a writer thread that dies fails what it held (503); the next write starts a new thread', async () => {
    const storage = await open();
    const other = new DatabaseSync(storage.file);
    other.exec('BEGIN IMMEDIATE'); // the job waits in the thread for this lock, so the kill finds it in flight
    const held = storage.revokedTokens.revoke(rid(), exp());
    held.catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await storage.writer.kill();
    other.exec('ROLLBACK');
    other.close();
    await expect(held).rejects.toThrow(/SQLite revoke failed \(the SQLite writer thread exited/);
    const jti = rid();
    await storage.revokedTokens.revoke(jti, exp());
    expect(await storage.revokedTokens.isRevoked(jti)).toBe(true);
  });

  test('writes of one turn share one transaction, each in a savepoint: a failing write leaves the others of its group committed', async () => {
    const storage = await open();
    const jtis = [rid(), rid()];
    const results = await Promise.allSettled([
      storage.revokedTokens.revoke(jtis[0]!, exp()),
      // A job whose second statement fails: its first statement is rolled back with it, and only it fails.
      storage.writer.run('broken job', [
        { sql: 'INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?)', params: ['from-the-broken-job', exp() * 1000] },
        { sql: 'INSERT INTO no_such_table VALUES (1)', params: [] },
      ]),
      storage.revokedTokens.revoke(jtis[1]!, exp()),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/SQLite broken job failed \(SQLite error 1: no such table: no_such_table\)/);
    expect(await storage.revokedTokens.isRevoked(jtis[0]!)).toBe(true);
    expect(await storage.revokedTokens.isRevoked(jtis[1]!)).toBe(true);
    expect(await storage.revokedTokens.isRevoked('from-the-broken-job')).toBe(false);
  });

  test('close lets the thread commit what it holds; the last connection leaves no -wal file behind', async () => {
    const storage = new SqliteStorage({ dataDir: tempDir('agentauth-sqlite-close-') });
    await storage.init();
    const jti = rid();
    const write = storage.revokedTokens.revoke(jti, exp());
    await storage.close();
    await write;
    expect(existsSync(`${storage.file}-wal`)).toBe(false);
    const reopened = await open(storage.dataDir);
    expect(await reopened.revokedTokens.isRevoked(jti)).toBe(true);
  });
});

describe('SQLite store: single use across processes', () => {
  const RACER = join(ROOT, 'test', 'support', 'sqlite-racer.mjs');
  const IDS = 30;
  const PER_PROCESS = 25;

  beforeAll(() => {
    if (!existsSync(join(ROOT, 'dist', 'adapters', 'sqlite.js'))) throw new Error('dist/adapters/sqlite.js is missing: run `npm run build` first');
  });

  interface RacerResult {
    pid: number;
    won: Record<string, number>;
    errors: string[];
    started: number;
    finished: number;
  }

  /** Two processes on one file, each running PER_PROCESS concurrent `op`s on every id, started at the same moment. */
  async function race(dataDir: string, op: string, ids: string[]): Promise<RacerResult[]> {
    const outputs = await releaseTogether(RACER, [dataDir, op, String(PER_PROCESS), ...ids], 2);
    const results = outputs.map((lines) => JSON.parse(lines.at(-1)!) as RacerResult);
    // The race was real: each racer began before the other had finished.
    const [a, b] = results as [RacerResult, RacerResult];
    expect(a.started).toBeLessThan(b.finished);
    expect(b.started).toBeLessThan(a.finished);
    return results;
  }

  function totals(results: RacerResult[], ids: string[]): number[] {
    for (const r of results) expect(r.errors).toEqual([]);
    return ids.map((id) => results.reduce((sum, r) => sum + (r.won[id] ?? 0), 0));
  }

  test('authorization codes: of 2 × 25 concurrent consumes per code, exactly one succeeds', async () => {
    const storage = await open();
    const ids = Array.from({ length: IDS }, () => rid());
    for (const id of ids) await storage.model('AuthorizationCode').upsert(id, { kind: 'AuthorizationCode' }, 600);
    const results = await race(storage.dataDir, 'consume', ids);
    expect(totals(results, ids)).toEqual(ids.map(() => 1));
    for (const id of ids) expect(typeof (await storage.model('AuthorizationCode').find(id))?.consumed).toBe('number');
  });

  test('replay detection: of 2 × 25 concurrent insertOnce per jti, exactly one succeeds', async () => {
    const storage = await open();
    const ids = Array.from({ length: IDS }, () => rid());
    const results = await race(storage.dataDir, 'insertOnce', ids);
    expect(totals(results, ids)).toEqual(ids.map(() => 1));
    // The stored record is the winner's.
    for (const id of ids) {
      const winner = results.find((r) => r.won[id] === 1)!;
      expect((await storage.model('ReplayDetection').find(id))?.iss).toBe(`pid-${winner.pid}`);
    }
  });

  test('nonces: of 2 × 25 concurrent consumes per nonce, exactly one succeeds; attempt slots: exactly 5 of 50 per key', async () => {
    const storage = await open();
    const nonces = Array.from({ length: IDS }, () => rid());
    for (const n of nonces) await storage.nonces.issue(n, 600, 'client:c1');
    expect(totals(await race(storage.dataDir, 'nonce', nonces), nonces)).toEqual(nonces.map(() => 1));
    const keys = Array.from({ length: IDS }, () => `nonce:${rid()}`);
    expect(totals(await race(storage.dataDir, 'attempt', keys), keys)).toEqual(keys.map(() => 5));
  });
});
