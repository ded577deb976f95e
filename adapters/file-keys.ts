import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { StorageUnavailableError } from './errors.js';
import type { KeyStore, StoredKey } from './types.js';

/**
 * Signing keys for the embedded store, kept in `<dataDir>/keys.json` (mode 0600; private keys inside are sealed
 * under the key-encryption key). Writes go to a temporary file and are renamed into place, so a crash never leaves
 * a half-written key file.
 */
export class FileKeyStore implements KeyStore {
  readonly #file: string;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(readonly dataDir: string) {
    this.#file = join(dataDir, 'keys.json');
  }

  async list(): Promise<StoredKey[]> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StorageUnavailableError(`cannot read ${this.#file}: ${(err as Error).message}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new StorageUnavailableError(`${this.#file} is not valid JSON; restore it from a backup`, { cause: err });
    }
    if (!Array.isArray(parsed)) throw new StorageUnavailableError(`${this.#file} must hold a JSON array of keys`);
    return (parsed as StoredKey[]).sort((a, b) => a.seq - b.seq);
  }

  insert(key: StoredKey): Promise<boolean> {
    // Serialise writers within the process; one process owns an embedded data directory.
    const run = this.#queue.then(async () => {
      const keys = await this.list();
      if (keys.some((k) => k.seq === key.seq || k.kid === key.kid)) return false;
      keys.push(key);
      await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
      const tmp = `${this.#file}.${process.pid}.tmp`;
      await writeFile(tmp, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600 });
      await rename(tmp, this.#file);
      return true;
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
