import { accessSync, constants, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { errors } from 'oidc-provider';

import { StorageUnavailableError } from '../adapters/errors.js';
import { FileKeyStore } from '../adapters/file-keys.js';
import { LEGACY_FILES, twoKeySetsMessage } from '../adapters/legacy-import.js';
import { EmbeddedStorage } from '../adapters/memory.js';
import type { KeyStore, Storage } from '../adapters/types.js';
import { KeyMaterialError } from '../keys/errors.js';
import { configuredKek, dataDirKekPath, fallbackKek, missingKekMessage, readDataDirKek } from '../keys/kek.js';
import type { ResolvedKek } from '../keys/kek.js';
import { keysUnderFallback } from '../keys/kek-rotation.js';
import { readCheckedKeys, upgradeKeyStore } from '../keys/integrity.js';
import { Keyring, NO_ACTIVE_KEY } from '../keys/keyring.js';
import { deriveKeyView, publishedKids } from '../keys/lifecycle.js';
import { adminListenerToken } from './admin/token.js';
import { planAsyncContext } from './async-context.js';
import { describeContext } from './cli-context.js';
import type { CliContext } from './cli-context.js';
import { ClientSecretHasher } from './client-secrets.js';
import { ConfigError, loadConfig, retireGraceSeconds, workersCount } from './config.js';
import type { Config } from './config.js';
import { heapGrowthPercent, operatorSizedHeap } from './heap-policy.js';
import { checkResourceServerAlgs } from './resource-servers.js';
import { ScratchKeys } from './scratch-provider.js';
import { MONGODB_NEEDS_KEK, openStorage, quietSqliteWarning } from './storage-setup.js';

/*
 * `agentauth config check`: everything `agentauth start` checks before it serves, checked without starting and
 * without changing anything: no store, KEK or key is created, no table or index, nothing is written. Each failure is
 * reported with the line `start` would print for it (after "agentauth: "), and the command exits with the code
 * `start` would exit with: 2. What only a start can show (a port already taken, a store that fails later) is not
 * claimed. docs/operations.md, "Checking a configuration".
 */

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  /** What was checked: node, configuration, start options, issuer, admin, store, kek, signing keys, resource servers, clients. */
  check: string;
  status: CheckStatus;
  /** For a failure: the line `agentauth start` prints for it, after "agentauth: ". */
  detail: string;
}

export interface CheckReport {
  /** No check failed: `start` would get past everything checked here. */
  ok: boolean;
  checks: CheckResult[];
  /** The store, data directory and issuer checked (absent when the configuration itself is invalid). */
  context?: CliContext;
}

export interface CheckOptions {
  /** `--workers N`, as `start` would be given it. */
  workers?: string | undefined;
  /** The Node.js version to judge (tests); this process's by default. */
  nodeVersion?: string;
  /** Called once the configuration is loaded, with the store, data directory and issuer it names (before any check of them). */
  onContext?: (context: CliContext) => void;
}

const invalid = (err: ConfigError) => `invalid configuration: ${err.message}`;
const cannotStart = (err: Error) => `cannot start: ${err.message}`;

/** A KEK check's or key check's failure, as `start` words it; anything else is not a verdict and is thrown on. */
function startLine(err: unknown): string {
  if (err instanceof ConfigError) return invalid(err);
  if (err instanceof KeyMaterialError) return cannotStart(err);
  if (err instanceof StorageUnavailableError) return cannotStart(err);
  throw err;
}

/** package.json's `engines.node` (22.13 is the first Node 22 whose node:sqlite needs no flag). */
const ENGINES = '>=22.13.0 <23';

const plural = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

export async function checkConfiguration(env: NodeJS.ProcessEnv, options: CheckOptions = {}): Promise<CheckReport> {
  const checks: CheckResult[] = [];
  const add = (check: string, status: CheckStatus, detail: string) => checks.push({ check, status, detail });
  const report = (context?: CliContext): CheckReport => ({ ok: checks.every((c) => c.status !== 'fail'), checks, ...(context ? { context } : {}) });

  const nodeVersion = options.nodeVersion ?? process.version;
  const [major = 0, minor = 0] = (/^v?(\d+)\.(\d+)\./.exec(nodeVersion) ?? []).slice(1).map(Number);
  if (major < 22) {
    // What start relies on (node:sqlite among it) is not there: nothing else can be checked as start would.
    add('node', 'fail', `Node.js 22 is required (package.json engines: ${ENGINES}); this is ${nodeVersion}`);
    return report();
  }
  if (major !== 22 || minor < 13) add('node', 'warn', `Node.js ${nodeVersion} is outside the versions agentauth is built and tested for (package.json engines: ${ENGINES})`);
  else add('node', 'ok', `Node.js ${nodeVersion}`);

  let config: Config;
  try {
    config = loadConfig(env);
    workersCount(options.workers, config);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    add('configuration', 'fail', invalid(err));
    return report();
  }
  const context = describeContext(config);
  options.onContext?.(context);
  add(
    'configuration',
    'ok',
    `${config.configFile ? `environment and ${config.configFile}` : 'environment only (AGENTAUTH_CONFIG is not set)'}: ` +
      `${plural(config.resourceServers.length, 'resource server')}, ${plural(config.clients.length, 'client')}, tiers ${Object.keys(config.tiers).join(', ')}, registration ${config.registration.mode}`,
  );

  const heap = heapGrowthPercent(env);
  const asyncContext = planAsyncContext({ argv: ['node', 'agentauth', 'start'], execArgv: [], env, nodeVersion: process.version, canExecve: false });
  if (typeof heap === 'string') add('start options', 'fail', invalid(new ConfigError(heap)));
  else if (asyncContext.action === 'refuse') add('start options', 'fail', invalid(new ConfigError(asyncContext.error)));
  else add('start options', 'ok', `heap growth ${heap === 0 ? "V8's own" : operatorSizedHeap(env) ? "V8's own (NODE_OPTIONS sizes the heap)" : `${heap} %`}, async context ${env.AGENTAUTH_ASYNC_CONTEXT === 'hooks' ? 'hooks' : 'frame'}`);

  checkIssuer(config, env, add);
  checkAdmin(config, add);
  const storage = await checkStore(config, add);
  try {
    const kek = await checkKek(config, storage, add);
    const fallback = kek ? await checkKekFallback(config, kek.kek, add) : undefined;
    const algs = await checkKeys(config, storage, kek, fallback, add);
    if (algs) {
      try {
        checkResourceServerAlgs(config.resourceServers, algs);
        add('resource servers', 'ok', `${config.resourceServers.length} configured${config.resourceServers.length ? `: ${config.resourceServers.map((rs) => rs.identifier).join(', ')}` : ''}`);
      } catch (err) {
        add('resource servers', 'fail', startLine(err));
      }
    }
    await checkClients(config, storage, add);
    if (kek && fallback) await checkFallbackUse(storage, kek.kek, fallback, add);
  } finally {
    await storage.store?.close().catch(() => undefined);
  }
  return report(context);
}

type Add = (check: string, status: CheckStatus, detail: string) => void;

function checkIssuer(config: Config, env: NodeJS.ProcessEnv, add: Add): void {
  const url = new URL(config.issuer);
  if (!env.ISSUER) {
    add('issuer', 'warn', `ISSUER is not set: tokens and discovery name ${config.issuer}; set ISSUER to the URL clients and resource servers use`);
  } else if (url.protocol === 'http:' && !LOOPBACK.has(url.hostname)) {
    add('issuer', 'warn', `${config.issuer} is plain http on a host other than loopback: OAuth 2 needs TLS between clients and the server (RFC 6749 §1.6, §3.1); give the https URL clients use (TRUST_PROXY=true behind a TLS-terminating proxy)`);
  } else {
    add('issuer', 'ok', config.issuer);
  }
}

function checkAdmin(config: Config, add: Add): void {
  if (config.admin.port === undefined) {
    add('admin', 'ok', 'no admin listener (admin.port is not set)');
    return;
  }
  try {
    // What start checks, with the same function, before it creates anything.
    adminListenerToken(config.admin);
    add('admin', 'ok', `listener on ${config.admin.host}:${config.admin.port}, token from ${config.admin.token !== undefined ? 'AGENTAUTH_ADMIN_TOKEN' : config.admin.tokenFile}`);
  } catch (err) {
    add('admin', 'fail', startLine(err));
  }
}

interface StoreState {
  /** `none-yet`: a first start creates it; `open`: opened for reading; `failed`: start would fail on it. */
  state: 'none-yet' | 'open' | 'failed';
  /** The store, opened for reading (state `open`; absent for a data directory that holds only the previous layout). */
  store?: Storage;
  /** The signing keys start will load (state `open`): the store's, or with the previous layout's files merged in. */
  keys?: KeyStore;
}

/** The nearest directory of `path` (itself or an ancestor) that exists: where a first start would create the rest. */
function nearestExisting(path: string): string {
  let dir = path;
  while (!existsSync(dir) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/**
 * The SQLite store as start will open it: node:sqlite loads; the file opens read-only (or its directory lets a first
 * start create it); and a data directory still holding the previous layout's files is judged as start's import will
 * leave it (adapters/legacy-import.ts): refused when both hold different keys, else the store's keys and the files'
 * merged, on a copy in memory, as the keys the later checks read.
 */
async function checkSqliteStore(config: Config, add: Add): Promise<StoreState> {
  const file = describeContext(config).location;
  let SqliteStorage: typeof import('../adapters/sqlite.js').SqliteStorage;
  let dataDirProblem: typeof import('../adapters/sqlite.js').dataDirProblem;
  try {
    quietSqliteWarning();
    ({ SqliteStorage, dataDirProblem } = await import('../adapters/sqlite.js'));
  } catch (err) {
    // This Node has no node:sqlite: start fails the same way, with this message.
    add('store', 'fail', err instanceof Error ? err.message : String(err));
    return { state: 'failed' };
  }
  const legacy = LEGACY_FILES.filter((name) => existsSync(join(config.dataDir, name)));
  let store: Storage | undefined;
  if (existsSync(file)) {
    try {
      store = new SqliteStorage({ dataDir: config.dataDir, busyTimeoutMs: config.storage.timeoutMs, readOnly: true });
      await store.init();
    } catch (err) {
      add('store', 'fail', startLine(err));
      return { state: 'failed' };
    }
  } else {
    const misplaced = dataDirProblem(config.dataDir);
    if (misplaced) {
      add('store', 'fail', `cannot start: SQLite open ${file} failed (${misplaced})`);
      return { state: 'failed' };
    }
    const dir = nearestExisting(config.dataDir);
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch (err) {
      add('store', 'fail', `cannot start: SQLite open ${file} failed (${dir} is not writable: ${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      return { state: 'failed' };
    }
  }
  if (legacy.length === 0) {
    if (!store) {
      add('store', 'ok', `no store yet: the first start creates ${file}`);
      return { state: 'none-yet' };
    }
    add('store', 'ok', `SQLite ${file} (synchronous ${config.storage.sqliteSynchronous})`);
    return { state: 'open', store, keys: store.keys };
  }
  // The previous layout's files: start imports them before anything reads the keys.
  const files = new FileKeyStore(config.dataDir);
  const keys = new ScratchKeys(store ? await store.keys.list() : [], store ? await store.keys.transitions() : []);
  const stored = new Set((await keys.list()).map((k) => k.kid));
  const foreign = (await files.list()).filter((k) => !stored.has(k.kid));
  if (stored.size > 0 && foreign.length > 0) {
    await store?.close();
    add('store', 'fail', twoKeySetsMessage(config.dataDir, [...stored], foreign.map((k) => k.kid)));
    return { state: 'failed' };
  }
  for (const t of await files.transitions()) await keys.addTransition(t);
  for (const k of await files.list()) await keys.insert(k);
  add('store', 'ok', `${store ? `SQLite ${file}` : `no SQLite store yet: the first start creates ${file}`}; the next start imports the previous layout's ${legacy.join(', ')}`);
  return store ? { state: 'open', store, keys } : { state: 'open', keys };
}

async function checkStore(config: Config, add: Add): Promise<StoreState> {
  if (config.store === 'memory') {
    add('store', 'warn', `AGENTAUTH_STORE=memory: a throwaway store; clients, grants, tokens and revocations are lost when the process exits (signing keys and the audit log are files in ${config.dataDir})`);
    const store = new EmbeddedStorage({ dataDir: config.dataDir });
    return { state: 'open', store, keys: store.keys };
  }
  if (config.store === 'sqlite') return checkSqliteStore(config, add);
  // MongoDB: the client connects on its first command; no index or collection is created (that is init's work).
  const { MongoStorage } = await import('../adapters/mongodb.js');
  let store: Storage | undefined;
  try {
    // Inside: the driver refuses some connection strings as the client is made (an option it does not know).
    store = await openStorage(config);
    if (!(store instanceof MongoStorage)) throw new Error(`MONGODB_URI is set but the store is ${store.kind}`);
    await store.connect();
    const version = await store.ferretdbV1();
    if (version) {
      add('store', 'warn', `${describeContext(config).location} answers, but it is FerretDB ${version}, whose SQLite backend reads a whole collection for every lookup: fine for tests, not for production volumes (docs/operations.md, "FerretDB v1 is for tests")`);
    } else {
      add('store', 'ok', `${describeContext(config).location} answers`);
    }
    return { state: 'open', store, keys: store.keys };
  } catch (err) {
    await store?.close().catch(() => undefined);
    add('store', 'fail', startLine(err));
    return { state: 'failed' };
  }
}

/** The KEK start would use, read (never generated); undefined when there is none yet or it cannot be had. */
async function checkKek(config: Config, storage: StoreState, add: Add): Promise<ResolvedKek | undefined> {
  const source = { kek: config.kek, kekFile: config.kekFile };
  try {
    const configured = await configuredKek(source);
    if (configured) {
      add('kek', 'ok', `from ${configured.origin}${configured.path ? ` (${configured.path})` : ''}`);
      return configured;
    }
    if (config.store === 'mongodb') throw new KeyMaterialError(MONGODB_NEEDS_KEK);
    const inDataDir = await readDataDirKek(config.dataDir);
    if (inDataDir) {
      add('kek', 'warn', `from the data directory (${inDataDir.path}); in production set AGENTAUTH_KEK or AGENTAUTH_KEK_FILE instead`);
      return inDataDir;
    }
    if (storage.state === 'failed') {
      add('kek', 'warn', 'not checked: no KEK is configured and the store could not be opened to see whether it holds keys');
      return undefined;
    }
    if (storage.keys && (await storage.keys.list()).length > 0) throw new KeyMaterialError(missingKekMessage(config.dataDir));
    add('kek', 'warn', `none yet: the first start generates one in ${dataDirKekPath(config.dataDir)} (mode 0600); in production set AGENTAUTH_KEK or AGENTAUTH_KEK_FILE instead`);
    return undefined;
  } catch (err) {
    add('kek', 'fail', startLine(err));
    return undefined;
  }
}

/**
 * The stored signing keys, each record's MAC and each key pair verified under the KEK as start verifies them. Returns
 * the algorithms of the keys start would sign with (the configured one when the store has none yet), or undefined
 * when the keys could not be read.
 */
async function checkKeys(config: Config, storage: StoreState, kek: ResolvedKek | undefined, fallback: Buffer | undefined, add: Add): Promise<string[] | undefined> {
  if (storage.state === 'failed') return undefined;
  if (!storage.keys) {
    add('signing keys', 'ok', `none yet: the first start generates an ${config.keyAlg} key`);
    return [config.keyAlg];
  }
  try {
    const stored = await storage.keys.list();
    if (stored.length === 0) {
      add('signing keys', 'ok', `none yet: the first start generates an ${config.keyAlg} key`);
      return [config.keyAlg];
    }
    if (!kek) return undefined; // the KEK check has said why
    // What start does first: the one-time upgrade of records stored before they carried MACs (each such key checked
    // against its sealed private key), here on a copy in memory, so that it refuses what start would refuse and
    // the store is left as it is.
    const copy = new ScratchKeys(stored, await storage.keys.transitions());
    const upgraded = await upgradeKeyStore(copy, kek.kek);
    const set = await readCheckedKeys(copy, kek.kek, fallback);
    const view = deriveKeyView(set.keys, set.transitions, new Date(), { retireGraceSeconds: retireGraceSeconds(config) });
    // Keyring.load activates a lone first key stored without transitions (a start that died between the two writes).
    const lone = set.keys.length === 1 && set.keys[0]!.seq === 1 && set.transitions.length === 0;
    const signer = view.signer?.kid ?? (lone ? set.keys[0]!.kid : undefined);
    if (signer === undefined) throw new KeyMaterialError(NO_ACTIVE_KEY);
    const upgrade = upgraded.keys.length + upgraded.transitions.length;
    add(
      'signing keys',
      upgrade > 0 ? 'warn' : 'ok',
      `${plural(set.keys.length, 'key')}, ${plural(set.transitions.length, 'transition')}: every record's MAC and every key pair verified under the KEK${fallback ? ' or its fallback' : ''}; signing with ${signer}` +
        (upgrade > 0 ? `; ${plural(upgrade, 'record')} stored before records carried integrity MACs: the next start writes them` : ''),
    );
    // What start checks resourceServers[].signingAlg against: the published keys (next, active, retired).
    const published = new Set(lone ? [signer] : publishedKids(view));
    return [...new Set(set.keys.filter((k) => published.has(k.kid)).map((k) => k.alg))];
  } catch (err) {
    add('signing keys', 'fail', startLine(err));
    return undefined;
  }
}

/** AGENTAUTH_KEK_FALLBACK(_FILE), read as start reads it: undefined when none is configured or it cannot be had (said why). */
async function checkKekFallback(config: Config, kek: Buffer, add: Add): Promise<Buffer | undefined> {
  try {
    return await fallbackKek(config, kek);
  } catch (err) {
    add('kek fallback', 'fail', startLine(err));
    return undefined;
  }
}

/**
 * What still needs the fallback KEK, so that an operator knows when it can be removed: key records not yet re-sealed
 * under the KEK (the next start, or any `agentauth keys` command, does it), and registered clients whose secret is not
 * known to be hashed under the KEK (each is at its next authentication). Tokens, codes and registration access tokens
 * stored under the fallback's keys cannot be told apart (their stored keys are keyed hashes): they are found until they
 * expire or are used. A warning while any of it is left, since a rotation in progress is a state to finish.
 */
async function checkFallbackUse(storage: StoreState, kek: Buffer, fallback: Buffer, add: Add): Promise<void> {
  if (!storage.store) {
    add('kek fallback', 'warn', 'set, and there is no store yet: nothing was sealed under it; remove AGENTAUTH_KEK_FALLBACK');
    return;
  }
  try {
    const keys = await keysUnderFallback(storage.store.keys, kek, fallback);
    const hasher = new ClientSecretHasher(kek, fallback);
    let clients = 0;
    const named: string[] = [];
    for (let after: string | undefined; ; ) {
      const page = await storage.store.model('Client').list(after, CLIENT_PAGE);
      for (const { id, payload } of page) {
        if (!ClientSecretHasher.isHashed(payload.client_secret) || hasher.isCurrent(payload.client_secret)) continue;
        clients += 1;
        if (named.length < NAMED_REFUSALS) named.push(id);
      }
      if (page.length < CLIENT_PAGE) break;
      after = page.at(-1)!.id;
    }
    const records = keys.keys.length + keys.transitions.length;
    add(
      'kek fallback',
      'warn',
      `a rotation of the KEK is in progress: ${plural(keys.keys.length, 'key')} and ${plural(keys.transitions.length, 'key transition')} still under the fallback` +
        `${records > 0 ? ' (the next start re-seals them)' : ''}; ${plural(clients, 'registered client')} whose secret is not yet hashed under the KEK` +
        `${clients > 0 ? ` (each is at its next authentication: ${named.join(', ')}${clients > named.length ? `, and ${clients - named.length} more` : ''})` : ''}; ` +
        'tokens and codes issued before the KEK changed are found under the fallback until they expire or are used; remove AGENTAUTH_KEK_FALLBACK once none of these needs it (docs/operations.md, "Rotating the KEK")',
    );
  } catch (err) {
    add('kek fallback', 'fail', startLine(err));
  }
}

/** Registered clients checked at most (in pages of CLIENT_PAGE), and refused ones named at most. */
const MAX_REGISTERED_CHECKED = 100_000;
const CLIENT_PAGE = 500;
const NAMED_REFUSALS = 5;

const reasonOf = (err: unknown): string => {
  const e = err as { error_description?: unknown; message?: unknown };
  return typeof e.error_description === 'string' ? e.error_description : String(e.message);
};

/**
 * The clients, built by oidc-provider under this configuration as `start` and every request would build them, on a
 * provider made with this configuration and a scratch signing key:
 * - every client of the configuration file (server/static-clients.ts): one that oidc-provider refuses fails the check,
 *   as it fails `start`;
 * - every registered client of the store (when it exists), looked up through `provider.Client.find` as a request does,
 *   reading only: one that oidc-provider refuses under this configuration (a scope of a resource server since
 *   removed, say) would answer every request of its own with `invalid_client_metadata`. `start` does not look, so this
 *   is a warning, naming the first few.
 */
async function checkClients(config: Config, storage: StoreState, add: Add): Promise<void> {
  const { checkStaticClients } = await import('./static-clients.js');
  const { scratchProvider } = await import('./scratch-provider.js');
  const store = storage.store ?? new EmbeddedStorage({ dataDir: config.dataDir });
  const provider = await scratchProvider(config, store);
  try {
    await checkStaticClients(provider, config.clients);
    add('clients', 'ok', `${config.clients.length} in the configuration file${config.clients.length ? ', each accepted by oidc-provider' : ''}`);
  } catch (err) {
    add('clients', 'fail', startLine(err));
  }
  if (!storage.store) return;

  const staticIds = new Set(config.clients.map((c) => c.client_id));
  const refused: string[] = [];
  let checked = 0;
  let truncated = false;
  try {
    for (let after: string | undefined; ; ) {
      const page = await store.model('Client').list(after, CLIENT_PAGE);
      for (const { id } of page) {
        if (staticIds.has(id)) continue;
        checked += 1;
        await provider.Client.find(id).catch((err: unknown) => {
          // What oidc-provider refuses about the client itself; anything else (the store failing) ends the check.
          if (!(err instanceof errors.InvalidClientMetadata)) throw err;
          refused.push(`${id} (${reasonOf(err)})`);
        });
      }
      if (page.length < CLIENT_PAGE) break;
      if (checked >= MAX_REGISTERED_CHECKED) {
        truncated = true;
        break;
      }
      after = page.at(-1)!.id;
    }
  } catch (err) {
    add('registered clients', 'fail', `the store's registered clients could not be read: ${err instanceof Error ? err.message : String(err)}`);
    return;
  }
  const scope = truncated ? `the first ${checked} registered clients` : plural(checked, 'registered client');
  if (refused.length === 0) {
    add('registered clients', 'ok', `${scope}${checked ? ', each accepted by oidc-provider under this configuration' : ''}`);
    return;
  }
  const named = refused.slice(0, NAMED_REFUSALS).join(', ');
  add(
    'registered clients',
    'warn',
    `${refused.length} of ${scope} would be refused by oidc-provider under this configuration, every request of theirs answered invalid_client_metadata: ${named}${refused.length > NAMED_REFUSALS ? `, and ${refused.length - NAMED_REFUSALS} more` : ''}`,
  );
}
