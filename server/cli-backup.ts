import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { DatabaseSync } from 'node:sqlite';

import type { Command } from 'commander';

import { openStorage } from './storage-setup.js';
import { answer, announce, describeContext, EXIT, withJson } from './cli-context.js';
import { operatorFileProblem, operatorFiles } from './cli-out-files.js';
import { loadConfig } from './config.js';
import type { Config } from './config.js';

/** A usage or configuration error of `agentauth backup`: one line on stderr, exit code 2. */
class BackupRefused extends Error {
  readonly code = 'backup_refused';
}

/** What is in a backup: a sanity count an operator can compare with what they expect. */
interface BackupCounts {
  clients: number;
  keys: number;
  auditRecords: number;
}

/** Why this configuration has nothing `agentauth backup` can copy, or undefined when it has. */
function refusal(config: Config): string | undefined {
  if (config.store === 'mongodb') {
    return 'MONGODB_URI is set: agentauth backup copies the SQLite store; for MongoDB use mongodump; see docs/operations.md, "Backup and restore"';
  }
  if (config.store === 'memory') {
    return 'AGENTAUTH_STORE=memory keeps nothing durable to back up; unset AGENTAUTH_STORE for the SQLite store';
  }
  return undefined;
}

/** The live database and the files SQLite keeps beside it: never a backup's destination, --force or not. */
/**
 * node:sqlite, loaded only when a backup runs (after openStorage has quieted its experimental warning), so that
 * every other command does not load it at start.
 */
const sqlite = () => import('node:sqlite');

function fsyncPath(path: string, flags: string): void {
  const fd = openSync(path, flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Opens the copy read-only and checks it: `PRAGMA integrity_check` must answer `ok`, and the counts come from the
 * copy itself, not from the live store.
 */
async function verifyCopy(path: string): Promise<BackupCounts> {
  const { DatabaseSync } = await sqlite();
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const rows = db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
    const problems = rows.map((r) => r.integrity_check).filter((r) => r !== 'ok');
    if (rows.length === 0 || problems.length > 0) {
      throw new Error(`the copy failed PRAGMA integrity_check: ${problems.slice(0, 3).join('; ') || 'no answer'}`);
    }
    const count = (sql: string) => Number((db.prepare(sql).get() as { n: number | bigint }).n);
    return {
      clients: count("SELECT count(*) AS n FROM oidc_records WHERE model = 'Client'"),
      keys: count('SELECT count(*) AS n FROM signing_keys'),
      auditRecords: count('SELECT count(*) AS n FROM audit_records'),
    };
  } finally {
    db.close();
  }
}

/**
 * Copies the open database into `tmp` with SQLite's online backup API, in one step: the step reads one consistent
 * snapshot under a read transaction, which in WAL mode never waits for the server's writers nor makes them wait, so
 * concurrent writes neither block nor restart it. The copy keeps the source's WAL flag in its header; it is switched
 * back to a rollback journal so that the backup is one self-contained file (a server that opens it after a restore
 * sets WAL again).
 */
async function copyInto(source: DatabaseSync, tmp: string): Promise<void> {
  // Created first, mode 0600 and exclusive: SQLite writes into the existing file and keeps its mode, and the journal
  // files it creates beside it get the same mode.
  closeSync(openSync(tmp, 'wx', 0o600));
  const { DatabaseSync, backup } = await sqlite();
  await backup(source, tmp, { rate: -1 });
  const copy = new DatabaseSync(tmp);
  try {
    copy.exec('PRAGMA journal_mode = DELETE');
  } finally {
    copy.close();
  }
}

async function backupCommand(opts: { out?: string; force?: boolean; json?: boolean }): Promise<void> {
  // Checked here rather than by commander, so that a missing --out is one line and exit 2 like the other refusals.
  if (opts.out === undefined) throw new BackupRefused('--out FILE is required (the backup file to write)');
  const config = loadConfig();
  const out = resolve(opts.out);
  const why = refusal(config);
  if (why) throw new BackupRefused(why);
  const ctx = describeContext(config);
  announce(ctx);
  const storage = await openStorage(config);
  const { SqliteStorage } = await import('../adapters/sqlite.js');
  if (!(storage instanceof SqliteStorage)) throw new BackupRefused(`the configured store is ${storage.kind}, not SQLite`);
  const live = storage.file;
  const problem =
    operatorFileProblem(opts.out, '--out', operatorFiles(config, live)) ??
    (!existsSync(live) ? `no SQLite store at ${live} (nothing to back up; is AGENTAUTH_DATA_DIR the server's data directory?)` : undefined) ??
    (existsSync(out) && statSync(out).isDirectory() ? `--out ${opts.out} is a directory; name the backup file` : undefined) ??
    (existsSync(out) && !opts.force ? `${opts.out} already exists; pass --force to replace it` : undefined) ??
    (!existsSync(dirname(out)) ? `--out: directory ${dirname(out)} does not exist` : undefined);
  if (problem) {
    await storage.close();
    throw new BackupRefused(problem);
  }
  // The copy is written and checked under a temporary name beside the destination, then renamed into place: a
  // failed or interrupted backup leaves no partial file under the name given, and --force replaces atomically.
  const tmp = resolve(dirname(out), `.${basename(out)}.tmp-${process.pid}`);
  let counts: BackupCounts;
  try {
    await storage.init();
    await copyInto(storage.db, tmp);
    counts = await verifyCopy(tmp);
    fsyncPath(tmp, 'r+');
    renameSync(tmp, out);
    fsyncPath(dirname(out), 'r');
  } catch (err) {
    for (const f of [tmp, `${tmp}-journal`, `${tmp}-wal`, `${tmp}-shm`]) rmSync(f, { force: true });
    throw err;
  } finally {
    await storage.close();
  }
  const size = statSync(out).size;
  answer(opts.json === true, ctx, { out, bytes: size, integrity_check: 'ok', ...counts }, () =>
    `backup written: ${out} (${size} bytes, mode 0600; integrity_check ok): ${counts.clients} clients, ${counts.keys} signing keys, ${counts.auditRecords} audit records`,
  );
  process.stderr.write('the backup does not contain the KEK: keep AGENTAUTH_KEK or the kek file apart from it; to restore, see docs/operations.md, "Backup and restore"\n');
}

/** `agentauth backup --out FILE [--force]`: an online copy of the SQLite store, checked before it is reported. */
export function registerBackupCommands(program: Command): void {
  withJson(program.command('backup'))
    .description('copy the SQLite store to FILE (mode 0600) while servers run, check it, and print its counts; restore: docs/operations.md')
    .option('--out <file>', 'the backup file to write (required)')
    .option('--force', 'replace FILE if it exists')
    .action(async (opts: { out?: string; force?: boolean; json?: boolean }) => {
      try {
        await backupCommand(opts);
      } catch (err) {
        if (!(err instanceof BackupRefused)) throw err;
        process.stderr.write(`agentauth backup: ${err.message}\n`);
        if (opts.json) answer(true, undefined, { error: 'usage', error_description: err.message, exit_code: EXIT.usage }, () => '');
        process.exitCode = EXIT.usage;
      }
    });
}
