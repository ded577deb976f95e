import type { JWK } from 'jose';

import type { KeyStore, StoredKey } from '../adapters/types.js';
import { KeyMaterialError } from './errors.js';
import { generateSigningKey } from './generate.js';
import type { SigningAlg } from './generate.js';
import { seal, unseal } from './seal.js';

export interface LoadedKey {
  kid: string;
  alg: SigningAlg;
  seq: number;
  publicJwk: JWK;
  privateJwk: JWK;
}

export interface KeyringEvents {
  generated?: (kid: string, alg: SigningAlg) => void;
}

/** The signing keys this process holds, unsealed. The active key is the newest; all are published. */
export class Keyring {
  private constructor(readonly keys: readonly LoadedKey[]) {}

  get active(): LoadedKey {
    const key = this.keys.at(-1);
    if (!key) throw new KeyMaterialError('no signing key is loaded');
    return key;
  }

  /** The private JWK set in the order oidc-provider should prefer them (active first). */
  providerJwks(): { keys: JWK[] } {
    return { keys: [...this.keys].reverse().map((k) => ({ ...k.privateJwk })) };
  }

  publicJwks(): { keys: JWK[] } {
    return { keys: [...this.keys].reverse().map((k) => ({ ...k.publicJwk })) };
  }

  /**
   * Loads every stored key and unseals it under `kek`. On empty storage one key is generated, sealed and stored
   * first (and reported through `events.generated`); if another instance wins that race, its key is used.
   * Keys sealed under another KEK, or altered, refuse the load: a replacement is never generated silently.
   */
  static async load(store: KeyStore, kek: Buffer, alg: SigningAlg, events: KeyringEvents = {}): Promise<Keyring> {
    let stored = await store.list();
    if (stored.length === 0) {
      const fresh = await generateSigningKey(alg);
      const record: StoredKey = {
        kid: fresh.kid,
        seq: 1,
        alg,
        state: 'active',
        createdAt: new Date().toISOString(),
        publicJwk: fresh.publicJwk as Record<string, string>,
        sealed: seal(kek, JSON.stringify(fresh.privateJwk), fresh.kid),
      };
      if (await store.insert(record)) events.generated?.(fresh.kid, alg);
      stored = await store.list();
      if (stored.length === 0) throw new KeyMaterialError('a signing key was stored but cannot be read back');
    }
    const keys = stored.map((s): LoadedKey => {
      const privateJwk = JSON.parse(unseal(kek, s.sealed, s.kid)) as JWK;
      if (privateJwk.kid !== s.kid) throw new KeyMaterialError(`stored key ${s.kid} unseals to a different key id`);
      return { kid: s.kid, alg: s.alg, seq: s.seq, publicJwk: s.publicJwk, privateJwk };
    });
    return new Keyring(keys);
  }
}
