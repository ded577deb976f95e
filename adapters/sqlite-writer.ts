import { Worker } from 'node:worker_threads';
import type { SQLInputValue } from 'node:sqlite';

import { StorageUnavailableError } from './errors.js';

/**
 * The SQLite store's writes, run on a worker thread with a connection of its own, so that nothing a write waits for
 * blocks the event loop: not the fsync of each commit, not the WAL checkpoints SQLite runs inside a commit, not
 * another process's write lock (up to busy_timeout). Reads stay on the event loop's connection: short indexed
 * statements that WAL never makes wait.
 *
 * Group commit: the jobs of one event-loop turn travel to the thread in one message, and the thread puts every job
 * that arrived while it was busy into one transaction (each job in a
 * savepoint of its own, so one failing job leaves the others intact), commits it with `synchronous=FULL` (the commit
 * returns once the WAL is fsynced) and only then answers every job of the group in one message. So a job's promise
 * resolves only once its writes are on disk, and a busy server pays one fsync for many writes. Each job is one
 * statement, or a short list run in order ("prefix" jobs stop at the first statement that changes nothing, which is
 * how the audit log inserts a batch up to the first taken sequence number): single use stays one conditional
 * statement, and SQLite serialises writers across threads and processes.
 *
 * Failing closed: a job that fails (SQLITE_BUSY after busy_timeout, an I/O error, a full disk) rejects with
 * StorageUnavailableError (503). A job not answered within `timeoutMs` rejects too (a hung disk); it may still be
 * applied later, as with a timed-out MongoDB write. If the thread dies, every job in flight rejects and the next job
 * starts a new thread.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
process.removeAllListeners('warning');
const { DatabaseSync } = require('node:sqlite');
const { file, busyTimeoutMs, synchronous } = workerData;
let db;
try {
  // No busy handler (timeout 0): BEGIN IMMEDIATE waits up to busyTimeoutMs for another process's write lock in begin().
  db = new DatabaseSync(file, { timeout: 0, enableForeignKeyConstraints: false });
  db.exec(synchronous === 'normal' ? 'PRAGMA synchronous = NORMAL' : 'PRAGMA synchronous = FULL');
} catch (err) {
  parentPort.postMessage({ fatal: describe(err) });
  process.exit(1);
}
const statements = new Map();
function prepare(sql) {
  let stmt = statements.get(sql);
  if (!stmt) {
    stmt = db.prepare(sql);
    statements.set(sql, stmt);
  }
  return stmt;
}
function describe(err) {
  return { message: err && err.message ? String(err.message) : String(err), errcode: typeof err?.errcode === 'number' ? err.errcode : undefined };
}
// Waiting for another writer (another process on the same file: server workers, the CLI). SQLite's own busy handler
// sleeps ever longer between tries (up to 100 ms), while a busy writer of another process takes the lock again within
// microseconds of each commit: under sustained load from two workers one of them could wait out busy_timeout and fail
// (503). So: try again after 0.1 ms, doubling up to POLL_MAX_MS, and while another writer has been seen lately, leave
// the lock free for GAP_MS after each commit before taking it again, longer than the waiter's longest pause, so that
// whoever waits gets it next. Both are short because every token waits for two commits in turn and each may wait for
// the other writer's: a gap of 1.5 ms (with pauses of up to 1 ms) held two workers to 0.75-0.9x one process's tokens
// per second (docs/performance.md, twenty-second round). A failed try costs about 6 µs of CPU, so a wait that lasts
// beyond LONG_WAIT_MS (a lock held for long, not turns being taken) pauses up to POLL_LONG_MS: a second's wait costs
// 50-70 ms of CPU instead of 140.
const POLL_MAX_MS = 0.25;
const GAP_MS = 0.3;
const LONG_WAIT_MS = 5;
const POLL_LONG_MS = 1;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const pause = (ms) => Atomics.wait(sleeper, 0, 0, ms);
let contendedUntil = 0;
let committedAt = 0;
const isBusy = (err) => typeof err?.errcode === 'number' && (err.errcode & 0xff) === 5;
// Takes the write lock for the group, waiting while another process holds it. Each job waits until its own deadline,
// busyTimeoutMs after it was sent (job.deadline, on this thread's monotonic clock): a job whose deadline passes is
// answered with the busy error and leaves the group, the others keep waiting. So jobs that arrived while an earlier
// group waited do not wait a whole busy_timeout again, and a job sent just now still gets its full wait. Returns the
// jobs still in the group (empty if none is left).
function begin(jobs) {
  const now = performance.now();
  if (now < contendedUntil && now - committedAt < GAP_MS) pause(GAP_MS - (now - committedAt));
  for (let wait = 0.1; ; wait = Math.min(wait * 2, performance.now() - now < LONG_WAIT_MS ? POLL_MAX_MS : POLL_LONG_MS)) {
    try {
      db.exec('BEGIN IMMEDIATE');
      return jobs;
    } catch (err) {
      if (!isBusy(err)) throw err;
      const at = performance.now();
      const expired = jobs.filter((j) => j.deadline <= at);
      if (expired.length > 0) {
        const error = describe(err);
        parentPort.postMessage(expired.map((j) => ({ id: j.id, error })));
        jobs = jobs.filter((j) => j.deadline > at);
        if (jobs.length === 0) return jobs;
      }
      contendedUntil = at + 1000;
      pause(wait);
    }
  }
}
let queue = [];
let scheduled = false;
let stopping = false;
function runJob(job) {
  const out = [];
  for (const s of job.statements) {
    if (s.read) {
      out.push(prepare(s.sql).get(...s.params));
      continue;
    }
    const changes = Number(prepare(s.sql).run(...s.params).changes);
    out.push(changes);
    if (job.prefix && changes === 0) break;
  }
  return out;
}
function flush() {
  scheduled = false;
  let jobs = queue;
  queue = [];
  if (jobs.length === 0) return;
  const results = [];
  try {
    jobs = begin(jobs);
    if (jobs.length === 0) return;
  } catch (err) {
    const error = describe(err);
    parentPort.postMessage(jobs.map((j) => ({ id: j.id, error })));
    return;
  }
  for (const job of jobs) {
    try {
      db.exec('SAVEPOINT job');
      const out = runJob(job);
      db.exec('RELEASE job');
      results.push({ id: job.id, out });
    } catch (err) {
      const error = describe(err);
      if (db.isTransaction) {
        try {
          db.exec('ROLLBACK TO job');
          db.exec('RELEASE job');
          results.push({ id: job.id, error });
          continue;
        } catch {}
      }
      // SQLite ended the transaction itself: nothing of this group is committed.
      for (const r of results) if (!r.error) { r.out = undefined; r.error = error; }
      results.push({ id: job.id, error });
      for (const rest of jobs.slice(jobs.indexOf(job) + 1)) results.push({ id: rest.id, error });
      parentPort.postMessage(results);
      return;
    }
  }
  try {
    db.exec('COMMIT');
    committedAt = performance.now();
  } catch (err) {
    const error = describe(err);
    try { if (db.isTransaction) db.exec('ROLLBACK'); } catch {}
    parentPort.postMessage(jobs.map((j) => ({ id: j.id, error })));
    return;
  }
  parentPort.postMessage(results);
}
parentPort.on('message', (message) => {
  if (message === 'stop') {
    stopping = true;
    flush();
    db.close();
    parentPort.close();
    return;
  }
  if (stopping) return;
  // A job's deadline for another process's lock: busyTimeoutMs after it was sent, less the time it took to get here
  // (the only use of the wall clock, Date.now() in both threads; a clock step moves one deadline, within 0 and
  // busyTimeoutMs).
  const now = performance.now();
  const wall = Date.now();
  for (const job of message) {
    job.deadline = now + Math.min(busyTimeoutMs, Math.max(0, busyTimeoutMs - (wall - job.sentAt)));
    queue.push(job);
  }
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
});
parentPort.postMessage({ ready: true });
`;

export interface WriteStatement {
  sql: string;
  params: SQLInputValue[];
  /** Read one row (`get`) instead of running a write: for tests and diagnostics of the writer's own connection. */
  read?: boolean;
}

interface Pending {
  op: string;
  resolve(out: unknown[]): void;
  reject(err: StorageUnavailableError): void;
  timer: NodeJS.Timeout;
}

interface WorkerError {
  message: string;
  errcode?: number;
}

type WorkerMessage = { ready: true } | { fatal: WorkerError } | { id: number; out?: unknown[]; error?: WorkerError }[];

export interface SqliteWriterOptions {
  file: string;
  busyTimeoutMs: number;
  synchronous: 'full' | 'normal';
  /** How long a job may go unanswered before it fails as StorageUnavailableError. */
  timeoutMs: number;
}

/**
 * What an operator does about a SQLite error code whose message does not say it: SQLITE_READONLY_DIRECTORY (1544)
 * reads "attempt to write a readonly database" though the file is writable and its directory is not.
 */
export function sqliteErrorHint(errcode: number | undefined): string {
  return errcode === 1544 ? '; the directory holding the store is not writable by this process, and SQLite creates its -wal and -shm files there' : '';
}

function failure(op: string, error: WorkerError): StorageUnavailableError {
  const detail = error.errcode === undefined ? error.message : `SQLite error ${error.errcode}: ${error.message}${sqliteErrorHint(error.errcode)}`;
  return new StorageUnavailableError(`SQLite ${op} failed (${detail})`);
}

export class SqliteWriter {
  readonly #options: SqliteWriterOptions;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #worker: Worker | undefined;
  /** Settles when the current thread has opened the database (or could not). */
  #ready: Promise<void> = Promise.resolve();
  #closed = false;
  /** Jobs of this event-loop turn, posted to the thread together on the next `setImmediate` (one message, not one each). */
  #outbox: { id: number; statements: WriteStatement[]; prefix: boolean; sentAt: number }[] = [];

  constructor(options: SqliteWriterOptions) {
    this.#options = options;
  }

  /** Starts the thread now (rather than at the first write) and waits until it has opened the database. */
  async start(): Promise<void> {
    this.#spawn();
    await this.#ready;
  }

  #spawn(): Worker {
    if (this.#worker) return this.#worker;
    const { file, busyTimeoutMs, synchronous } = this.#options;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { file, busyTimeoutMs, synchronous },
      // It holds prepared statements and SQLite's page cache, no JavaScript data to speak of.
      resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 16, stackSizeMb: 1 },
    });
    worker.unref();
    this.#ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (m: WorkerMessage) => {
        if (Array.isArray(m)) return;
        if ('ready' in m) resolve();
        else reject(failure(`open ${file} (writer thread)`, m.fatal));
      });
      worker.once('exit', (code) => reject(new StorageUnavailableError(`SQLite writer thread exited with code ${code} while opening ${file}`)));
    });
    this.#ready.catch(() => undefined);
    worker.on('message', (m: WorkerMessage) => {
      if (!Array.isArray(m)) return;
      for (const r of m) {
        const p = this.#pending.get(r.id);
        if (!p) continue; // timed out already
        this.#pending.delete(r.id);
        clearTimeout(p.timer);
        if (r.error) p.reject(failure(p.op, r.error));
        else p.resolve(r.out ?? []);
      }
    });
    worker.on('error', () => undefined); // 'exit' follows and fails what is in flight
    worker.on('exit', (code) => {
      if (this.#worker === worker) this.#worker = undefined;
      this.#failAll(`the SQLite writer thread exited (code ${code})`);
    });
    this.#worker = worker;
    return worker;
  }

  #failAll(why: string): void {
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new StorageUnavailableError(`SQLite ${p.op} failed (${why})`));
    }
  }

  /**
   * Runs `statements` as one job (see the class comment); resolves with each statement's number of changed rows (or
   * row, for `read`) once the transaction holding them has committed.
   */
  run(op: string, statements: WriteStatement[], prefix = false): Promise<unknown[]> {
    if (this.#closed) return Promise.reject(new StorageUnavailableError(`SQLite ${op} failed (the store is closed)`));
    this.#spawn();
    const id = this.#nextId++;
    return new Promise<unknown[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!this.#pending.delete(id)) return;
        reject(new StorageUnavailableError(`SQLite ${op} failed (no answer from the writer thread within ${this.#options.timeoutMs} ms)`));
      }, this.#options.timeoutMs);
      timer.unref();
      this.#pending.set(id, { op, resolve, reject, timer });
      if (this.#outbox.length === 0) setImmediate(() => this.#post());
      // When the caller asked: the thread waits for another process's lock until busyTimeoutMs after that.
      this.#outbox.push({ id, statements, prefix, sentAt: Date.now() });
    });
  }

  #post(): void {
    // A job failed meanwhile (a thread that died, a timeout) is not sent.
    const jobs = this.#outbox.filter((job) => this.#pending.has(job.id));
    this.#outbox = [];
    if (jobs.length > 0) this.#spawn().postMessage(jobs);
  }

  /** Ends the thread abruptly, as a crash would (tests). */
  async kill(): Promise<void> {
    await this.#worker?.terminate();
  }

  /** Lets the thread commit what it has, close its connection and exit (at most `timeoutMs`, then it is ended). */
  async close(timeoutMs = 5000): Promise<void> {
    this.#closed = true;
    if (this.#outbox.length > 0) this.#post(); // this turn's jobs go before the stop
    const worker = this.#worker;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage('stop');
    const timer = setTimeout(() => void worker.terminate(), timeoutMs);
    await exited;
    clearTimeout(timer);
  }
}
