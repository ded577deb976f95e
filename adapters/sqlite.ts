import { closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { SQLInputValue, StatementSync } from 'node:sqlite';

import { StorageUnavailableError, absentIfUnreadable, decodeStoredPayload } from './errors.js';
import type { UnreadableListener } from './errors.js';
import { describeJsonError } from './json-syntax-error.js';
import { SqliteWriter, sqliteErrorHint } from './sqlite-writer.js';
import type { AccountPage, AdapterPayload, AuditCheckpoint, AuditRecord, AuditStore, Consumption, KeyStore, KeyTransition, ModelName, ModelStore, NonceStore, RevocationKeys, RevokedTokenStore, Storage, StoredKey } from './types.js';
import { ACCOUNT_INDEXED, AUDIT_CHAIN_ID, DEFAULT_AUDIT_CHAIN, MODEL_NAMES, REVOCATION_RECORD_TYPES, chainOf, checkpointFrom, revocationLookups, revokesOneOf, undecodableRecord } from './types.js';
import { checkKey, checkLookup, isAccountLookup, isValidKey } from './validate.js';

/** The one database file in the data directory (plus SQLite's `-wal` and `-shm` beside it while it is open). */
export const SQLITE_FILE = 'agentauth.sqlite';

/**
 * The layout this code writes, as the file's `user_version`; a file with a higher one was written by a newer agentauth
 * and is refused. A file at this version has every table and index of SCHEMA: SCHEMA runs (in a write transaction)
 * only on a file whose version is lower, so that an open, a server's or a command's, takes no write lock on a store
 * already set up. Every change to SCHEMA bumps it (test/unit/sqlite-schema-version.test.ts fails until it does).
 * 1: the first layout, and three later additions (indexes and tables) made without a bump; 2: all of them;
 * 3: `audit_records_revocations` also indexes `subject.revoked` records by their `sub` (rebuilt: UPGRADES).
 */
export const SCHEMA_VERSION = 3;

/**
 * What an audit record revokes (types.ts `revokedBy`), as an expression over its JSON, and the condition that makes a
 * row a revocation record: the `audit_records_revocations` index is on the one, for rows meeting the other, so that
 * `agentauth verify` finds a token's revocations without reading the log. A query uses the index only when its WHERE
 * holds both exactly as written here. A row whose text is not JSON (a damaged file) is no revocation: json_extract
 * would fail on it, and with it the row's insert and the index's creation on a file that already holds one.
 */
const AUDIT_TYPE = "(CASE WHEN json_valid(record) THEN json_extract(record, '$.type') END)";
const REVOKED_BY = `(CASE ${AUDIT_TYPE} WHEN 'token.revoked' THEN json_extract(record, '$.details.jti') WHEN 'grant.revoked' THEN json_extract(record, '$.details.grant_id') WHEN 'subject.revoked' THEN json_extract(record, '$.sub') ELSE json_extract(record, '$.client_id') END)`;
const IS_REVOCATION = `${AUDIT_TYPE} IN (${REVOCATION_RECORD_TYPES.map((t) => `'${t}'`).join(', ')})`;

/**
 * The layout. Every payload is JSON text, as in the MongoDB store; the columns beside it are what is looked up or
 * filtered on. Times are epoch milliseconds. No foreign keys: each table stands alone, as each collection does.
 *
 * - `oidc_records`: every oidc-provider model, keyed by (model, id); `expires_at` NULL means no expiry (clients).
 * - `revoked_tokens`, `nonces`, `attempts`: the denylist, sign-in nonces and attempt counters.
 * - `signing_keys`, `key_transitions`: insert-only; `seq` unique (the single-writer guard), MACs set at most once.
 * - `audit_records`: one row per record, unique per (chain, seq); the default chain is ''.
 */
export const SCHEMA = `
CREATE TABLE IF NOT EXISTS oidc_records (
  model TEXT NOT NULL,
  id TEXT NOT NULL,
  payload TEXT NOT NULL,
  expires_at INTEGER,
  grant_id TEXT,
  uid TEXT,
  user_code TEXT,
  client_id TEXT,
  consumed INTEGER,
  PRIMARY KEY (model, id)
);
CREATE INDEX IF NOT EXISTS oidc_records_expires_at ON oidc_records (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_records_grant_id ON oidc_records (model, grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_records_client_id ON oidc_records (model, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_records_uid ON oidc_records (model, uid) WHERE uid IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_records_user_code ON oidc_records (model, user_code) WHERE user_code IS NOT NULL;
CREATE INDEX IF NOT EXISTS oidc_records_grant_account ON oidc_records (json_extract(payload, '$.accountId')) WHERE model = 'Grant';
CREATE INDEX IF NOT EXISTS oidc_records_session_account ON oidc_records (json_extract(payload, '$.accountId')) WHERE model = 'Session';

CREATE TABLE IF NOT EXISTS revoked_tokens (
  jti TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expires_at ON revoked_tokens (expires_at);

CREATE TABLE IF NOT EXISTS nonces (
  nonce TEXT PRIMARY KEY,
  binding TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  consumed INTEGER
);
CREATE INDEX IF NOT EXISTS nonces_expires_at ON nonces (expires_at);

CREATE TABLE IF NOT EXISTS attempts (
  key TEXT PRIMARY KEY,
  taken INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_expires_at ON attempts (expires_at);

CREATE TABLE IF NOT EXISTS signing_keys (
  kid TEXT PRIMARY KEY,
  seq INTEGER NOT NULL UNIQUE,
  record TEXT NOT NULL,
  mac TEXT
);

CREATE TABLE IF NOT EXISTS key_transitions (
  kid TEXT NOT NULL,
  type TEXT NOT NULL,
  record TEXT NOT NULL,
  mac TEXT,
  PRIMARY KEY (kid, type)
);

CREATE TABLE IF NOT EXISTS audit_records (
  chain TEXT NOT NULL,
  seq INTEGER NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY (chain, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_records_revocations ON audit_records ${REVOKED_BY} WHERE ${IS_REVOCATION};

CREATE TABLE IF NOT EXISTS audit_checkpoints (
  chain TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  record TEXT NOT NULL
) WITHOUT ROWID;
`;

/** Statements run before SCHEMA on a file below a version (in the same transaction): [version, statement]. */
const UPGRADES: ReadonlyArray<readonly [number, string]> = [[3, 'DROP INDEX IF EXISTS audit_records_revocations']];

/**
 * The health ping's write: one row of the attempts table (no limit's key starts with `health:`), its expiry moved on.
 * The sweep removes it a minute after the last server pinging this file stopped.
 */
const PING_WRITE = `INSERT INTO attempts (key, taken, expires_at) VALUES ('health:ping', 0, ?)
  ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at`;
const PING_ROW_TTL_MS = 60_000;

/** Tables whose rows carry `expires_at`: the sweep's work list. */
const EXPIRING = ['oidc_records', 'revoked_tokens', 'nonces', 'attempts'] as const;
/** Rows one sweep statement deletes at most. */
const SWEEP_BATCH = 500;

interface SqliteError extends Error {
  errcode?: number;
  errstr?: string;
}

/** SQLITE_BUSY, whatever its extended code (BUSY_RECOVERY, BUSY_SNAPSHOT, ...), also as the cause of a StorageUnavailableError. */
function isBusy(err: unknown): boolean {
  const sqlite = (err instanceof StorageUnavailableError ? err.cause : err) as SqliteError | undefined;
  return typeof sqlite?.errcode === 'number' && (sqlite.errcode & 0xff) === 5;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Runs `step` of opening the file again while it fails with SQLITE_BUSY, until `deadline` (performance.now()),
 * blocking (it runs once, at start, before anything is served). Needed because SQLite answers some lock conflicts with SQLITE_BUSY at
 * once, without its busy handler: when waiting could deadlock, as when several processes switch a new file to WAL at
 * the same moment (`agentauth start --workers N` on a fresh data directory), each holding the shared lock the others
 * need released.
 */
function whileBusy<T>(deadline: number, step: () => T): T {
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    try {
      return step();
    } catch (err) {
      if (!isBusy(err) || performance.now() >= deadline) throw err;
      // Randomised, so that processes that collided once do not collide again in step.
      Atomics.wait(sleeper, 0, 0, wait * (0.5 + Math.random()));
    }
  }
}

/**
 * Every failure of the database becomes StorageUnavailableError, so that callers fail closed (503), as with MongoDB:
 * SQLITE_BUSY after busy_timeout (another process held the write lock too long), I/O errors, a full disk, a file that
 * is not a database, a closed database. Constraint violations that mean "taken" never get here: the statements that
 * can meet one say `ON CONFLICT` and report through `changes`.
 */
function unavailable(op: string, err: unknown): StorageUnavailableError {
  if (err instanceof StorageUnavailableError) return err;
  const e = err as SqliteError;
  const detail = typeof e?.errcode === 'number' ? `SQLite error ${e.errcode}: ${e.message}${sqliteErrorHint(e.errcode)}` : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new StorageUnavailableError(`SQLite ${op} failed (${detail})`, { cause: err });
}

/**
 * This process's access to the file: a connection on the event loop for reads (short indexed statements; in WAL mode
 * a reader never waits for a writer), and a SqliteWriter whose thread runs every write (see sqlite-writer.ts). A
 * write's promise resolves once its transaction has committed (and, with `full`, its WAL is fsynced), so a read made
 * after a write was acknowledged sees it.
 */
class Connection {
  readonly #statements = new Map<string, StatementSync>();
  /** The file this connection opened (device and inode), to tell when the name no longer leads to it. */
  readonly opened: { dev: number; ino: number } | undefined;

  constructor(
    readonly db: DatabaseSync,
    readonly writer: SqliteWriter,
    file?: string,
  ) {
    const st = file === undefined ? undefined : statSync(file, { throwIfNoEntry: false });
    this.opened = st && { dev: st.dev, ino: st.ino };
  }

  /** One write statement, acknowledged once committed: the number of rows it changed. */
  async write(op: string, sql: string, ...params: SQLInputValue[]): Promise<number> {
    const [changed] = await this.writer.run(op, [{ sql, params }]);
    return Number(changed);
  }

  /**
   * Several write statements as one unit, run in order until the first that changes no row (all of them or that
   * prefix, atomically); acknowledged once committed. Returns how many changed a row before that.
   */
  async writePrefix(op: string, statements: { sql: string; params: SQLInputValue[] }[]): Promise<number> {
    const out = await this.writer.run(op, statements, true);
    return out.filter((changed) => Number(changed) > 0).length;
  }

  #prepare(sql: string): StatementSync {
    let stmt = this.#statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  get<T>(op: string, sql: string, ...params: SQLInputValue[]): T | undefined {
    try {
      return this.#prepare(sql).get(...params) as T | undefined;
    } catch (err) {
      throw unavailable(op, err);
    }
  }

  all<T>(op: string, sql: string, ...params: SQLInputValue[]): T[] {
    try {
      return this.#prepare(sql).all(...params) as T[];
    } catch (err) {
      throw unavailable(op, err);
    }
  }

  /**
   * Runs `fn` in a write transaction on the event loop's connection, committed before it returns: only when the
   * store is opened (creating the tables), before the writer thread starts. BEGIN IMMEDIATE takes the write lock
   * first (waiting up to busy_timeout), so a transaction never has to upgrade a read lock, which in WAL mode can fail
   * at once with SQLITE_BUSY.
   */
  transaction<T>(op: string, fn: () => T): T {
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      throw unavailable(op, err);
    }
    try {
      const result = fn();
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      try {
        if (this.db.isTransaction) this.db.exec('ROLLBACK');
      } catch {
        // The connection is broken; the error below says why.
      }
      throw unavailable(op, err);
    }
  }
}

interface RecordRow {
  payload: string;
  consumed: number | null;
}

/**
 * Where a consumed record's successor (ModelStore.setSuccessor) is kept: a member of the stored JSON payload, written
 * by one conditional UPDATE and never handed back as part of the payload. No schema change, so older files read as before.
 */
const SUCCESSOR = '$.__agentauth_successor';

/** A row's payload as oidc-provider wrote it; UnreadableRecordError when its text is not a JSON object. */
function toPayload(row: RecordRow | undefined, model: ModelName, id?: string): AdapterPayload | undefined {
  if (!row) return undefined;
  const payload = decodeStoredPayload<AdapterPayload>(row.payload, model, id);
  delete payload.__agentauth_successor;
  if (row.consumed !== null) payload.consumed = row.consumed;
  return payload;
}

/** The live-record condition every read and every single-use write carries: expiry is never left to the sweep. */
const LIVE = '(expires_at IS NULL OR expires_at > ?)';

const UPSERT = `INSERT INTO oidc_records (model, id, payload, expires_at, grant_id, uid, user_code, client_id, consumed)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, expires_at = excluded.expires_at,
    grant_id = excluded.grant_id, uid = excluded.uid, user_code = excluded.user_code, client_id = excluded.client_id,
    consumed = excluded.consumed`;
/** Params: consumed (epoch s), model, id, now (ms). */
const CONSUME = `UPDATE oidc_records SET consumed = ? WHERE model = ? AND id = ? AND consumed IS NULL AND ${LIVE}`;
/** Params: successor, model, id, now (ms). */
const SET_SUCCESSOR = `UPDATE oidc_records SET payload = json_set(payload, '${SUCCESSOR}', ?)
  WHERE model = ? AND id = ? AND consumed IS NOT NULL AND json_extract(payload, '${SUCCESSOR}') IS NULL AND ${LIVE}`;

class SqliteModelStore implements ModelStore {
  constructor(
    private readonly model: ModelName,
    private readonly conn: () => Connection,
    private readonly onUnreadable?: UnreadableListener,
  ) {}

  /** A lookup's row decoded; an unreadable one is absent (errors.ts `absentIfUnreadable`). */
  #found(row: RecordRow | undefined): AdapterPayload | undefined {
    return absentIfUnreadable(() => toPayload(row, this.model), this.onUnreadable);
  }

  /** The row's values, validated: the id and the looked-up fields are identifiers (validate.ts) or absent. */
  #row(id: string, payload: AdapterPayload, expiresIn?: number): SQLInputValue[] {
    checkKey('id', id);
    const field = (name: string, value: unknown) => (value === undefined ? null : checkKey(name, value));
    return [
      this.model,
      id,
      JSON.stringify(payload),
      expiresIn ? Date.now() + expiresIn * 1000 : null,
      field('grantId', payload.grantId),
      field('uid', payload.uid),
      field('userCode', payload.userCode),
      field('clientId', payload.clientId),
      typeof payload.consumed === 'number' ? payload.consumed : null,
    ];
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    await this.conn().write('upsert', UPSERT, ...this.#row(id, payload, expiresIn));
  }

  async insertOnce(id: string, payload: AdapterPayload, expiresIn: number): Promise<boolean> {
    const row = this.#row(id, payload, expiresIn);
    // One statement: insert, or take over the id only if its record has expired (not yet swept). SQLite runs one
    // writer at a time across every connection and process, so of concurrent calls exactly one changes a row.
    const changed = await this.conn().write(
      'insertOnce',
      `INSERT INTO oidc_records (model, id, payload, expires_at, grant_id, uid, user_code, client_id, consumed)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, expires_at = excluded.expires_at,
         grant_id = excluded.grant_id, uid = excluded.uid, user_code = excluded.user_code, client_id = excluded.client_id,
         consumed = excluded.consumed
       WHERE oidc_records.expires_at IS NOT NULL AND oidc_records.expires_at <= ?`,
      ...row,
      Date.now(),
    );
    return changed === 1;
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(id)) return undefined;
    return this.#found(this.conn().get<RecordRow>('find', `SELECT payload, consumed FROM oidc_records WHERE model = ? AND id = ? AND ${LIVE}`, this.model, id, Date.now()));
  }

  async list(after: string | undefined, limit: number): Promise<Array<{ id: string; payload: AdapterPayload }>> {
    const rows = this.conn().all<RecordRow & { id: string }>(
      'list',
      `SELECT id, payload, consumed FROM oidc_records WHERE model = ? AND id > ? AND ${LIVE} ORDER BY id LIMIT ?`,
      this.model, after ?? '', Date.now(), Math.max(0, limit),
    );
    return rows.map((r) => ({ id: r.id, payload: toPayload(r, this.model, r.id)! }));
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(uid)) return undefined;
    return this.#found(this.conn().get<RecordRow>('findByUid', `SELECT payload, consumed FROM oidc_records WHERE model = ? AND uid = ? AND ${LIVE} LIMIT 1`, this.model, uid, Date.now()));
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(userCode)) return undefined;
    return this.#found(
      this.conn().get<RecordRow>('findByUserCode', `SELECT payload, consumed FROM oidc_records WHERE model = ? AND user_code = ? AND ${LIVE} LIMIT 1`, this.model, userCode, Date.now()),
    );
  }

  async consume(id: string): Promise<boolean> {
    if (!isValidKey(id)) return false;
    const now = Date.now();
    // One UPDATE whose WHERE holds the whole condition (live, not yet consumed). SQLite serialises writers across
    // connections and processes, and a statement sees the effects of the one before it: exactly one call changes the row.
    const changed = await this.conn().write('consume', CONSUME, Math.floor(now / 1000), this.model, id, now);
    return changed === 1;
  }

  async setSuccessor(id: string, successor: string): Promise<boolean> {
    if (!isValidKey(id)) return false;
    checkKey('successor', successor);
    // One UPDATE whose WHERE holds the whole condition (live, consumed, no successor yet): exactly one call changes the row.
    const changed = await this.conn().write('setSuccessor', SET_SUCCESSOR, successor, this.model, id, Date.now());
    return changed === 1;
  }

  /** consume, upsert and setSuccessor as one job: the statements after the consume run only if it changed the row. */
  async rotate(consumedId: string, id: string, payload: AdapterPayload, expiresIn: number | undefined, recordSuccessor: boolean): Promise<boolean> {
    if (!isValidKey(consumedId)) return false;
    const row = this.#row(id, payload, expiresIn); // checks id too
    const now = Date.now();
    const changed = await this.conn().writePrefix('rotate', [
      { sql: CONSUME, params: [Math.floor(now / 1000), this.model, consumedId, now] },
      { sql: UPSERT, params: row },
      ...(recordSuccessor ? [{ sql: SET_SUCCESSOR, params: [id, this.model, consumedId, now] }] : []),
    ]);
    return changed >= 1;
  }

  async consumption(id: string): Promise<Consumption | undefined> {
    if (!isValidKey(id)) return undefined;
    const row = this.conn().get<{ consumed: number; successor: string | null }>(
      'consumption',
      `SELECT consumed, json_extract(payload, '${SUCCESSOR}') AS successor FROM oidc_records
       WHERE model = ? AND id = ? AND consumed IS NOT NULL AND ${LIVE}`,
      this.model,
      id,
      Date.now(),
    );
    if (!row) return undefined;
    return typeof row.successor === 'string' ? { at: row.consumed, successor: row.successor } : { at: row.consumed };
  }

  async destroy(id: string): Promise<void> {
    if (!isValidKey(id)) return;
    await this.conn().write('destroy', 'DELETE FROM oidc_records WHERE model = ? AND id = ?', this.model, id);
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (!isValidKey(grantId)) return;
    await this.conn().write('revokeByGrantId', 'DELETE FROM oidc_records WHERE model = ? AND grant_id = ?', this.model, grantId);
  }

  async revokeByClientId(clientId: string): Promise<void> {
    if (!isValidKey(clientId)) return;
    await this.conn().write('revokeByClientId', 'DELETE FROM oidc_records WHERE model = ? AND client_id = ?', this.model, clientId);
  }

  async idsByAccount(accountId: string, after: string | undefined, limit: number): Promise<AccountPage> {
    if (!isAccountLookup(accountId) || limit < 1) return { ids: [] };
    // Grant and Session through their partial index, named: SQLite uses one only for a query whose WHERE names its
    // condition (the model as a literal, not a parameter), and without INDEXED BY its planner walks the primary key
    // instead, for the ORDER BY (measured: linear in the number of grants).
    const indexed = ACCOUNT_INDEXED.has(this.model);
    const ids = this.conn()
      .all<{ id: string }>(
        'idsByAccount',
        `SELECT id FROM oidc_records ${indexed ? `INDEXED BY oidc_records_${this.model.toLowerCase()}_account` : ''}
           WHERE model = ${indexed ? `'${this.model}'` : '?'} AND json_extract(payload, '$.accountId') = ?
           AND id > ? AND ${LIVE} ORDER BY id LIMIT ?`,
        ...(indexed ? [] : [this.model]), accountId, after ?? '', Date.now(), limit,
      )
      .map((r) => r.id);
    return ids.length === limit ? { ids, next: ids.at(-1) } : { ids };
  }
}

class SqliteRevokedTokens implements RevokedTokenStore {
  constructor(private readonly conn: () => Connection) {}

  async revoke(jti: string, exp: number): Promise<void> {
    checkKey('jti', jti);
    // Idempotent; a second revocation with a later exp keeps the entry longer, never shorter.
    await this.conn().write(
      'revoke',
      'INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)',
      jti,
      exp * 1000,
    );
  }

  async isRevoked(jti: string): Promise<boolean> {
    if (!isValidKey(jti)) return false;
    return this.conn().get('isRevoked', 'SELECT 1 AS revoked FROM revoked_tokens WHERE jti = ? AND expires_at > ?', jti, Date.now()) !== undefined;
  }

  async anyRevoked(ids: readonly string[]): Promise<boolean> {
    const valid = checkLookup(ids).filter(isValidKey);
    if (valid.length === 0) return false;
    const sql = `SELECT 1 AS revoked FROM revoked_tokens WHERE jti IN (${valid.map(() => '?').join(', ')}) AND expires_at > ? LIMIT 1`;
    return this.conn().get('anyRevoked', sql, ...valid, Date.now()) !== undefined;
  }
}

/**
 * Nonces with their binding and consumed time, and attempt counters. Consume and takeAttempt are single statements
 * whose WHERE holds the whole condition; SQLite's one-writer-at-a-time makes each atomic across processes.
 */
class SqliteNonces implements NonceStore {
  constructor(private readonly conn: () => Connection) {}

  async issue(nonce: string, ttlSeconds: number, binding: string): Promise<void> {
    checkKey('nonce', nonce);
    checkKey('nonce binding', binding);
    // A live nonce is never re-issued (that would clear its consumed mark); an expired, unswept one may be.
    const changed = await this.#insertUnlessLive('nonce.issue', nonce, binding, ttlSeconds);
    if (changed !== 1) throw new StorageUnavailableError('SQLite nonce.issue failed (the nonce is already issued)');
  }

  /** Inserts a row, or takes over an expired, unswept one; a live row is left as it is (0 rows changed). */
  #insertUnlessLive(op: string, key: string, binding: string, ttlSeconds: number): Promise<number> {
    const now = Date.now();
    return this.conn().write(
      op,
      `INSERT INTO nonces (nonce, binding, expires_at, consumed) VALUES (?, ?, ?, NULL)
       ON CONFLICT (nonce) DO UPDATE SET binding = excluded.binding, expires_at = excluded.expires_at, consumed = NULL
       WHERE nonces.expires_at <= ?`,
      key,
      binding,
      now + ttlSeconds * 1000,
      now,
    );
  }

  async boundTo(nonce: string): Promise<string | undefined> {
    if (!isValidKey(nonce)) return undefined;
    return this.conn().get<{ binding: string }>('nonce.boundTo', 'SELECT binding FROM nonces WHERE nonce = ? AND expires_at > ?', nonce, Date.now())?.binding;
  }

  async consume(nonce: string): Promise<boolean> {
    if (!isValidKey(nonce)) return false;
    const now = Date.now();
    return await this.conn().write('nonce.consume', 'UPDATE nonces SET consumed = ? WHERE nonce = ? AND consumed IS NULL AND expires_at > ?', now, nonce, now) === 1;
  }

  async claim(key: string, value: string, ttlSeconds: number): Promise<string> {
    checkKey('claim key', key);
    checkKey('claim value', value);
    for (let attempt = 0; attempt < 3; attempt += 1) {
      // Inserted unless a live row holds the key; then whatever holds it is read back. The write lock orders claims:
      // a row this one found was committed before it.
      await this.#insertUnlessLive('nonce.claim', key, value, ttlSeconds);
      const held = await this.boundTo(key);
      if (held !== undefined) return held;
      // The holder expired between the write and the read: claim again.
    }
    throw new StorageUnavailableError('SQLite nonce.claim failed (the claim kept expiring as it was read)');
  }

  async release(key: string, value: string): Promise<void> {
    checkKey('claim key', key);
    checkKey('claim value', value);
    // One statement: a claim taken over by another value since is not this one's to withdraw.
    await this.conn().write('nonce.release', 'DELETE FROM nonces WHERE nonce = ? AND binding = ?', key, value);
  }

  async takeAttempt(key: string, limit: number, ttlSeconds: number): Promise<boolean> {
    checkKey('attempt key', key);
    if (!(limit >= 1)) return false;
    const now = Date.now();
    // One statement: the first take creates the counter; later ones increment it while it is below the limit. A
    // counter whose window has passed (not yet swept) starts over, as a swept one would.
    const changed = await this.conn().write(
      'nonce.takeAttempt',
      `INSERT INTO attempts (key, taken, expires_at) VALUES (?, 1, ?)
       ON CONFLICT (key) DO UPDATE SET
         taken = CASE WHEN attempts.expires_at <= ? THEN 1 ELSE attempts.taken + 1 END,
         expires_at = CASE WHEN attempts.expires_at <= ? THEN excluded.expires_at ELSE attempts.expires_at END
       WHERE attempts.expires_at <= ? OR attempts.taken < ?`,
      key,
      now + ttlSeconds * 1000,
      now,
      now,
      now,
      limit,
    );
    return changed === 1;
  }
}

/** JSON of a record without the fields that have columns of their own. */
function recordText<T extends object>(record: T, ...columns: Array<keyof T>): string {
  const rest = { ...record } as Record<string, unknown>;
  for (const c of columns) delete rest[c as string];
  return JSON.stringify(rest);
}

/**
 * A key or transition row's record, for the integrity check (keys/integrity.ts) to judge: text that is not JSON is
 * read as a record saying so (StoredKey.unreadable), refused by its kid like any altered record, not thrown as a
 * SyntaxError that would read as a storage outage.
 */
function keyRecord(text: string): object {
  try {
    return JSON.parse(text) as object;
  } catch {
    return { unreadable: `its stored record is not JSON${describeJsonError(text)}` };
  }
}

class SqliteKeyStore implements KeyStore {
  constructor(private readonly conn: () => Connection) {}

  async list(): Promise<StoredKey[]> {
    // The row's own kid and seq (its keys) over whatever the record says: a record copied into another row is then
    // read as what it claims to be somewhere it is not, and its MAC refuses it.
    const rows = this.conn().all<{ kid: string; seq: number; record: string; mac: string | null }>('keys.list', 'SELECT kid, seq, record, mac FROM signing_keys ORDER BY seq');
    return rows.map((r) => ({ ...(keyRecord(r.record) as Omit<StoredKey, 'kid'>), kid: r.kid, seq: Number(r.seq), ...(r.mac === null ? {} : { mac: r.mac }) }));
  }

  async insert(key: StoredKey): Promise<boolean> {
    // A taken kid or seq (both unique) means another writer got there first: nothing changes and the answer is false.
    const changed = await this.conn().write(
      'keys.insert',
      'INSERT INTO signing_keys (kid, seq, record, mac) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
      key.kid,
      key.seq,
      recordText(key, 'kid', 'mac'),
      key.mac ?? null,
    );
    return changed === 1;
  }

  async transitions(): Promise<KeyTransition[]> {
    const rows = this.conn().all<{ kid: string; type: string; record: string; mac: string | null }>('keys.transitions', 'SELECT kid, type, record, mac FROM key_transitions ORDER BY rowid');
    return rows.map((r) => ({ ...(keyRecord(r.record) as KeyTransition), kid: r.kid, type: r.type as KeyTransition['type'], ...(r.mac === null ? {} : { mac: r.mac }) }));
  }

  async addTransition(t: KeyTransition): Promise<boolean> {
    const changed = await this.conn().write(
      'keys.addTransition',
      'INSERT INTO key_transitions (kid, type, record, mac) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING',
      t.kid,
      t.type,
      recordText(t, 'mac'),
      t.mac ?? null,
    );
    return changed === 1;
  }

  async addKeyMac(kid: string, mac: string): Promise<void> {
    await this.conn().write('keys.addKeyMac', 'UPDATE signing_keys SET mac = ? WHERE kid = ? AND mac IS NULL', mac, kid);
  }

  async addTransitionMac(kid: string, type: KeyTransition['type'], mac: string): Promise<void> {
    await this.conn().write('keys.addTransitionMac', 'UPDATE key_transitions SET mac = ? WHERE kid = ? AND type = ? AND mac IS NULL', mac, kid, type);
  }

  async replaceKey(key: StoredKey, expectedMac: string): Promise<boolean> {
    const changed = await this.conn().write(
      'keys.replaceKey',
      'UPDATE signing_keys SET record = ?, mac = ? WHERE kid = ? AND seq = ? AND mac = ?',
      recordText(key, 'kid', 'mac'),
      key.mac ?? null,
      key.kid,
      key.seq,
      expectedMac,
    );
    return changed === 1;
  }

  async replaceTransitionMac(kid: string, type: KeyTransition['type'], expectedMac: string, mac: string): Promise<boolean> {
    const changed = await this.conn().write('keys.replaceTransitionMac', 'UPDATE key_transitions SET mac = ? WHERE kid = ? AND type = ? AND mac = ?', mac, kid, type, expectedMac);
    return changed === 1;
  }
}

class SqliteAuditStore implements AuditStore {
  constructor(private readonly conn: () => Connection) {}

  /**
   * A stored record with the `seq` of its row, not of its content: where a record is stored is what paging and the
   * next insert go by, and a record whose content says otherwise (a copy, an edit) then fails its hash when verified,
   * instead of sending a reader back over the same rows forever.
   */
  static #toRecord(row: { seq: number; record: string }, chain: string): AuditRecord {
    try {
      const value = JSON.parse(row.record) as AuditRecord;
      // The text must be exactly what insertBatch wrote (JSON.stringify of the record). A member named twice, which
      // JSON.parse reads as its last and the revocation index's json_extract as its first, could otherwise make a
      // record verify under its hash while the index reads another type: a revocation hidden from `agentauth verify`
      // in a log `audit verify` called intact.
      if (JSON.stringify(value) !== row.record) throw new Error('its stored text is not the JSON agentauth wrote (a member named twice, or the text edited)');
      return { ...value, seq: Number(row.seq) };
    } catch (err) {
      return undecodableRecord(chain, Number(row.seq), err);
    }
  }

  async head(chain: string = DEFAULT_AUDIT_CHAIN): Promise<AuditRecord | undefined> {
    const row = this.conn().get<{ seq: number; record: string }>('audit.head', 'SELECT seq, record FROM audit_records WHERE chain = ? ORDER BY seq DESC LIMIT 1', chain);
    return row ? SqliteAuditStore.#toRecord(row, chain) : undefined;
  }

  async insertBatch(records: AuditRecord[]): Promise<number> {
    if (records.length === 0) return 0;
    // One job: the records up to the first taken (chain, seq) go in, the rest do not, and the count is that prefix.
    const sql = 'INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?) ON CONFLICT DO NOTHING';
    return this.conn().writePrefix(
      'audit.insert',
      records.map((r) => ({ sql, params: [chainOf(r), r.seq, JSON.stringify(r)] })),
    );
  }

  async list(fromSeq: number, limit: number, chain: string = DEFAULT_AUDIT_CHAIN): Promise<AuditRecord[]> {
    const rows = this.conn().all<{ seq: number; record: string }>('audit.list', 'SELECT seq, record FROM audit_records WHERE chain = ? AND seq >= ? ORDER BY seq LIMIT ?', chain, fromSeq, limit);
    return rows.map((r) => SqliteAuditStore.#toRecord(r, chain));
  }

  async chains(): Promise<string[]> {
    const rows = this.conn().all<{ chain: string }>('audit.chains', 'SELECT DISTINCT chain FROM audit_records');
    const ids = rows.map((r) => r.chain).filter(validChain);
    return ids.sort();
  }

  async strays(limit: number): Promise<string[]> {
    const conn = this.conn();
    // A seq that `list` (seq >= 1) never reaches: numbers below 1. Text and blobs sort above every number in SQLite,
    // so `list` does reach those, and verification reports them where they stand.
    const rows = conn.all<{ chain: unknown; seq: unknown }>('audit.strays', "SELECT chain, seq FROM audit_records WHERE typeof(seq) IN ('integer', 'real') AND seq < 1 LIMIT ?", limit);
    const named = conn.all<{ chain: unknown }>('audit.chains', 'SELECT DISTINCT chain FROM audit_records');
    for (const { chain } of named) {
      if (rows.length >= limit) break;
      if (typeof chain === 'string' && validChain(chain)) continue;
      rows.push(...conn.all<{ chain: unknown; seq: unknown }>('audit.strays', 'SELECT chain, seq FROM audit_records WHERE chain = ? ORDER BY seq LIMIT ?', chain as SQLInputValue, limit - rows.length));
    }
    // A row below seq 1 under an unknown chain name is found by both reads: it is named once.
    const places = rows.map(({ chain, seq }) => `${chain === DEFAULT_AUDIT_CHAIN ? '' : `chain ${JSON.stringify(String(chain))} `}seq ${String(seq)}`);
    return [...new Set(places)].slice(0, limit);
  }

  async revocations(keys: RevocationKeys, limit: number): Promise<AuditRecord[]> {
    const lookups = revocationLookups(keys);
    if (lookups.length === 0 || limit < 1) return [];
    // Through the index, named: without it the lookup fails rather than reading the whole log.
    const rows = this.conn().all<{ chain: string; seq: number; record: string }>(
      'audit.revocations',
      `SELECT chain, seq, record FROM audit_records INDEXED BY audit_records_revocations
         WHERE ${IS_REVOCATION} AND ${REVOKED_BY} IN (${lookups.map(() => '?').join(', ')}) ORDER BY chain, seq LIMIT ?`,
      ...lookups, limit,
    );
    // Only what a reading of the log reaches (a valid chain, seq from 1), decoded, and of the kind each key is for.
    return rows
      .filter((r) => typeof r.chain === 'string' && validChain(r.chain) && typeof r.seq === 'number' && r.seq >= 1)
      .map((r) => SqliteAuditStore.#toRecord(r, r.chain))
      .filter((r) => r.undecodable === undefined && revokesOneOf(r, keys));
  }

  async checkpoints(): Promise<AuditCheckpoint[]> {
    const conn = this.conn();
    // A file written before pruning existed has no such table until a server opens it (a read-only CLI does not).
    if (!conn.get('audit.checkpoints', "SELECT 1 AS found FROM sqlite_schema WHERE type = 'table' AND name = 'audit_checkpoints'")) return [];
    const rows = conn.all<{ chain: string; seq: number; record: string }>('audit.checkpoints', 'SELECT chain, seq, record FROM audit_checkpoints ORDER BY chain');
    return rows.map((r) => {
      let value: unknown;
      try {
        value = JSON.parse(r.record);
      } catch {
        value = undefined;
      }
      return checkpointFrom(r.chain, Number(r.seq), value);
    });
  }

  async prune(checkpoint: AuditCheckpoint, batch: number): Promise<number> {
    const conn = this.conn();
    const { chain } = checkpoint;
    // One conditional upsert: of two prunes racing, the higher checkpoint stays whatever order they commit in.
    await conn.write(
      'audit.checkpoint',
      'INSERT INTO audit_checkpoints (chain, seq, record) VALUES (?, ?, ?) ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, record = excluded.record WHERE excluded.seq > audit_checkpoints.seq',
      chain, checkpoint.seq, JSON.stringify(checkpoint),
    );
    const through = conn.get<{ seq: number }>('audit.checkpoints', 'SELECT seq FROM audit_checkpoints WHERE chain = ?', chain)?.seq ?? checkpoint.seq;
    let removed = 0;
    let from = conn.get<{ seq: number | null }>('audit.prune', 'SELECT min(seq) AS seq FROM audit_records WHERE chain = ?', chain)?.seq ?? null;
    while (from !== null && from <= through) {
      const to = Math.min(Number(through), Number(from) + batch - 1);
      removed += await conn.write('audit.prune', 'DELETE FROM audit_records WHERE chain = ? AND seq >= ? AND seq <= ?', chain, from, to);
      from = to + 1;
    }
    return removed;
  }
}

const validChain = (chain: string): boolean => chain === DEFAULT_AUDIT_CHAIN || AUDIT_CHAIN_ID.test(chain);

/** Open connections of this process, by file (see SqliteStorage.#acquire). */
const OPEN = new Map<string, { conn: Connection; refs: number }>();

export interface SqliteStorageOptions {
  /** The data directory; the database is `<dataDir>/agentauth.sqlite`. */
  dataDir: string;
  /**
   * How long a write waits for another process's write lock before it fails as StorageUnavailableError (SQLite's
   * busy_timeout, in the writer thread: the event loop does not wait).
   */
  busyTimeoutMs?: number;
  /** How long a write may go unanswered by the writer thread before it fails (default: busyTimeoutMs + 2 s). */
  writeTimeoutMs?: number;
  sweepIntervalMs?: number;
  /**
   * `full` (default): every commit is fsynced before it is acknowledged, so an acknowledged write survives a machine
   * crash too. `normal`: in WAL mode commits reach the operating system but are fsynced only at checkpoints, so an
   * acknowledged write survives a process crash, and a power loss or kernel panic may roll back the last transactions.
   */
  synchronous?: 'full' | 'normal';
  /**
   * Reads only (`agentauth config check`): opens a file that must already exist, creates neither it nor its tables,
   * starts no writer thread and no sweep; every write fails with StorageUnavailableError.
   */
  readOnly?: boolean;
  /** Told of a record a lookup found unreadable (not a JSON object) and answered as absent. */
  onUnreadable?: UnreadableListener;
}

/**
 * Why the store's file cannot be created in `dataDir`, where a look at the file system can tell: the directory, or the
 * nearest of its parents that exists, is not a directory (AGENTAUTH_DATA_DIR naming a file, say). Undefined otherwise.
 */
export function dataDirProblem(dataDir: string): string | undefined {
  for (let path = dataDir; ; path = dirname(path)) {
    let isDirectory: boolean;
    try {
      isDirectory = statSync(path).isDirectory();
    } catch {
      if (dirname(path) === path) return undefined;
      continue;
    }
    if (isDirectory) return undefined;
    return path === dataDir ? `the data directory ${dataDir} is a file, not a directory` : `the data directory ${dataDir} cannot be created: ${path} is a file, not a directory`;
  }
}

/**
 * The embedded store on SQLite (`node:sqlite`, built into Node 22): one database file in the data directory, WAL
 * journal, writes on a thread of their own, every commit fsynced before it is acknowledged (see Connection and
 * SqliteWriter). Several processes may open the same file (server workers, the CLI); SQLite lets one write at a time
 * and the others wait up to busy_timeout. See docs/operations.md, "The SQLite store".
 */
export class SqliteStorage implements Storage {
  readonly kind = 'sqlite' as const;
  readonly dataDir: string;
  /** `<dataDir>/agentauth.sqlite`. */
  readonly file: string;
  readonly keys: KeyStore;
  readonly revokedTokens: RevokedTokenStore;
  readonly nonces: NonceStore;
  readonly audit: AuditStore;
  readonly #models = new Map<ModelName, ModelStore>();
  readonly #busyTimeoutMs: number;
  readonly #sweepIntervalMs: number;
  readonly #writeTimeoutMs: number;
  readonly #synchronous: 'full' | 'normal';
  readonly #readOnly: boolean;
  #conn: Connection | undefined;
  /** Why the store can no longer be used by this process (its file removed or replaced under it), once ping saw it. */
  #lost: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #sweeping = false;

  constructor(options: SqliteStorageOptions) {
    this.dataDir = options.dataDir;
    this.file = join(options.dataDir, SQLITE_FILE);
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 2000;
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
    this.#writeTimeoutMs = options.writeTimeoutMs ?? this.#busyTimeoutMs + 2000;
    this.#synchronous = options.synchronous ?? 'full';
    this.#readOnly = options.readOnly ?? false;
    const conn = () => this.#connection();
    for (const name of MODEL_NAMES) this.#models.set(name, new SqliteModelStore(name, conn, options.onUnreadable));
    this.keys = new SqliteKeyStore(conn);
    this.revokedTokens = new SqliteRevokedTokens(conn);
    this.nonces = new SqliteNonces(conn);
    this.audit = new SqliteAuditStore(conn);
  }

  #connection(): Connection {
    if (!this.#conn) throw new StorageUnavailableError(`SQLite store ${this.file} is not open (init() not called, or closed)`);
    if (this.#lost !== undefined) throw new StorageUnavailableError(this.#lost);
    return this.#conn;
  }

  /** The thread that runs this process's writes to the file (tests). */
  get writer(): SqliteWriter {
    return this.#connection().writer;
  }

  /** The open database (for backups and tests); StorageUnavailableError when the store is not open. */
  get db(): DatabaseSync {
    return this.#connection().db;
  }

  /**
   * Opens the file (creating it, mode 0600, in a 0700 directory), sets the journal up and creates the tables; with
   * `readOnly`, opens an existing file only (see `readOnly`).
   */
  async init(): Promise<void> {
    if (this.#readOnly) {
      this.#conn ??= this.#openReadOnly();
      return;
    }
    if (!this.#conn) {
      const conn = this.#acquire();
      try {
        await conn.writer.start();
      } catch (err) {
        await this.#release(conn);
        throw err;
      }
      this.#conn = conn;
    }
    if (!this.#timer) {
      this.#timer = setInterval(() => {
        if (this.#sweeping) return;
        this.#sweeping = true;
        // Reads filter on expiry; a failed sweep only delays reclaiming space, and the next one retries.
        void this.sweep()
          .catch(() => undefined)
          .finally(() => {
            this.#sweeping = false;
          });
      }, this.#sweepIntervalMs);
      this.#timer.unref();
    }
  }

  /**
   * This process's connection to the file and its writer thread, shared by every SqliteStorage opened on it: one
   * thread per file, and the group commit gathers the writes of all of them.
   */
  #acquire(): Connection {
    const open = OPEN.get(this.file);
    if (open) {
      open.refs += 1;
      return open.conn;
    }
    const conn = this.#open();
    OPEN.set(this.file, { conn, refs: 1 });
    return conn;
  }

  #open(): Connection {
    const misplaced = dataDirProblem(this.dataDir);
    if (misplaced) throw new StorageUnavailableError(`SQLite open ${this.file} failed (${misplaced})`);
    let db: DatabaseSync;
    try {
      mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
      // Created here with mode 0600; SQLite gives its -wal and -shm files the database file's mode.
      closeSync(openSync(this.file, 'a', 0o600));
      db = new DatabaseSync(this.file, { timeout: this.#busyTimeoutMs, enableForeignKeyConstraints: false });
    } catch (err) {
      throw unavailable(`open ${this.file}`, err);
    }
    try {
      // WAL: readers never block the writer and the writer never blocks readers, across processes; a commit is an
      // append to the -wal file. This connection only reads (and creates the tables below); the writer thread's
      // connection sets `synchronous` (FULL by default: a commit returns once the WAL is fsynced).
      // One deadline for every step of the open, so that a file kept busy fails it within about busyTimeoutMs (plus
      // the busy handler's own wait in the last try of the transaction below).
      const deadline = performance.now() + this.#busyTimeoutMs;
      const mode = whileBusy(deadline, () => db.prepare('PRAGMA journal_mode = WAL').get()) as { journal_mode?: string } | undefined;
      if (mode?.journal_mode !== 'wal') throw new Error(`journal_mode is ${String(mode?.journal_mode)}, not wal (a file system without shared memory?)`);
      db.exec('PRAGMA synchronous = FULL');
      const conn = new Connection(
        db,
        new SqliteWriter({ file: this.file, busyTimeoutMs: this.#busyTimeoutMs, synchronous: this.#synchronous, timeoutMs: this.#writeTimeoutMs }),
        this.file,
      );
      const schemaVersion = () => {
        const version = Number((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
        if (version > SCHEMA_VERSION) {
          throw new Error(`${this.file} has schema version ${version}, newer than this agentauth understands (${SCHEMA_VERSION}); upgrade agentauth`);
        }
        return version;
      };
      // Read first, without a lock: a file already at this version is left as it is. Otherwise the layout is created
      // (or completed) in one write transaction, which reads the version again (another process may have done it).
      if (whileBusy(deadline, schemaVersion) < SCHEMA_VERSION) {
        whileBusy(deadline, () => conn.transaction('create tables', () => {
          const version = schemaVersion();
          if (version === SCHEMA_VERSION) return;
          // What SCHEMA's IF NOT EXISTS cannot change: an index whose expression is new is dropped, to be built again.
          for (const [below, sql] of UPGRADES) if (version < below) db.exec(sql);
          db.exec(SCHEMA);
          db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
        }));
      }
      return conn;
    } catch (err) {
      try {
        db.close();
      } catch {
        // already unusable
      }
      throw unavailable(`open ${this.file}`, err);
    }
  }

  /**
   * A connection of its own that only reads: the file must exist (nothing is created), its layout must be one this
   * code reads, and the writer is closed before any write can reach it. A read-write connection, not SQLite's
   * read-only mode: closing it as the file's last connection removes the -wal and -shm files as a server's close does,
   * where a read-only connection would leave them behind.
   */
  #openReadOnly(): Connection {
    if (!existsSync(this.file)) throw new StorageUnavailableError(`SQLite open ${this.file} failed (there is no such file)`);
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(this.file, { timeout: this.#busyTimeoutMs, enableForeignKeyConstraints: false });
    } catch (err) {
      throw unavailable(`open ${this.file}`, err);
    }
    try {
      const version = Number((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version);
      if (version > SCHEMA_VERSION) {
        throw new Error(`${this.file} has schema version ${version}, newer than this agentauth understands (${SCHEMA_VERSION}); upgrade agentauth`);
      }
      const tables = db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table' AND name IN ('signing_keys', 'key_transitions')").get() as { n: number };
      if (Number(tables.n) !== 2) throw new Error(`${this.file} is not an agentauth store (it has no signing_keys and key_transitions tables)`);
    } catch (err) {
      db.close();
      throw unavailable(`open ${this.file}`, err);
    }
    const writer = new SqliteWriter({ file: this.file, busyTimeoutMs: this.#busyTimeoutMs, synchronous: this.#synchronous, timeoutMs: this.#writeTimeoutMs });
    void writer.close(); // no thread was started: from now on every write is refused
    return new Connection(db, writer);
  }

  model(name: ModelName): ModelStore {
    const store = this.#models.get(name);
    if (!store) throw new Error(`unknown model ${name}`);
    return store;
  }

  /**
   * Deletes expired rows; reads never return them anyway, this only reclaims space. Works in batches of
   * SWEEP_BATCH rows, yielding between them, so that no statement holds the write lock (or this event loop) for long
   * however much has expired. Returns how many rows went.
   */
  async sweep(): Promise<number> {
    let deleted = 0;
    for (const table of EXPIRING) {
      for (;;) {
        const n = await this.#connection().write(
          'sweep',
          `DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE expires_at <= ? LIMIT ${SWEEP_BATCH})`,
          Date.now(),
        );
        deleted += n;
        if (n < SWEEP_BATCH) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    return deleted;
  }

  /**
   * Reads the schema from the file (fails when the file cannot be read or the store is not open), then, unless the
   * store is read-only, has the writer thread write one row (PING_WRITE): riding in the next group commit, it costs no
   * commit of its own, and it fails while another process holds the lock past busy_timeout, the thread does not
   * answer (a hung disk), or the write itself fails (a full disk, a file made read-only or immutable, an I/O error).
   * So /readyz and the health checks see a store that cannot be written to as down, not only one that cannot be read.
   * A ping that only took the lock passed on a full disk: /readyz said ready while every write failed, and each failed
   * write marked storage down until the next ping brought it "back" a second later, over and over.
   */
  async ping(): Promise<void> {
    const conn = this.#connection();
    // An open file whose name was removed or now leads to another file (the data directory deleted, a backup copied
    // over a running server's store) still answers every read and write, and everything written from then on is lost
    // with the process: storage counts as down until the process is restarted on the file as it is now.
    // From then on every read and write of this process fails too, not only the ping: a path that does not wait for
    // the health check (the admin listener's) would otherwise answer reads from the lost file and acknowledge writes
    // that a restart undoes (a client deleted, then back).
    const now = statSync(this.file, { throwIfNoEntry: false });
    if (conn.opened && (!now || now.dev !== conn.opened.dev || now.ino !== conn.opened.ino)) {
      this.#lost = `SQLite store ${this.file} was ${now ? 'replaced by another file' : 'removed'} while this process had it open (what it writes now would be lost): restart agentauth on the store as it is now`;
      throw new StorageUnavailableError(this.#lost);
    }
    conn.get('ping', 'SELECT count(*) AS n FROM sqlite_schema');
    if (!this.#readOnly) await conn.writer.run('ping', [{ sql: PING_WRITE, params: [Date.now() + PING_ROW_TTL_MS], read: false }]);
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn && this.#readOnly) conn.db.close();
    else if (conn) await this.#release(conn);
  }

  /**
   * Drops this store's reference to the process's connection; the last one lets the writer thread commit what it
   * holds and exit, then closes the reading connection (SQLite then folds the WAL into the file and deletes it, if no
   * other process has the file open).
   */
  async #release(conn: Connection): Promise<void> {
    const open = OPEN.get(this.file);
    if (open?.conn === conn && --open.refs > 0) return;
    if (open?.conn === conn) OPEN.delete(this.file);
    await conn.writer.close();
    try {
      conn.db.close();
    } catch (err) {
      throw unavailable('close', err);
    }
  }
}
