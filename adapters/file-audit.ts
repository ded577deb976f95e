import { mkdir, open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

import { StorageUnavailableError } from './errors.js';
import { jsonCopy } from './json-copy.js';
import { DEFAULT_AUDIT_CHAIN, chainOf, revokesOneOf } from './types.js';
import type { AuditCheckpoint, AuditRecord, AuditStore, RevocationKeys } from './types.js';

/**
 * The embedded store's audit log: an append-only JSON-lines file in the data directory (mode 0600). Only the heads
 * of the chains this process appends to are kept in memory, so the log neither grows the process nor disappears on
 * restart; the CLI reads the same file. Appends are serialised in-process; another process (the CLI) appends its
 * own chain to the same file with single `write` calls on an O_APPEND descriptor, which leaves this process's
 * chain heads valid.
 */
export class FileAuditStore implements AuditStore {
  readonly #file: string;
  /** Heads of the chains this process has appended to or looked up (a chain is read from the file once). */
  readonly #heads = new Map<string, AuditRecord | undefined>();
  #queue: Promise<unknown> = Promise.resolve();
  /** Kept open for appending: one write per batch, no open/close per write. */
  #handle: FileHandle | undefined;

  constructor(private readonly dataDir: string) {
    this.#file = join(dataDir, 'audit.jsonl');
  }

  /** The file the log is kept in. */
  get path(): string {
    return this.#file;
  }

  async #readAll(): Promise<AuditRecord[]> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StorageUnavailableError(`cannot read ${this.#file}: ${(err as Error).message}`, { cause: err });
    }
    return text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line, i) => {
        try {
          return JSON.parse(line) as AuditRecord;
        } catch (cause) {
          throw new StorageUnavailableError(`${this.#file} line ${i + 1} is not JSON; run \`agentauth audit verify\``, { cause });
        }
      });
  }

  async #headOf(chain: string): Promise<AuditRecord | undefined> {
    if (!this.#heads.has(chain)) {
      let head: AuditRecord | undefined;
      for (const r of await this.#readAll()) if (chainOf(r) === chain && (!head || r.seq > head.seq)) head = r;
      this.#heads.set(chain, head);
    }
    return this.#heads.get(chain);
  }

  async head(chain: string = DEFAULT_AUDIT_CHAIN): Promise<AuditRecord | undefined> {
    const head = await this.#headOf(chain);
    return head ? jsonCopy(head) : undefined;
  }

  insertBatch(records: AuditRecord[]): Promise<number> {
    const run = this.#queue.then(async () => {
      if (records.length === 0) return 0;
      const chain = chainOf(records[0]!);
      const head = await this.#headOf(chain);
      const accepted: AuditRecord[] = [];
      let next = (head?.seq ?? 0) + 1;
      for (const r of records) {
        if (r.seq !== next || chainOf(r) !== chain) break;
        accepted.push(r);
        next += 1;
      }
      if (accepted.length === 0) return 0;
      try {
        if (!this.#handle) {
          await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
          this.#handle = await open(this.#file, 'a', 0o600);
        }
        await this.#handle.write(accepted.map((r) => `${JSON.stringify(r)}\n`).join(''));
      } catch (err) {
        throw new StorageUnavailableError(`cannot append to ${this.#file}: ${(err as Error).message}`, { cause: err });
      }
      this.#heads.set(chain, accepted.at(-1));
      return accepted.length;
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    await this.#queue;
    await this.#handle?.close();
    this.#handle = undefined;
  }

  async list(fromSeq: number, limit: number, chain: string = DEFAULT_AUDIT_CHAIN): Promise<AuditRecord[]> {
    return (await this.#readAll()).filter((r) => chainOf(r) === chain && r.seq >= fromSeq).slice(0, limit);
  }

  async chains(): Promise<string[]> {
    return [...new Set((await this.#readAll()).map((r) => chainOf(r)))].sort();
  }

  async strays(limit: number): Promise<string[]> {
    // `list` reaches every record whose seq compares ≥ 1 (as it compares them); the file's lines name the rest.
    const found: string[] = [];
    for (const [i, r] of (await this.#readAll()).entries()) {
      if (found.length >= limit) break;
      if (!(r.seq >= 1)) found.push(`record ${i + 1} of audit.jsonl (seq ${JSON.stringify(r.seq) ?? 'missing'})`);
    }
    return found;
  }

  /** The throwaway store's log is never pruned (`agentauth audit prune` refuses it): there are no checkpoints. */
  async checkpoints(): Promise<AuditCheckpoint[]> {
    return [];
  }

  async prune(_checkpoint: AuditCheckpoint, _batch: number): Promise<number> {
    throw new StorageUnavailableError(`the memory store's audit log (${this.#file}) is not pruned: move the file aside while no server runs`);
  }

  async revocations(keys: RevocationKeys, limit: number): Promise<AuditRecord[]> {
    // The throwaway store has no index: the file is read, as every reading of it is.
    const found = (await this.#readAll()).filter((r) => r.seq >= 1 && revokesOneOf(r, keys));
    return found.sort((a, b) => (chainOf(a) < chainOf(b) ? -1 : chainOf(a) > chainOf(b) ? 1 : a.seq - b.seq)).slice(0, limit);
  }
}
