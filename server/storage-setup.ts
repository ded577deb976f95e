import type { UnreadableListener } from '../adapters/errors.js';
import { importLegacyLayout } from '../adapters/legacy-import.js';
import { EmbeddedStorage } from '../adapters/memory.js';
import { sealCredentialIds } from '../adapters/sealed-credential-ids.js';
import type { Storage } from '../adapters/types.js';
import { KeyMaterialError } from '../keys/errors.js';
import { configuredKek, embeddedKek, fallbackKek } from '../keys/kek.js';
import type { ResolvedKek } from '../keys/kek.js';
import { ConfigError } from './config.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';

/*
 * Opening the configured store, and the key-encryption key that goes with it: what `agentauth start` and the CLI's
 * storage commands share. Nothing here loads oidc-provider or the HTTP app.
 */

/**
 * The configured store. The MongoDB driver (and BSON's 17 MB serialisation buffer) is loaded only when MongoDB is
 * configured: the embedded store does not pay for it in memory.
 */
export async function openStorage(config: Config, log?: Logger, opts: { readOnly?: boolean; onUnreadable?: UnreadableListener } = {}): Promise<Storage> {
  const readOnly = opts.readOnly === true;
  if (config.mongodb) {
    const { MongoStorage } = await import('../adapters/mongodb.js');
    try {
      return new MongoStorage({
        uri: config.mongodb.uri,
        dbName: config.mongodb.dbName,
        timeoutMs: config.storage.timeoutMs,
        sweepIntervalMs: config.storage.sweepIntervalMs,
        readOnly,
        onUnreadable: unreadableLogger(log, opts.onUnreadable),
        onReconnect: (reason) => log?.warn({ reason }, 'storage: pings kept failing; replaced the MongoDB client with a new one'),
        onFerretdbV1: (version) =>
          log?.warn(
            { event: 'storage.ferretdb_v1', version },
            'storage: the MongoDB-wire server is FerretDB v1, whose SQLite backend reads a whole collection for every lookup: fine for tests, not for production volumes (docs/operations.md, "FerretDB v1 is for tests")',
          ),
      });
    } catch (err) {
      // An option the driver refuses as its client is made (`?tls=maybe`, `?foo=bar`): a configuration error naming
      // its setting. The user name and password were checked with the configuration (server/mongodb-uri.ts), and the
      // driver's option messages quote neither.
      if (err instanceof Error && err.name.startsWith('Mongo')) throw new ConfigError(`MONGODB_URI: ${err.message}`);
      throw err;
    }
  }
  if (config.store === 'memory') return new EmbeddedStorage({ dataDir: config.dataDir, sweepIntervalMs: config.storage.sweepIntervalMs });
  quietSqliteWarning();
  const { SqliteStorage } = await import('../adapters/sqlite.js');
  return new SqliteStorage({
    dataDir: config.dataDir,
    busyTimeoutMs: config.storage.timeoutMs,
    sweepIntervalMs: config.storage.sweepIntervalMs,
    synchronous: config.storage.sqliteSynchronous,
    readOnly,
    onUnreadable: unreadableLogger(log, opts.onUnreadable),
  });
}

/**
 * What the server says of a stored record that is not readable (answered as absent): its model, never its id (a
 * session's id is its cookie). docs/operations.md, "A stored record that is not readable", says how to find it.
 */
const unreadableLogger = (log: Logger | undefined, also?: UnreadableListener): UnreadableListener => (err) => {
  log?.error({ event: 'storage.unreadable', model: err.model, ...(err.field === undefined ? {} : { field: err.field }) }, 'a stored record is not readable (not a JSON object, or a field of the wrong type); answered as absent');
  also?.(err);
};

/**
 * Node 22 flags node:sqlite as experimental and says so on stderr once per process, in every CLI command too. The
 * module is the store agentauth ships (docs/operations.md says why); that one warning is dropped, every other stays.
 */
export function quietSqliteWarning(): void {
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: unknown, ...rest: unknown[]) => {
    const text = warning instanceof Error ? warning.message : String(warning);
    if (text.startsWith('SQLite is an experimental feature')) return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

/**
 * Opens the configured store for use: creates its tables or indexes and, for the SQLite store, imports a data
 * directory still in the previous layout (keys.json, key-transitions.json, audit.jsonl) once, with a log line.
 */
export async function initStorage(config: Config, storage: Storage, log?: { warn(obj: object, msg: string): void }): Promise<void> {
  await storage.init();
  if (storage.kind !== 'sqlite') return;
  const report = await importLegacyLayout(config.dataDir, storage);
  if (report) {
    log?.warn(
      { event: 'storage.imported', dataDir: config.dataDir, ...report },
      `imported the previous data-directory layout into the SQLite store (${report.keys} keys, ${report.transitions} key transitions, ${report.auditRecords} audit records); the old files are kept as *.imported`,
    );
  }
}

/** Why a MongoDB store cannot start without a configured KEK (start and `config check` say the same). */
export const MONGODB_NEEDS_KEK = 'AGENTAUTH_KEK or AGENTAUTH_KEK_FILE is required with MONGODB_URI: every instance must unseal the same shared keys';

/** The KEK, and the one being rotated away from when AGENTAUTH_KEK_FALLBACK(_FILE) names it. */
export async function resolveKek(config: Config, storage: Storage, log: Logger): Promise<ResolvedKek & { fallback?: Buffer }> {
  const kek = await resolveCurrentKek(config, storage, log);
  const fallback = await fallbackKek(config, kek.kek);
  return fallback ? { ...kek, fallback } : kek;
}

async function resolveCurrentKek(config: Config, storage: Storage, log: Logger): Promise<ResolvedKek> {
  const source = { kek: config.kek, kekFile: config.kekFile };
  if (storage.kind === 'mongodb') {
    const kek = await configuredKek(source);
    if (!kek) throw new KeyMaterialError(MONGODB_NEEDS_KEK);
    return kek;
  }
  const keysExist = (await storage.keys.list()).length > 0;
  const kek = await embeddedKek(source, config.dataDir, keysExist);
  if (kek.origin === 'generated') {
    log.warn(
      { path: kek.path },
      'generated a key-encryption key in the data directory (mode 0600); in production set AGENTAUTH_KEK or AGENTAUTH_KEK_FILE instead',
    );
  }
  return kek;
}

/**
 * The storage with tokens, codes and registration and initial access tokens kept under keyed hashes of their values
 * (adapters/sealed-credential-ids.ts), and records stored before ids were sealed still found while
 * `storage.unsealedCredentials` is `accept`. The server and the CLI both open credentials through this, so the two
 * never disagree on which stored ids they accept.
 */
export function credentialStorage(config: Pick<Config, 'storage'>, storage: Storage, kek: Buffer, fallback?: Buffer): Storage {
  return sealCredentialIds(storage, kek, { acceptUnsealed: config.storage.unsealedCredentials === 'accept', fallback });
}
