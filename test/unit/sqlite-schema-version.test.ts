import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { SCHEMA, SCHEMA_VERSION, SQLITE_FILE, SqliteStorage } from '../../adapters/sqlite.js';
import { tempDir } from '../support/server.js';

/**
 * The SQLite layout is versioned (`PRAGMA user_version`): a file at the current version is opened without a write
 * transaction, so opening the store (a server, a worker, `keys list`, `clients list`, `backup`) never waits for, nor
 * holds up, another process's writes. That only holds if every change to the layout bumps the version.
 */

const version = (file: string) => {
  const db = new DatabaseSync(file);
  try {
    return Number((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
  } finally {
    db.close();
  }
};

test('the layout is pinned to its version: a change to SCHEMA fails here until SCHEMA_VERSION is bumped (and this hash updated)', () => {
  expect({ version: SCHEMA_VERSION, sha256: createHash('sha256').update(SCHEMA).digest('hex') }).toEqual({
    version: 3,
    sha256: 'edb3c45b4422a7d50def1d80c85a58212c3c155111bafb68b603c3a1ec639da5',
  });
});

test('opening a store at the current version takes no write lock: it opens and reads while another process holds the lock', async () => {
  const dataDir = tempDir('agentauth-sqlite-version-');
  const first = new SqliteStorage({ dataDir });
  await first.init();
  await first.nonces.issue('n1', 60, 'b');
  await first.close();
  expect(version(join(dataDir, SQLITE_FILE))).toBe(SCHEMA_VERSION);

  const other = new DatabaseSync(join(dataDir, SQLITE_FILE));
  other.exec('BEGIN IMMEDIATE');
  const storage = new SqliteStorage({ dataDir, busyTimeoutMs: 200 });
  try {
    const started = Date.now();
    await storage.init();
    expect(Date.now() - started).toBeLessThan(200); // no wait for the lock either
    expect(await storage.nonces.boundTo('n1')).toBe('b');
  } finally {
    other.exec('ROLLBACK');
    other.close();
    await storage.close();
  }
});

test('a file at an older version gets the whole layout (what a version-1 file may lack) and the current version', async () => {
  const dataDir = tempDir('agentauth-sqlite-version-');
  const first = new SqliteStorage({ dataDir });
  await first.init();
  first.db.exec('DROP INDEX audit_records_revocations');
  first.db.exec('DROP TABLE audit_checkpoints');
  first.db.exec('PRAGMA user_version = 1');
  await first.close();

  const second = new SqliteStorage({ dataDir });
  await second.init();
  try {
    const names = (second.db.prepare("SELECT name FROM sqlite_schema WHERE name IN ('audit_records_revocations', 'audit_checkpoints') ORDER BY name").all() as Array<{ name: string }>).map((r) => r.name);
    expect(names).toEqual(['audit_checkpoints', 'audit_records_revocations']);
  } finally {
    await second.close();
  }
  expect(version(join(dataDir, SQLITE_FILE))).toBe(SCHEMA_VERSION);
});

test('a file at an older version waits for the lock to create its layout, and says so when it cannot (fail closed)', async () => {
  const dataDir = tempDir('agentauth-sqlite-version-');
  const first = new SqliteStorage({ dataDir });
  await first.init();
  first.db.exec('PRAGMA user_version = 1');
  await first.close();
  const other = new DatabaseSync(join(dataDir, SQLITE_FILE));
  other.exec('BEGIN IMMEDIATE');
  try {
    await expect(new SqliteStorage({ dataDir, busyTimeoutMs: 100 }).init()).rejects.toThrow(/database is locked/);
  } finally {
    other.exec('ROLLBACK');
    other.close();
  }
  expect(version(join(dataDir, SQLITE_FILE))).toBe(1);
});

test('a version-2 file gets its revocation index built again with the expression this code queries (subject.revoked by sub)', async () => {
  const dataDir = tempDir('agentauth-sqlite-version-');
  const first = new SqliteStorage({ dataDir });
  await first.init();
  const { sql } = first.db.prepare("SELECT sql FROM sqlite_schema WHERE name = 'audit_records_revocations'").get() as { sql: string };
  expect(sql).toContain("WHEN 'subject.revoked' THEN json_extract(record, '$.sub')");
  // The index as version 2 built it: without the subject branch.
  first.db.exec('DROP INDEX audit_records_revocations');
  first.db.exec(sql.replace(" WHEN 'subject.revoked' THEN json_extract(record, '$.sub')", '').replace(", 'subject.revoked'", ''));
  first.db.exec('PRAGMA user_version = 2');
  await first.close();

  const second = new SqliteStorage({ dataDir });
  await second.init();
  try {
    const { sql: rebuilt } = second.db.prepare("SELECT sql FROM sqlite_schema WHERE name = 'audit_records_revocations'").get() as { sql: string };
    expect(rebuilt).toBe(sql);
    await second.audit.insertBatch([{ seq: 1, time: new Date().toISOString(), type: 'subject.revoked', sub: 'did:pkh:eip155:1:0xabc', details: {}, prev_hash: 'p', hash: 'h' }]);
    expect((await second.audit.revocations({ sub: 'did:pkh:eip155:1:0xabc' }, 10)).map((r) => r.type)).toEqual(['subject.revoked']);
  } finally {
    await second.close();
  }
  expect(version(join(dataDir, SQLITE_FILE))).toBe(SCHEMA_VERSION);
});
