import type Koa from 'koa';
import type { Provider } from 'oidc-provider';

import { StorageHealth } from '../adapters/health.js';
import { importLegacyLayout } from '../adapters/legacy-import.js';
import { EmbeddedStorage } from '../adapters/memory.js';
import type { Storage } from '../adapters/types.js';
import { KeyMaterialError } from '../keys/errors.js';
import { configuredKek, embeddedKek } from '../keys/kek.js';
import type { ResolvedKek } from '../keys/kek.js';
import type { UpgradeReport } from '../keys/integrity.js';
import { Keyring } from '../keys/keyring.js';
import { deriveKey } from '../keys/seal.js';
import { createApp } from './app.js';
import { HandlersInFlight } from './http/in-flight.js';
import { retireGraceSeconds } from './config.js';
import type { Config } from './config.js';
import { KeyWatcher } from './key-watcher.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import { auditProviderEvents } from './audit/provider-events.js';
import type { Logger } from './logger.js';
import { ClientSecretHasher } from './client-secrets.js';
import { createWalletSignIn } from '../interactions/wallet-signin.js';
import { SharedWindowLimit } from './limits/window.js';
import { registerWalletGrant } from './grants/wallet-signature.js';
import { registerTokenExchangeGrant } from './grants/token-exchange.js';
import { createProvider, OIDC_SCOPES } from './provider.js';
import { installPublicKeyImportCache } from './crypto/public-key-import-cache.js';
import { installDisabledClientCheck } from './admin/disabled-clients.js';
import type { FetchTestOverrides } from './client-metadata/fetch.js';
import { createMetrics } from './metrics/registry.js';
import type { Metrics } from './metrics/registry.js';
import { measuredStorage } from './metrics/storage.js';
import { measuredAudit } from './metrics/audit.js';
import { observeKeyStates } from './metrics/keys.js';
import { observeProviderEvents } from './metrics/provider-events.js';

export interface Agentauth {
  config: Config;
  hasher: ClientSecretHasher;
  app: Koa;
  provider: Provider;
  storage: Storage;
  health: StorageHealth;
  keyring: Keyring;
  /** This server's Prometheus registry and series (serve with metricsRoute(metrics.registry), server/metrics/route.ts). */
  metrics: Metrics;
  /** This process's audit log (its own chain). */
  audit: Pick<AuditLog, 'record' | 'close'>;
  /** Handlers of the public app still running (shutdown waits for them before closing the audit log and storage). */
  inFlight: HandlersInFlight;
  /** Stops background work and closes storage. */
  close(): Promise<void>;
}

/**
 * The configured store. The MongoDB driver (and BSON's 17 MB serialisation buffer) is loaded only when MongoDB is
 * configured: the embedded store does not pay for it in memory.
 */
export async function openStorage(config: Config, log?: Logger): Promise<Storage> {
  if (config.mongodb) {
    const { MongoStorage } = await import('../adapters/mongodb.js');
    return new MongoStorage({
      uri: config.mongodb.uri,
      dbName: config.mongodb.dbName,
      timeoutMs: config.storage.timeoutMs,
      sweepIntervalMs: config.storage.sweepIntervalMs,
      onReconnect: (reason) => log?.warn({ reason }, 'storage: pings kept failing; replaced the MongoDB client with a new one'),
    });
  }
  if (config.store === 'memory') return new EmbeddedStorage({ dataDir: config.dataDir, sweepIntervalMs: config.storage.sweepIntervalMs });
  quietSqliteWarning();
  const { SqliteStorage } = await import('../adapters/sqlite.js');
  return new SqliteStorage({
    dataDir: config.dataDir,
    busyTimeoutMs: config.storage.timeoutMs,
    sweepIntervalMs: config.storage.sweepIntervalMs,
    synchronous: config.storage.sqliteSynchronous,
  });
}

/**
 * Node 22 flags node:sqlite as experimental and says so on stderr once per process, in every CLI command too. The
 * module is the store agentauth ships (docs/operations.md says why); that one warning is dropped, every other stays.
 */
function quietSqliteWarning(): void {
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

export async function resolveKek(config: Config, storage: Storage, log: Logger): Promise<ResolvedKek> {
  const source = { kek: config.kek, kekFile: config.kekFile };
  if (storage.kind === 'mongodb') {
    const kek = await configuredKek(source);
    if (!kek) {
      throw new KeyMaterialError(
        'AGENTAUTH_KEK or AGENTAUTH_KEK_FILE is required with MONGODB_URI: every instance must unseal the same shared keys',
      );
    }
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

/** Builds a ready-to-serve agentauth: storage initialised, keys loaded (or generated once), provider and app composed. */
/** In-process options no configuration file or environment variable can set (tests pass them; the CLI never does). */
export interface BootOptions {
  clientMetadataTest?: FetchTestOverrides;
}

export async function boot(config: Config, log: Logger, options: BootOptions = {}): Promise<Agentauth> {
  // Before the provider exists: DPoP proof keys (and any public JWK) are imported once, not on every request.
  installPublicKeyImportCache();
  const metrics = createMetrics();
  const storage = measuredStorage(await openStorage(config, log), metrics);
  if (storage.kind === 'embedded') {
    log.warn(
      { store: 'memory', dataDir: config.dataDir },
      'THROWAWAY STORE (AGENTAUTH_STORE=memory): clients, grants, tokens and revocations live in this process and are LOST on exit (signing keys and the audit log are files in the data directory); unset AGENTAUTH_STORE for the durable SQLite store',
    );
  } else if (storage.kind === 'sqlite') {
    log.info({ store: 'sqlite', dataDir: config.dataDir }, 'storage: SQLite in the data directory');
  }
  try {
    await initStorage(config, storage, log);
    const { kek, origin } = await resolveKek(config, storage, log);
    const policy = { retireGraceSeconds: retireGraceSeconds(config) };
    const audit = measuredAudit(new AuditLog(storage.audit, { chain: writerChain({ server: { port: config.port } }, config.auditChain) }), metrics);
    let generated: { kid: string; alg: string } | undefined;
    let upgraded: UpgradeReport | undefined;
    const keyring = await Keyring.load(storage.keys, kek, config.keyAlg, policy, {
      generated: (kid, alg) => {
        generated = { kid, alg };
        log.info({ kid, alg }, 'generated the first signing key');
      },
      upgraded: (report) => {
        upgraded = report;
        log.warn({ event: 'keys.integrity_upgraded', ...report }, 'key store upgraded: integrity MACs written for records stored without one (keys checked against their sealed private keys)');
      },
    });
    if (upgraded) await audit.record({ type: 'key.integrity_upgraded', details: { ...upgraded } });
    if (generated) await audit.record({ type: 'key.generated', details: { ...generated, reason: 'first start on empty storage' } });
    observeKeyStates(keyring, metrics);
    log.info({ kid: keyring.active.kid, alg: keyring.active.alg, keys: keyring.keys.length, kek: origin, store: storage.kind }, 'signing keys loaded');

    const algs = new Set(keyring.keys.map((k) => k.alg));
    config.resourceServers.forEach((rs, i) => {
      if (rs.signingAlg && !algs.has(rs.signingAlg)) {
        throw new KeyMaterialError(
          `resourceServers[${i}].signingAlg is ${rs.signingAlg} but the signing keys are ${[...algs].join(', ')}; remove signingAlg or set AGENTAUTH_KEY_ALG before the first start`,
        );
      }
    });
    const cookieKeys = [deriveKey(kek, 'cookies').toString('base64url')];
    const hasher = new ClientSecretHasher(deriveKey(kek, 'client-secrets'));
    // Identical on every instance that shares the KEK (or set explicitly in the config file).
    const dpopNonceSecret = config.dpopNonceSecret ? Buffer.from(config.dpopNonceSecret, 'base64') : deriveKey(kek, 'dpop-nonce');
    const health = new StorageHealth(storage, 1000, config.storage.timeoutMs);
    health.onChange((up, reason) => (up ? log.info('storage reachable again') : log.error({ reason }, 'storage unreachable')));
    health.start();
    const wallet = createWalletSignIn(config.wallet, config.issuer, storage.nonces);
    const provider = createProvider({ config, storage, health, keyring, cookieKeys, hasher, dpopNonceSecret, log, clientMetadataTest: options.clientMetadataTest });
    registerWalletGrant(provider, wallet, log, health);
    registerTokenExchangeGrant(provider, { policy: config.tokenExchange, clients: storage.model('Client'), health });
    installDisabledClientCheck(provider, storage.model('Client'), health);
    auditProviderEvents(provider);
    observeProviderEvents(provider);
    const watcher = new KeyWatcher({
      keyring, provider, store: storage.keys, kek, policy, keys: config.keys, alg: config.keyAlg, log,
      audit: (type, details) => audit.record({ type, details }),
    });
    watcher.start();
    const inFlight = new HandlersInFlight();
    const app = createApp({ provider, health, keyring, cookieKeys, log, inFlight,
      interactions: { provider, wallet, issuer: config.issuer, oidcScopes: OIDC_SCOPES, log, limits: {
        walletNonces: new SharedWindowLimit(storage.nonces, 'wallet-nonce', config.limits.walletNoncesPerAddress),
        signInAttempts: new SharedWindowLimit(storage.nonces, 'sign-in', config.limits.signInAttemptsPerAddress),
      } },
      audit,
      metrics,
    });
    provider.proxy = config.trustProxy;
    app.proxy = config.trustProxy;
    return {
      config,
      hasher,
      app,
      inFlight,
      provider,
      storage,
      health,
      keyring,
      metrics,
      audit,
      async close() {
        watcher.stop();
        health.stop();
        await audit.close();
        await storage.close();
      },
    };
  } catch (err) {
    await storage.close().catch(() => undefined);
    throw err;
  }
}
