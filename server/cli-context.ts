import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';

import type { Command } from 'commander';

import type { Storage } from '../adapters/types.js';
import { initStorage, openStorage } from './storage-setup.js';
import { loadConfig } from './config.js';
import type { Config } from './config.js';
import { operatorFileProblem, operatorFiles } from './cli-out-files.js';
import { createLogger } from './logger.js';
import type { Logger } from './logger.js';
import { mongoUriParts } from './mongodb-uri.js';

/**
 * What every CLI command shares: which store, data directory and issuer it used (said on stderr, and in the JSON
 * answer with --json), the refusal to create a store where none is, and the exit codes of docs/operations.md,
 * "The command line": 0 success, 1 a negative answer (token invalid, audit chain broken, not found), 2 a usage or
 * configuration error, or a command that could not run as asked (no store there, storage unreachable, wrong KEK).
 */
export const EXIT = { ok: 0, negative: 1, usage: 2 } as const;

/** A usage or configuration error found by a command itself: one line on stderr, exit code 2. */
export class CliUsageError extends Error {
  readonly code = 'usage';
}

/**
 * Refuses an output file the command could not write, before anything is read or written (usage error, exit 2): one
 * of the store's own files, a directory, a missing directory, and, unless `force` (`--force`), a file that exists: an
 * export kept for the record is not replaced by a mistyped name (as `backup` does).
 */
export function checkOutFile(path: string, config: Config, flag = '--out', opts: { force?: boolean } = {}): void {
  const dir = dirname(resolve(path));
  const replaces = operatorFileProblem(path, flag, operatorFiles(config));
  if (replaces) throw new CliUsageError(replaces);
  if (existsSync(path) && statSync(path).isDirectory()) throw new CliUsageError(`${flag} ${path} is a directory; name the file to write`);
  if (opts.force !== undefined && !opts.force && existsSync(path)) throw new CliUsageError(`${flag} ${path} already exists; pass --force to replace it`);
  if (!existsSync(dir)) throw new CliUsageError(`${flag}: directory ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new CliUsageError(`${flag}: ${dir} is not a directory`);
}

/** The SQLite store's file in the data directory (adapters/sqlite.ts SQLITE_FILE; not imported: that loads node:sqlite). */
const SQLITE_FILE = 'agentauth.sqlite';

export interface CliContext {
  store: 'sqlite' | 'mongodb' | 'memory';
  /** The SQLite file, `mongodb://<hosts>/<db>` (never credentials), or the memory store's data directory. */
  location: string;
  /** The data directory, or null on MongoDB: nothing of a MongoDB store lives in AGENTAUTH_DATA_DIR. */
  data_dir: string | null;
  issuer: string;
  /** Where the issuer came from: ISSUER, --issuer, or the default (ISSUER unset: it may not be the server's). */
  issuer_source: 'ISSUER' | '--issuer' | 'default';
}

/** Where a MongoDB store is, never with credentials: its hosts as the driver reads them, and the database. */
function mongoLocation(uri: string, dbName: string): string {
  const hosts = mongoUriParts(uri)?.hosts.join(',') ?? '?';
  return `mongodb://${hosts}/${dbName}`;
}

export function describeContext(config: Config, issuerOverride?: string): CliContext {
  const location = config.mongodb
    ? mongoLocation(config.mongodb.uri, config.mongodb.dbName)
    : config.store === 'memory'
      ? config.dataDir
      : join(config.dataDir, SQLITE_FILE);
  const issuer_source = issuerOverride !== undefined ? '--issuer' : process.env.ISSUER ? 'ISSUER' : 'default';
  const data_dir = config.mongodb ? null : config.dataDir;
  return { store: config.store, location, data_dir, issuer: issuerOverride ?? config.issuer, issuer_source };
}

/** `store <kind> <location>`, with the data directory where the store uses one (not on MongoDB). */
export function storeDescription(ctx: CliContext): string {
  return `store ${ctx.store} ${ctx.location}${ctx.data_dir === null ? '' : `, data directory ${ctx.data_dir}`}`;
}

export function contextLine(ctx: CliContext): string {
  const issuer = ctx.issuer_source === 'default' ? `${ctx.issuer} (default: ISSUER is not set)` : ctx.issuer;
  return `agentauth: ${storeDescription(ctx)}, issuer ${issuer}\n`;
}

/** Says on stderr which store, data directory and issuer the command uses (in every mode: stdout stays the answer). */
export function announce(ctx: CliContext): void {
  process.stderr.write(contextLine(ctx));
}

/** Writes the command's answer: a JSON document (with the context) under --json, else the text lines. */
export function answer(json: boolean, ctx: CliContext | undefined, value: Record<string, unknown>, text: () => string): void {
  if (json) process.stdout.write(`${JSON.stringify(ctx ? { ...value, context: ctx } : value, null, 2)}\n`);
  else {
    const t = text();
    if (t !== '') process.stdout.write(t.endsWith('\n') ? t : `${t}\n`);
  }
}

/**
 * Whether the configured store is there at all. Only SQLite and the memory store can tell before opening (a file, a
 * directory); a MongoDB database is judged by its contents (see `requireInitialised`).
 */
function storeMissing(ctx: CliContext): string | undefined {
  if (ctx.data_dir === null) return undefined; // MongoDB
  const path = ctx.store === 'sqlite' ? ctx.location : ctx.data_dir;
  return existsSync(path) ? undefined : path;
}

/** Refuses (exit 2) when the configured SQLite file or memory-store directory does not exist and --init was not given. */
export function refuseMissingStore(ctx: CliContext, opts: StoreOptions): void {
  const missing = storeMissing(ctx);
  if (missing && !opts.init) {
    throw new CliUsageError(
      `${opts.command}: there is no agentauth store at ${missing} (AGENTAUTH_DATA_DIR=${ctx.data_dir}); is this the server's data directory? ` +
        (opts.init === false ? 'pass --init to create a new store here' : 'nothing was created'),
    );
  }
}

export interface StoreOptions {
  /** Create the store (and with it a KEK and the first key, for the commands that do) where none is. */
  init?: boolean;
  /** What the command is, for the refusal: `keys rotate`, `audit tail`, ... */
  command: string;
  /**
   * The command only reads: storage is opened without creating anything (no table, no index, no writer thread, no
   * import of an old data-directory layout), so a read-only database user is enough.
   */
  readOnly?: boolean;
  /**
   * The command has an answer for a store that holds no signing keys, and gives it reading only: on MongoDB, such a
   * database is handed to it opened read-only (nothing created) instead of being refused.
   */
  emptyOk?: boolean;
}

/**
 * Opens the configured store for a command, and refuses (exit 2) to create one where none is unless `--init` was
 * given: a command pointed at the wrong data directory says so instead of leaving a new empty store behind.
 */
export async function withStore<T>(opts: StoreOptions & { issuer?: string }, fn: (storage: Storage, config: Config, ctx: CliContext) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const ctx = describeContext(config, opts.issuer);
  announce(ctx);
  refuseMissingStore(ctx, opts);
  const readOnly = opts.readOnly === true;
  // A MongoDB database comes into being with its first write, the indexes a store creates at open included: a command
  // that may not create a store first checks, only reading, that the database is one a server has run on. A mistyped
  // MONGODB_DB then gets the refusal below and no new database.
  if (ctx.store === 'mongodb' && !readOnly && !opts.init) {
    const probe = await openStorage(config, undefined, { readOnly: true });
    try {
      await probe.init();
      if (opts.emptyOk && (await probe.keys.list()).length === 0) return await fn(probe, config, ctx);
      await requireInitialised(probe, ctx, opts);
    } finally {
      await probe.close();
    }
  }
  const storage = await openStorage(config, undefined, { readOnly });
  try {
    if (readOnly) await storage.init();
    else await initStorage(config, storage, { warn: (_obj: object, msg: string) => void process.stderr.write(`agentauth: ${msg}\n`) });
    return await fn(storage, config, ctx);
  } finally {
    await storage.close();
  }
}

/**
 * For commands that change keys: the store must already hold signing keys (a server has started on it), unless
 * `--init` was given. Without this, `keys rotate` on an empty database would create a KEK and a first key.
 */
export async function requireInitialised(storage: Storage, ctx: CliContext, opts: StoreOptions): Promise<void> {
  if (opts.init) return;
  if ((await storage.keys.list()).length > 0) return;
  // Only `keys rotate` takes --init: every other command names it, rather than an option it does not have.
  const what = ctx.store === 'mongodb' ? 'the first key' : 'a key-encryption key and the first key';
  const create = opts.command === 'keys rotate' ? `pass --init to create ${what} here` : `run \`agentauth keys rotate --init\` to create ${what} here`;
  throw new CliUsageError(
    `${opts.command}: the store ${ctx.location} holds no signing keys (no agentauth server has run on it); check AGENTAUTH_DATA_DIR / MONGODB_URI / MONGODB_DB, or ${create}`,
  );
}

/** Members of every log line (server/logger.ts), left out of a command's line: what is left is what the line is about. */
const LOG_LINE_MEMBERS = new Set(['level', 'time', 'service', 'pid', 'worker', 'msg', 'event', 'request_id', 'ip']);

/** A JSON log line as a command's line: its message, then its own members (`model=oidc_Client, keys=2`). */
export function cliLine(line: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return line;
  }
  if (typeof parsed !== 'object' || parsed === null) return line;
  const { msg } = parsed as { msg?: unknown };
  const members = Object.entries(parsed).filter(([k]) => !LOG_LINE_MEMBERS.has(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return `${String(msg ?? '')}${members.length > 0 ? ` (${members.join(', ')})` : ''}`;
}

/**
 * The logger a command hands to server code it runs (key loading, a booted provider): its warnings and errors as the
 * command's own `agentauth: <message> (<members>)` lines on stderr, never the server's JSON log lines. The logger's
 * redaction applies as on the server's lines.
 */
export function cliLogger(): Logger {
  const lines = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') process.stderr.write(`agentauth: ${cliLine(line)}\n`);
      done();
    },
  });
  return createLogger('warn', lines);
}

/** `--json` on a command: its answer as one JSON document on stdout (JSON lines for `audit tail|export`), nothing else. */
export function withJson(cmd: Command): Command {
  return cmd.option('--json', 'machine-readable answer on stdout (JSON); messages stay on stderr');
}

/** This package's version, from its package.json (two levels up from dist/server/, one from server/). */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i += 1) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'agentauth' && pkg.version) return pkg.version;
    }
    dir = dirname(dir);
  }
  return 'unknown';
}
