import { Worker } from 'node:worker_threads';

/**
 * WAL checkpoints off the event loop. A checkpoint copies the pages committed to the -wal file back into the database
 * file and fsyncs both; SQLite runs one inside whichever COMMIT finds the WAL over 1000 pages, so with node:sqlite
 * every few hundred requests one of them stalls the whole process for the copy and two fsyncs (measured on the 2-core
 * VM: about 40 µs per commit on average, half of a commit's cost). Instead, the store's connection turns automatic
 * checkpoints off and this worker thread, on a connection of its own, runs a PASSIVE checkpoint every `intervalMs`:
 * PASSIVE never waits for and never blocks readers or writers, and with synchronous=FULL on that connection the
 * checkpoint syncs the WAL before it copies and the database file before it lets the WAL be reused.
 *
 * If the worker cannot start or dies, `onLost` is called once, and the caller turns automatic checkpoints back on.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
process.removeAllListeners('warning');
const { DatabaseSync } = require('node:sqlite');
const db = new DatabaseSync(workerData.file, { timeout: 0 });
db.exec('PRAGMA synchronous = FULL');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
const timer = setInterval(() => {
  try {
    checkpoint.get();
  } catch {
    // SQLITE_BUSY: another process is checkpointing; the next interval tries again.
  }
}, workerData.intervalMs);
parentPort.on('message', (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  try {
    checkpoint.get();
  } catch {
    // as above
  }
  db.close();
  parentPort.close();
});
parentPort.postMessage('ready');
`;

export class Checkpointer {
  readonly #worker: Worker;
  #stopped = false;
  readonly #exited: Promise<void>;

  /** Resolves once the worker has opened the database; rejects if it could not. */
  readonly ready: Promise<void>;

  constructor(file: string, intervalMs: number, onLost: (err: unknown) => void) {
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { file, intervalMs },
      // It allocates next to nothing: small heaps keep the thread's memory small (about 14 MB of RSS with V8's defaults).
      resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 8, codeRangeSizeMb: 2, stackSizeMb: 1 },
    });
    this.#worker.unref();
    let lost = false;
    const lose = (err: unknown) => {
      if (lost || this.#stopped) return;
      lost = true;
      onLost(err);
    };
    this.ready = new Promise<void>((resolve, reject) => {
      this.#worker.once('message', () => resolve());
      this.#worker.once('error', reject);
      this.#worker.once('exit', (code) => reject(new Error(`checkpoint worker exited with code ${code}`)));
    });
    this.ready.catch(() => undefined);
    this.#worker.on('error', lose);
    this.#exited = new Promise<void>((resolve) => {
      this.#worker.once('exit', (code) => {
        lose(new Error(`checkpoint worker exited with code ${code}`));
        resolve();
      });
    });
  }

  /** Ends the worker abruptly, as a crash would (tests: the store must fall back to automatic checkpoints). */
  async kill(): Promise<void> {
    await this.#worker.terminate();
  }

  /** Runs a last checkpoint, closes the worker's connection and waits (at most `timeoutMs`) for it to exit. */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.#stopped) return this.#exited;
    this.#stopped = true;
    this.#worker.postMessage('stop');
    const timer = setTimeout(() => void this.#worker.terminate(), timeoutMs);
    await this.#exited;
    clearTimeout(timer);
  }
}
