import type { Provider } from 'oidc-provider';
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';

import type { KeyStore } from '../adapters/types.js';
import { KeyIntegrityError } from '../keys/errors.js';
import type { SigningAlg } from '../keys/generate.js';
import type { Keyring } from '../keys/keyring.js';
import type { LifecyclePolicy } from '../keys/lifecycle.js';
import { rotateKeys } from '../keys/rotation.js';
import type { KeysConfig } from './config.js';
import type { Logger } from './logger.js';

export interface KeyWatcherDeps {
  keyring: Keyring;
  provider: Provider;
  store: KeyStore;
  kek: Buffer;
  /** AGENTAUTH_KEK_FALLBACK: records not yet re-sealed by whichever process does it are read under it. */
  fallback?: Buffer | undefined;
  policy: LifecyclePolicy;
  keys: KeysConfig;
  alg: SigningAlg;
  log: Logger;
  /** Records key events in the audit log. */
  audit?: (type: string, details: Record<string, unknown>) => Promise<unknown>;
}

/**
 * Keeps this instance's signing keys in step with storage: re-reads key states every refreshIntervalSeconds (and at
 * the moment a scheduled activation or archival falls due), rotates automatically when configured, and swaps the
 * provider's keystore when the signer or the published set changes. No restart, and requests in flight keep the
 * keystore they started with.
 */
export class KeyWatcher {
  #applied: string;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #stopped = false;

  constructor(private readonly deps: KeyWatcherDeps) {
    this.#applied = deps.keyring.fingerprint();
  }

  start(): void {
    this.#stopped = false;
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#stopped) return;
    const { keyring, keys } = this.deps;
    const now = Date.now();
    const due = keyring.view().nextChange?.getTime();
    const interval = keys.refreshIntervalSeconds * 1000;
    const wait = due !== undefined && due > now ? Math.min(interval, due - now + 5) : interval;
    this.#timer = setTimeout(() => void this.tick().finally(() => this.#schedule()), wait);
    this.#timer.unref();
  }

  /** One refresh: re-read, maybe rotate, apply a change. Storage errors keep the current keys (logged). */
  async tick(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    const { keyring, log } = this.deps;
    try {
      await keyring.refresh();
      // Apply right after the refresh, with no await in between: the keyring never names a signer the keystore lacks.
      this.apply();
      await this.#autoRotate();
      this.apply();
    } catch (err) {
      // The key states follow the clock whatever storage said: a scheduled activation still takes effect here, so this
      // process does not sign with a key past its retirement (introspection refuses such tokens) while storage fails.
      try {
        this.apply();
      } catch {
        // no signer in the view: the current keystore stays
      }
      if (err instanceof KeyIntegrityError) {
        // Someone wrote the key store without the KEK: an incident, not an outage (docs/operations.md).
        log.error({ event: 'keys.refused', err: err.message }, 'signing keys in storage failed their integrity check; keeping the current ones');
        return;
      }
      log.error({ err: err instanceof Error ? err.message : String(err) }, 'could not refresh signing keys; keeping the current ones');
    } finally {
      this.#running = false;
    }
  }

  /** Swaps the provider's keystore if the signer or the published keys changed. */
  apply(): void {
    const { keyring, provider, log } = this.deps;
    const fingerprint = keyring.fingerprint();
    if (fingerprint === this.#applied) return;
    initializeKeystore.call(provider, keyring.providerJwks());
    this.#applied = fingerprint;
    log.info({ event: 'keys.applied', kid: keyring.active.kid, published: keyring.keys.map((k) => k.kid) }, 'signing keys updated');
  }

  async #autoRotate(): Promise<void> {
    const { keys, keyring, store, kek, policy, alg, log, audit } = this.deps;
    if (!keys.rotationIntervalSeconds) return;
    const view = keyring.view();
    const since = view.signer?.activatesAt?.getTime();
    if (since === undefined || Date.now() - since < keys.rotationIntervalSeconds * 1000) return;
    if (view.timelines.some((t) => t.state === 'next' && t.activatesAt)) return;
    try {
      const result = await rotateKeys(store, kek, policy, { alg, publishDelaySeconds: keys.publishDelaySeconds, reason: 'automatic rotation', fallback: this.deps.fallback });
      if (result.status === 'scheduled') {
        const abandoned = result.abandoned ? { retires_abandoned: result.abandoned } : {};
        log.info({ event: 'key.rotated', kid: result.kid, activates_at: result.activatesAt, replaces: result.replaces, ...abandoned }, 'automatic key rotation scheduled');
        await audit?.('key.rotated', { kid: result.kid, activates_at: result.activatesAt.toISOString(), replaces: result.replaces, reason: 'automatic', ...abandoned });
      }
    } catch (err) {
      // Another instance rotated at the same moment: its key is picked up on the next refresh.
      log.info({ reason: err instanceof Error ? err.message : String(err) }, 'automatic rotation skipped');
    }
    await keyring.refresh();
  }
}
