import { realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

import { dataDirKekPath } from '../keys/kek.js';
import type { Config } from './config.js';

/** The SQLite store's file in the data directory (adapters/sqlite.ts SQLITE_FILE; not imported: that loads node:sqlite). */
const SQLITE_FILE = 'agentauth.sqlite';

/**
 * The files a command's output must never replace, with what each is: the SQLite store and the files SQLite keeps
 * beside it, the KEK (in the data directory or AGENTAUTH_KEK_FILE), the configuration file and the admin token file.
 * Replacing any of them destroys what they hold (the KEK: every signing key and client-secret hash).
 */
export function operatorFiles(config: Config, sqliteFile?: string): Array<{ path: string; what: string }> {
  const db = sqliteFile ?? join(config.dataDir, SQLITE_FILE);
  const files = [db, `${db}-wal`, `${db}-shm`, `${db}-journal`].map((path) => ({ path, what: 'the live store itself' }));
  files.push({ path: dataDirKekPath(config.dataDir), what: 'the key-encryption key (KEK)' });
  if (config.kekFile) files.push({ path: config.kekFile, what: 'the key-encryption key (KEK)' });
  // During a KEK rotation the previous KEK may be the only key to what is still sealed under it.
  if (config.kekFallbackFile) files.push({ path: config.kekFallbackFile, what: 'the previous key-encryption key (AGENTAUTH_KEK_FALLBACK_FILE)' });
  if (config.configFile) files.push({ path: config.configFile, what: 'the configuration file (AGENTAUTH_CONFIG)' });
  if (config.admin.tokenFile) files.push({ path: config.admin.tokenFile, what: 'the admin token file' });
  return files;
}

/** `path` with its directory's symbolic links resolved (the name itself kept: a rename replaces that name). */
function realName(path: string): string {
  try {
    return join(realpathSync(dirname(path)), basename(path));
  } catch {
    return resolve(path);
  }
}

/**
 * Whether writing `out` would replace `file`: the same name once symbolic links in either directory are resolved (a
 * link to the data directory), or an existing file that is `file` under another name (a hard or symbolic link to it:
 * a write that follows the link overwrites the file in place).
 */
function sameFile(out: string, file: string): boolean {
  if (realName(out) === realName(file)) return true;
  const target = statSync(out, { throwIfNoEntry: false });
  const existing = statSync(file, { throwIfNoEntry: false });
  return target !== undefined && existing !== undefined && target.dev === existing.dev && target.ino === existing.ino;
}

/** Why `out` may not be written, naming the file it would replace, or undefined. */
export function operatorFileProblem(out: string, flag: string, files: ReadonlyArray<{ path: string; what: string }>): string | undefined {
  const hit = files.find((file) => sameFile(out, file.path));
  return hit ? `${flag} ${out} is ${hit.what} (${hit.path}); write somewhere else` : undefined;
}
