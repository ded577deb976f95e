import { mkdir, open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

import { StorageUnavailableError } from './errors.js';
import { jsonCopy } from './json-copy.js';
import type { AuditRecord, AuditStore } from './types.js';

/**
 * The embedded store's audit log: an append-only JSON-lines file in the data directory (mode 0600). Only the head is
 * kept in memory, so the log neither grows the process nor disappears on restart; the CLI reads the same file.
 * One process owns a data directory, so appends are serialised in-process.
 */
export class FileAuditStore implements AuditStore {
  readonly #file: string;
  #head: AuditRecord | undefined;
  #loaded = false;
  #queue: Promise<unknown> = Promise.resolve();
  /** Kept open for appending: one write per batch, no open/close per write. */
  #handle: FileHandle | undefined;

  constructor(private readonly dataDir: string) {
    this.#file = join(dataDir, 'audit.jsonl');
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

  async #load(): Promise<void> {
    if (this.#loaded) return;
    this.#head = (await this.#readAll()).at(-1);
    this.#loaded = true;
  }

  async head(): Promise<AuditRecord | undefined> {
    await this.#load();
    return this.#head ? jsonCopy(this.#head) : undefined;
  }

  insertBatch(records: AuditRecord[]): Promise<number> {
    const run = this.#queue.then(async () => {
      await this.#load();
      const accepted: AuditRecord[] = [];
      let next = (this.#head?.seq ?? 0) + 1;
      for (const r of records) {
        if (r.seq !== next) break;
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
      this.#head = accepted.at(-1);
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

  async list(fromSeq: number, limit: number): Promise<AuditRecord[]> {
    return (await this.#readAll()).filter((r) => r.seq >= fromSeq).slice(0, limit);
  }
}
