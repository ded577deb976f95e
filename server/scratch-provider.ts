import { randomBytes } from 'node:crypto';

import type { Provider } from 'oidc-provider';

import type { KeyStore, KeyTransition, Storage, StoredKey } from '../adapters/types.js';
import { StorageHealth } from '../adapters/health.js';
import { createWalletSignIn } from '../interactions/wallet-signin.js';
import { Keyring } from '../keys/keyring.js';
import { deriveKey, KEK_BYTES } from '../keys/seal.js';
import { ClientSecretHasher } from './client-secrets.js';
import { retireGraceSeconds } from './config.js';
import type { Config } from './config.js';
import { createLogger } from './logger.js';
import { assembleProvider } from './provider-assembly.js';

/** A KeyStore in memory: what a scratch provider signs with, and what `config check` runs start's key upgrades on. */
export class ScratchKeys implements KeyStore {
  readonly #keys: StoredKey[];
  readonly #transitions: KeyTransition[];

  /** Empty, or a copy of a store's records (to run start's one-time MAC upgrade on, leaving the store as it is). */
  constructor(keys: readonly StoredKey[] = [], transitions: readonly KeyTransition[] = []) {
    this.#keys = keys.map((k) => ({ ...k }));
    this.#transitions = transitions.map((t) => ({ ...t }));
  }

  async list(): Promise<StoredKey[]> {
    return [...this.#keys];
  }

  async insert(key: StoredKey): Promise<boolean> {
    if (this.#keys.some((k) => k.seq === key.seq)) return false;
    this.#keys.push(key);
    return true;
  }

  async transitions(): Promise<KeyTransition[]> {
    return [...this.#transitions];
  }

  async addTransition(t: KeyTransition): Promise<boolean> {
    if (this.#transitions.some((x) => x.kid === t.kid && x.type === t.type)) return false;
    this.#transitions.push(t);
    return true;
  }

  async addKeyMac(kid: string, mac: string): Promise<void> {
    const key = this.#keys.find((k) => k.kid === kid);
    if (key && key.mac === undefined) key.mac = mac;
  }

  async addTransitionMac(kid: string, type: KeyTransition['type'], mac: string): Promise<void> {
    const t = this.#transitions.find((x) => x.kid === kid && x.type === type);
    if (t && t.mac === undefined) t.mac = mac;
  }

  async replaceKey(key: StoredKey, expectedMac: string): Promise<boolean> {
    const i = this.#keys.findIndex((k) => k.kid === key.kid && k.seq === key.seq && k.mac === expectedMac);
    if (i < 0) return false;
    this.#keys[i] = key;
    return true;
  }

  async replaceTransitionMac(kid: string, type: KeyTransition['type'], expectedMac: string, mac: string): Promise<boolean> {
    const t = this.#transitions.find((x) => x.kid === kid && x.type === type && x.mac === expectedMac);
    if (!t) return false;
    t.mac = mac;
    return true;
  }
}

/**
 * The provider `start` would build from `config` (server/provider-assembly.ts: its grants registered, so that their
 * grant types are accepted), on `store` and a throwaway KEK and signing key of the configured algorithm: nothing is
 * read from or written to a key store. What it is for: asking oidc-provider about clients (server/static-clients.ts)
 * before anything is created (`start`), or without creating anything (`config check`).
 */
export async function scratchProvider(config: Config, store: Storage): Promise<Provider> {
  const kek = randomBytes(KEK_BYTES);
  const keyring = await Keyring.load(new ScratchKeys(), kek, config.keyAlg, { retireGraceSeconds: retireGraceSeconds(config) });
  return assembleProvider({
    config,
    storage: store,
    health: new StorageHealth(store),
    keyring,
    cookieKeys: [deriveKey(kek, 'cookies').toString('base64url')],
    hasher: new ClientSecretHasher(kek),
    dpopNonceSecret: deriveKey(kek, 'dpop-nonce'),
    log: createLogger('silent'),
    wallet: createWalletSignIn(config.wallet, config.issuer, store.nonces),
  });
}
