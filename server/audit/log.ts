/**
 * Appends events to the hash-chained audit log (server/audit/chain.ts) through an AuditStore.
 *
 * One writer per AuditLog drains a queue: everything queued when a write starts goes into one batch (up to
 * maxBatch), chained after the cached head of this log's chain and inserted with `insertBatch`. Each server process
 * (and the CLI) writes its own chain, so writers do not normally meet; should two share a chain, seqs are unique per
 * chain in the store, so the insert stops at a seq the other took; the log then re-reads the head, re-chains the
 * events not yet written and tries again. There is no lock and no transaction: the unique seq is the only guarantee
 * needed, and both MongoDB and FerretDB keep it.
 *
 * `record()` resolves only once its own record is in the store, and rejects with the store's error
 * (StorageUnavailableError) when it cannot be written: callers fail closed and do not perform, or report success
 * for, an action whose audit record was refused. A rejected record may still have been written (a write can fail
 * after the server applied it), so the log may hold an event for an action that then failed; never the reverse.
 *
 * An event recorded while a request is handled gets that request's id as `details.request_id` (unless the caller
 * set one), the id its log lines and X-Request-Id response header carry (server/http/request-id.ts). It is part of
 * the hashed details like any other field, so records without it (written before, or outside any request) verify
 * as they always did.
 *
 * What goes into an event is the caller's responsibility: identifiers (client_id, sub, jti, kid, grant id), reasons
 * and outcomes only, never tokens, secrets, assertions, key material or anything else that grants access.
 */
import { StorageUnavailableError } from '../../adapters/errors.js';
import { AUDIT_CHAIN_ID, DEFAULT_AUDIT_CHAIN } from '../../adapters/types.js';
import type { AuditRecord, AuditStore } from '../../adapters/types.js';
import { currentRequest } from '../http/request-id.js';
import { chainRecords, normalizeEvent } from './chain.js';
import type { AuditEventInput, NormalizedEvent } from './chain.js';

export interface AuditLogOptions {
  /** Most events written in one batch (default 256). */
  maxBatch?: number;
  /** Clock for record times (default: the system clock). */
  now?: () => Date;
  /** How many times a batch is re-chained after other writers took its seqs before its events are refused (default 50). */
  maxAttempts?: number;
  /**
   * This writer's chain (default: the default chain). Give every concurrent writer its own (server processes,
   * the CLI): writers of one chain contend for its head, and under load the slower one starves.
   */
  chain?: string;
}

interface Pending {
  event: NormalizedEvent;
  resolve(record: AuditRecord): void;
  reject(err: unknown): void;
}

/** The AuditLog was closed; nothing more is accepted. */
export class AuditLogClosedError extends Error {
  readonly code = 'audit_log_closed';

  constructor() {
    super('the audit log is closed');
    this.name = 'AuditLogClosedError';
  }
}

/** The event with the current request's id in its details (see the header comment). */
function withRequestId(event: AuditEventInput): AuditEventInput {
  const request = currentRequest();
  if (!request || typeof event !== 'object' || event === null) return event;
  const details = event.details;
  if (details !== undefined && (typeof details !== 'object' || details === null || Array.isArray(details) || 'request_id' in details)) return event;
  return { ...event, details: { ...details, request_id: request.requestId } };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class AuditLog {
  readonly #store: AuditStore;
  readonly #maxBatch: number;
  readonly #maxAttempts: number;
  readonly #now: () => Date;
  readonly #chain: string;
  #queue: Pending[] = [];
  /** The writer while it runs. It never rejects: failures go to the events' own promises. */
  #writer: Promise<void> | undefined;
  /** Last record known to be in the store; only trusted while #headKnown. */
  #head: AuditRecord | undefined;
  #headKnown = false;
  #closed = false;
  /** Events in the batch being written (for `backlog`). */
  #writing = 0;

  constructor(store: AuditStore, opts: AuditLogOptions = {}) {
    this.#store = store;
    this.#maxBatch = Math.max(1, Math.floor(opts.maxBatch ?? 256));
    this.#maxAttempts = Math.max(1, Math.floor(opts.maxAttempts ?? 50));
    this.#now = opts.now ?? (() => new Date());
    this.#chain = opts.chain ?? DEFAULT_AUDIT_CHAIN;
    if (this.#chain !== DEFAULT_AUDIT_CHAIN && !AUDIT_CHAIN_ID.test(this.#chain)) {
      throw new TypeError(`audit chain id ${JSON.stringify(this.#chain)} must match ${AUDIT_CHAIN_ID.source}`);
    }
  }

  /** The chain this log appends to ('' for the default chain). */
  get chain(): string {
    return this.#chain;
  }

  /**
   * Appends one event. Resolves with the stored record once it is durably in the store; rejects with
   * InvalidAuditEventError (bad input, nothing queued), the store's error (usually StorageUnavailableError), or
   * AuditLogClosedError after close().
   */
  record(event: AuditEventInput): Promise<AuditRecord> {
    if (this.#closed) return Promise.reject(new AuditLogClosedError());
    let normalized: NormalizedEvent;
    try {
      normalized = normalizeEvent(withRequestId(event));
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<AuditRecord>((resolve, reject) => {
      this.#queue.push({ event: normalized, resolve, reject });
      this.#startWriter();
    });
  }

  /** Events accepted and not yet written or refused: queued, plus the batch being written (a metrics gauge). */
  get backlog(): number {
    return this.#queue.length + this.#writing;
  }

  /** Resolves once every event queued so far has been written or refused. */
  async flush(): Promise<void> {
    while (this.#writer) await this.#writer;
  }

  /** Refuses new events, then waits for the queued ones. Does not close the store. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.flush();
  }

  #startWriter(): void {
    if (this.#writer) return;
    this.#writer = this.#drain().finally(() => {
      this.#writer = undefined;
      // An event queued between the drain's last look at the queue and now.
      if (this.#queue.length > 0) this.#startWriter();
    });
  }

  async #drain(): Promise<void> {
    // Let this turn of the event loop queue up first: every request finishing in it shares one batch (one write),
    // which under load is the difference between a write per request and a write per dozens of them.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#maxBatch);
      this.#writing = batch.length;
      try {
        await this.#write(batch);
      } catch (err) {
        // #write settles every event itself; this only guards against a bug leaving them pending.
        for (const p of batch) p.reject(err);
      } finally {
        this.#writing = 0;
      }
    }
  }

  async #write(batch: Pending[]): Promise<void> {
    let pending = batch;
    let conflicts = 0;
    while (pending.length > 0) {
      let records: AuditRecord[];
      let inserted: number;
      let ownFound = false;
      try {
        if (!this.#headKnown) {
          const head = await this.#store.head(this.#chain);
          // The chain's newest stored record cannot be read: nothing is chained onto it (the log fails closed, and
          // `agentauth audit verify` names the record).
          if (head?.undecodable !== undefined) {
            throw new Error(`the newest audit record of this process's chain (seq ${head.seq}) cannot be read (${head.undecodable}); run agentauth audit verify`);
          }
          this.#head = head;
          this.#headKnown = true;
        }
        records = chainRecords(this.#head, pending.map((p) => p.event), this.#now, this.#chain);
        inserted = await this.#store.insertBatch(records);
      } catch (err) {
        this.#headKnown = false;
        for (const p of pending) p.reject(err);
        // Events queued while this write was failing (a hung store: up to storage.timeoutMs) would wait that long
        // again behind it; the store just failed, so they are refused with it and their requests fail closed now.
        if (err instanceof StorageUnavailableError) for (const p of this.#queue.splice(0)) p.reject(err);
        return;
      }
      if (inserted < records.length) {
        // A taken seq. After an ambiguous failure a retried write can find its own record there: that one counts.
        try {
          const [there] = await this.#store.list(records[inserted]!.seq, 1, this.#chain);
          if (there?.hash === records[inserted]!.hash) {
            inserted += 1;
            ownFound = true;
          }
        } catch {
          // Treated as a conflict: the head is re-read next, and a store that is down rejects the events then.
        }
      }
      for (let i = 0; i < inserted; i += 1) pending[i]!.resolve(records[i]!);
      // A copy: callers own the records they get back.
      if (inserted > 0) this.#head = { ...records[inserted - 1]! };
      if (inserted === records.length) return;
      pending = pending.slice(inserted);
      // Our own record at the taken seq: the chain is intact, carry on after it. Otherwise re-read the head.
      if (ownFound) continue;
      this.#headKnown = false;
      conflicts += 1;
      if (conflicts >= this.#maxAttempts) {
        const err = new StorageUnavailableError(
          `audit log: ${pending.length} event(s) not written after ${conflicts} attempts: other writers kept taking the next seq`,
        );
        for (const p of pending) p.reject(err);
        return;
      }
      await sleep(Math.random() * Math.min(2 ** conflicts, 20));
    }
  }
}
