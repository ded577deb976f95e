import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { StorageUnavailableError } from './errors.js';
import type { KeyStore, KeyTransition, StoredKey } from './types.js';

/**
 * Signing keys for the embedded store, kept in `<dataDir>/keys.json` (mode 0600; private keys inside are sealed
 * under the key-encryption key). Writes go to a temporary file and are renamed into place, so a crash never leaves
 * a half-written key file.
 */
export class FileKeyStore implements KeyStore {
  readonly #file: string;
  readonly #transitionsFile: string;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(readonly dataDir: string) {
    this.#file = join(dataDir, 'keys.json');
    this.#transitionsFile = join(dataDir, 'key-transitions.json');
  }

  async #read<T>(file: string): Promise<T[]> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StorageUnavailableError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new StorageUnavailableError(`${file} is not valid JSON; restore it from a backup`, { cause: err });
    }
    if (!Array.isArray(parsed)) throw new StorageUnavailableError(`${file} must hold a JSON array`);
    return parsed as T[];
  }

  /**
   * Rewrites `file` with what `change` makes of its entries, unless it answers false; serialised within the process
   * (one process owns a data directory).
   */
  #change<T>(file: string, change: (entries: T[]) => boolean): Promise<boolean> {
    const run = this.#queue.then(async () => {
      const entries = await this.#read<T>(file);
      if (!change(entries)) return false;
      await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, `${JSON.stringify(entries, null, 2)}\n`, { mode: 0o600 });
      await rename(tmp, file);
      return true;
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Appends one entry unless `taken` says it conflicts. */
  #append<T>(file: string, entry: T, taken: (existing: T[]) => boolean): Promise<boolean> {
    return this.#change<T>(file, (entries) => !taken(entries) && entries.push(entry) > 0);
  }

  /** Sets `mac` on the first entry `match` picks, if it has none. */
  async #addMac<T extends { mac?: string }>(file: string, match: (entry: T) => boolean, mac: string): Promise<void> {
    await this.#change<T>(file, (entries) => {
      const entry = entries.find(match);
      if (!entry || entry.mac !== undefined) return false;
      entry.mac = mac;
      return true;
    });
  }

  async list(): Promise<StoredKey[]> {
    return (await this.#read<StoredKey>(this.#file)).sort((a, b) => a.seq - b.seq);
  }

  insert(key: StoredKey): Promise<boolean> {
    return this.#append(this.#file, key, (keys) => keys.some((k) => k.seq === key.seq || k.kid === key.kid));
  }

  transitions(): Promise<KeyTransition[]> {
    return this.#read<KeyTransition>(this.#transitionsFile);
  }

  addTransition(t: KeyTransition): Promise<boolean> {
    return this.#append(this.#transitionsFile, t, (all) => all.some((x) => x.kid === t.kid && x.type === t.type));
  }

  addKeyMac(kid: string, mac: string): Promise<void> {
    return this.#addMac<StoredKey>(this.#file, (k) => k.kid === kid, mac);
  }

  addTransitionMac(kid: string, type: KeyTransition['type'], mac: string): Promise<void> {
    return this.#addMac<KeyTransition>(this.#transitionsFile, (t) => t.kid === kid && t.type === type, mac);
  }

  replaceKey(key: StoredKey, expectedMac: string): Promise<boolean> {
    return this.#change<StoredKey>(this.#file, (keys) => {
      const i = keys.findIndex((k) => k.kid === key.kid && k.seq === key.seq && k.mac === expectedMac);
      if (i < 0) return false;
      keys[i] = key;
      return true;
    });
  }

  replaceTransitionMac(kid: string, type: KeyTransition['type'], expectedMac: string, mac: string): Promise<boolean> {
    return this.#change<KeyTransition>(this.#transitionsFile, (all) => {
      const t = all.find((x) => x.kid === kid && x.type === type && x.mac === expectedMac);
      if (!t) return false;
      t.mac = mac;
      return true;
    });
  }
}
