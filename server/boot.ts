import { availableParallelism } from 'node:os';

import type Koa from 'koa';
import type { Provider } from 'oidc-provider';

import { EmbeddedStorage } from '../adapters/memory.js';
import { StorageHealth } from '../adapters/health.js';
import type { Storage } from '../adapters/types.js';
import type { UpgradeReport } from '../keys/integrity.js';
import type { ResealReport } from '../keys/kek-rotation.js';
import { Keyring } from '../keys/keyring.js';
import { deriveKey } from '../keys/seal.js';
import { createApp } from './app.js';
import { HandlersInFlight } from './http/in-flight.js';
import { OIDC_SCOPES, retireGraceSeconds } from './config.js';
import type { Config } from './config.js';
import { KeyWatcher } from './key-watcher.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import { auditProviderEvents } from './audit/provider-events.js';
import type { Logger } from './logger.js';
import { ClientSecretHasher } from './client-secrets.js';
import { createWalletSignIn } from '../interactions/wallet-signin.js';
import { consentClaims } from '../interactions/consent-claim.js';
import { SharedWindowLimit } from './limits/window.js';
import { assembleProvider } from './provider-assembly.js';
import { checkResourceServerAlgs } from './resource-servers.js';
import { scratchProvider } from './scratch-provider.js';
import { checkStaticClients } from './static-clients.js';
import { revokedWhileServed } from './subject-revocation.js';
import { failClosedInProvider } from '../adapters/oidc-adapter.js';
import { inlineSignaturesInstalled, installInlineSignatures, signaturesInline } from './crypto/inline-signatures.js';
import { installPublicKeyImportCache } from './crypto/public-key-import-cache.js';
import { installSyncDigest } from './crypto/sync-digest.js';
import type { FetchTestOverrides } from './client-metadata/fetch.js';
import type { UnreadableListener } from '../adapters/errors.js';
import { createMetrics } from './metrics/registry.js';
import type { Metrics } from './metrics/registry.js';
import { measuredStorage } from './metrics/storage.js';
import { measuredAudit } from './metrics/audit.js';
import { observeKeyStates } from './metrics/keys.js';
import { observeProviderEvents } from './metrics/provider-events.js';

// The storage set-up lives in a module of its own, so that the CLI's storage commands need not load the provider.
export { initStorage, openStorage, resolveKek } from './storage-setup.js';
import { credentialStorage, initStorage, openStorage, resolveKek } from './storage-setup.js';

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

/** In-process options no configuration file or environment variable can set (tests pass them; the CLI passes `processes`, its `--workers`). */
export interface BootOptions {
  clientMetadataTest?: FetchTestOverrides;
  /** How many agentauth processes serve on this machine (`--workers N`; 1 if not given): decides where signatures are computed. */
  processes?: number;
  /**
   * False for a command that boots agentauth to use it, not to serve (`clients iat create`): the warning about serving
   * without ISSUER is left out, as the command's context line already says which issuer it uses.
   */
  serving?: boolean;
}

/** Builds a ready-to-serve agentauth: storage initialised, keys loaded (or generated once), provider and app composed. */
export async function boot(config: Config, log: Logger, options: BootOptions = {}): Promise<Agentauth> {
  // Before the provider exists: DPoP proof keys (and any public JWK) are imported once, not on every request.
  installPublicKeyImportCache();
  installSyncDigest();
  const processes = options.processes ?? 1;
  if (signaturesInline(processes)) installInlineSignatures();
  log.info(
    { signatures: inlineSignaturesInstalled() ? 'event loop' : 'thread pool', processes, cores: availableParallelism() },
    'where ECDSA and Ed25519 signatures are computed',
  );
  // A client of the file that oidc-provider refuses is refused before anything is opened or created: no data
  // directory, KEK or first key is left behind by a start that was never going to serve. Asked of a provider on a
  // throwaway key and an empty store; the provider that serves asks again below (its keys decide what it accepts).
  if (config.clients.length > 0) await checkStaticClients(await scratchProvider(config, new EmbeddedStorage({ dataDir: config.dataDir })), config.clients);
  const metrics = createMetrics();
  // A lookup that found a record it cannot read answers it as absent and throws nothing: counted here, with the
  // failures measuredStorage counts, under its own error kind (only ever called once the store is open).
  const onUnreadable: UnreadableListener = (err) => metrics.storageErrors.inc({ backend: storage.kind, store: err.model, operation: 'find', error: err.code });
  const storage = measuredStorage(await openStorage(config, log, { onUnreadable }), metrics);
  if (storage.kind === 'embedded') {
    log.warn(
      { store: 'memory', dataDir: config.dataDir },
      'THROWAWAY STORE (AGENTAUTH_STORE=memory): clients, grants, tokens and revocations live in this process and are LOST on exit (signing keys and the audit log are files in the data directory); unset AGENTAUTH_STORE for the durable SQLite store',
    );
  } else if (storage.kind === 'sqlite') {
    log.info({ store: 'sqlite', dataDir: config.dataDir }, 'storage: SQLite in the data directory');
  }
  if (config.publicOrigin === undefined && options.serving !== false) {
    log.warn(
      { issuer: config.issuer },
      `ISSUER is not set: tokens name ${config.issuer} as their issuer, and discovery's URLs (which DPoP proofs and client assertions are checked against) follow each request's Host header; set ISSUER to the URL clients use`,
    );
  }
  try {
    await initStorage(config, storage, log);
    const { kek, origin, fallback } = await resolveKek(config, storage, log);
    if (fallback) {
      log.warn(
        { event: 'kek.rotating' },
        'AGENTAUTH_KEK_FALLBACK is set: what was sealed, hashed or keyed under it is still read, and moved to the KEK as it is met; `agentauth config check` says what still needs it (docs/operations.md, "Rotating the KEK")',
      );
    }
    // Tokens, codes and registration access tokens are kept under keyed hashes of their values (adapters/sealed-credential-ids.ts).
    const credentials = credentialStorage(config, storage, kek, fallback);
    const policy = { retireGraceSeconds: retireGraceSeconds(config) };
    const audit = measuredAudit(new AuditLog(storage.audit, { chain: writerChain({ server: { port: config.port } }, config.auditChain) }), metrics);
    let generated: { kid: string; alg: string } | undefined;
    let upgraded: UpgradeReport | undefined;
    let resealed: ResealReport | undefined;
    const keyring = await Keyring.load(storage.keys, kek, config.keyAlg, policy, {
      generated: (kid, alg) => {
        generated = { kid, alg };
        log.info({ kid, alg }, 'generated the first signing key');
      },
      upgraded: (report) => {
        upgraded = report;
        log.warn({ event: 'keys.integrity_upgraded', ...report }, 'key store upgraded: integrity MACs written for records stored without one (keys checked against their sealed private keys)');
      },
      resealed: (report) => {
        resealed = report;
        log.warn({ event: 'keys.resealed', ...report }, 'key store re-sealed: records under the fallback KEK written again under the KEK');
      },
    }, { fallback });
    if (upgraded) await audit.record({ type: 'key.integrity_upgraded', details: { ...upgraded } });
    if (resealed) await audit.record({ type: 'key.resealed', details: { ...resealed } });
    if (generated) await audit.record({ type: 'key.generated', details: { ...generated, reason: 'first start on empty storage' } });
    observeKeyStates(keyring, metrics);
    log.info({ kid: keyring.active.kid, alg: keyring.active.alg, keys: keyring.keys.length, kek: origin, store: storage.kind }, 'signing keys loaded');

    checkResourceServerAlgs(config.resourceServers, keyring.keys.map((k) => k.alg));
    // Cookies are signed with the KEK's key and, during a rotation of the KEK, still accepted under the fallback's.
    const cookieKeys = [kek, ...(fallback ? [fallback] : [])].map((k) => deriveKey(k, 'cookies').toString('base64url'));
    const hasher = new ClientSecretHasher(kek, fallback);
    // Identical on every instance that shares the KEK (or set explicitly in the config file).
    const dpopNonceSecret = config.dpopNonceSecret ? Buffer.from(config.dpopNonceSecret, 'base64') : deriveKey(kek, 'dpop-nonce');
    const health = new StorageHealth(storage, 1000, config.storage.timeoutMs);
    health.onChange((up, reason) => (up ? log.info('storage reachable again') : log.error({ reason }, 'storage unreachable')));
    health.start();
    const wallet = createWalletSignIn(config.wallet, config.issuer, storage.nonces);
    const provider = assembleProvider({ config, storage: credentials, health, keyring, cookieKeys, hasher, dpopNonceSecret, log, clientMetadataTest: options.clientMetadataTest, wallet });
    auditProviderEvents(provider);
    observeProviderEvents(provider);
    await checkStaticClients(provider, config.clients).catch((err: unknown) => {
      health.stop();
      throw err;
    });
    const watcher = new KeyWatcher({
      keyring, provider, store: storage.keys, kek, fallback, policy, keys: config.keys, alg: config.keyAlg, log,
      audit: (type, details) => audit.record({ type, details }),
    });
    watcher.start();
    const inFlight = new HandlersInFlight();
    const app = createApp({ provider, health, keyring, cookieKeys, log, inFlight,
      interactions: { provider, wallet, issuer: config.issuer, oidcScopes: OIDC_SCOPES, resourceScopes: new Map(config.resourceServers.map((rs) => [rs.identifier, rs.scopes])), log, limits: {
        walletNonces: new SharedWindowLimit(storage.nonces, 'wallet-nonce', config.limits.walletNoncesPerAddress, config.limits.ipv6PrefixLength),
        signInAttempts: new SharedWindowLimit(storage.nonces, 'sign-in', config.limits.signInAttemptsPerAddress, config.limits.ipv6PrefixLength),
      },
      // Interactions live 600 s (server/provider.ts ttl.Interaction): the hour-long mark outlives the request it guards.
      consentClaim: consentClaims(storage.nonces, 3600),
      subjectRevokedWhileServed: (sub, arrivedAtMs) => failClosedInProvider(() => revokedWhileServed(storage.revokedTokens, sub, arrivedAtMs), health) },
      audit,
      metrics,
      publicOrigin: config.publicOrigin,
    });
    provider.proxy = config.trustProxy;
    app.proxy = config.trustProxy;
    return {
      config,
      hasher,
      app,
      inFlight,
      provider,
      storage: credentials,
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
