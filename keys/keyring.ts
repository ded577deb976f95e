import type { JWK } from 'jose';

import type { KeyStore, KeyTransition, StoredKey } from '../adapters/types.js';
import { KeyMaterialError } from './errors.js';
import { generateSigningKey } from './generate.js';
import type { SigningAlg } from './generate.js';
import { deriveKeyView, publishedKids } from './lifecycle.js';
import type { KeyTimeline, KeyView, LifecyclePolicy } from './lifecycle.js';
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

/** A key as auditors see it: its public JWK and the window in which it signed and was published. */
export interface ArchivedKey {
  kid: string;
  alg: SigningAlg;
  state: KeyTimeline['state'];
  created_at: string;
  activates_at?: string | undefined;
  retired_at?: string | undefined;
  published_until?: string | undefined;
  jwk: JWK;
}

/** Seals a freshly generated key for storage. */
export async function newStoredKey(kek: Buffer, alg: SigningAlg, seq: number, now = new Date()): Promise<StoredKey> {
  const fresh = await generateSigningKey(alg);
  return {
    kid: fresh.kid,
    seq,
    alg,
    createdAt: now.toISOString(),
    publicJwk: fresh.publicJwk as Record<string, string>,
    sealed: seal(kek, JSON.stringify(fresh.privateJwk), fresh.kid),
  };
}

export function archiveView(stored: readonly StoredKey[], view: KeyView): ArchivedKey[] {
  return view.timelines.map((t) => ({
    kid: t.kid,
    alg: t.alg,
    state: t.state,
    created_at: t.createdAt.toISOString(),
    activates_at: t.activatesAt?.toISOString(),
    retired_at: t.retiredAt?.toISOString(),
    published_until: t.publishedUntil?.toISOString(),
    jwk: { ...(stored.find((s) => s.kid === t.kid)!.publicJwk as JWK) },
  }));
}

/**
 * The signing keys this process holds. States come from storage (keys/lifecycle.ts); `refresh()` re-reads them so
 * every instance follows rotations without a restart. Only published keys are unsealed; archived private keys are
 * never needed again and stay sealed in storage.
 */
export class Keyring {
  #stored: StoredKey[] = [];
  #transitions: KeyTransition[] = [];
  readonly #unsealed = new Map<string, LoadedKey>();

  private constructor(
    private readonly store: KeyStore,
    private readonly kek: Buffer,
    private readonly policy: LifecyclePolicy,
  ) {}

  #cache: { view: KeyView; until: number; publicJwks?: { keys: JWK[] } } | undefined;

  /** Key states at `now`. The current view is cached until the next change by time or the next refresh. */
  view(now = new Date()): KeyView {
    const t = now.getTime();
    const c = this.#cache;
    if (c && t < c.until && t >= c.view.computedAt) return c.view;
    const view = deriveKeyView(this.#stored, this.#transitions, now, this.policy);
    this.#cache = { view, until: view.nextChange?.getTime() ?? Number.POSITIVE_INFINITY };
    return view;
  }

  /** The signing key now. */
  get active(): LoadedKey {
    const signer = this.view().signer;
    const key = signer && this.#unsealed.get(signer.kid);
    if (!key) throw new KeyMaterialError('no active signing key: run `agentauth keys rotate --immediately`');
    return key;
  }

  /** Published keys (next, active, retired), the signer first. */
  get keys(): LoadedKey[] {
    return publishedKids(this.view()).flatMap((kid) => this.#unsealed.get(kid) ?? []);
  }

  providerJwks(): { keys: JWK[] } {
    return { keys: this.keys.map((k) => ({ ...k.privateJwk })) };
  }

  /** The published public keys; the same object until the published set changes (callers may cache by identity). */
  publicJwks(): { keys: JWK[] } {
    this.view();
    const c = this.#cache!;
    c.publicJwks ??= { keys: this.keys.map((k) => ({ ...k.publicJwk })) };
    return c.publicJwks;
  }

  archive(now = new Date()): ArchivedKey[] {
    return archiveView(this.#stored, this.view(now));
  }

  /** Changes whenever the signer or the published set changes. */
  fingerprint(now = new Date()): string {
    const view = this.view(now);
    return `${view.signer?.kid ?? '-'}|${publishedKids(view).join(',')}`;
  }

  /** Re-reads keys and transitions from storage and unseals newly published keys. */
  async refresh(): Promise<void> {
    const [stored, transitions] = await Promise.all([this.store.list(), this.store.transitions()]);
    const view = deriveKeyView(stored, transitions, new Date(), this.policy);
    for (const kid of publishedKids(view)) {
      if (this.#unsealed.has(kid)) continue;
      const s = stored.find((k) => k.kid === kid)!;
      const privateJwk = JSON.parse(unseal(this.kek, s.sealed, s.kid)) as JWK;
      if (privateJwk.kid !== s.kid) throw new KeyMaterialError(`stored key ${s.kid} unseals to a different key id`);
      this.#unsealed.set(kid, { kid: s.kid, alg: s.alg, seq: s.seq, publicJwk: s.publicJwk as JWK, privateJwk });
    }
    this.#stored = stored;
    this.#transitions = transitions;
    this.#cache = undefined;
  }

  /**
   * Loads the keys and unseals the published ones under `kek`. On empty storage one key is generated and activated
   * (reported through `events.generated`); if another instance wins that race, its key is used. Keys sealed under
   * another KEK, or altered, refuse the load: a replacement is never generated silently.
   */
  static async load(store: KeyStore, kek: Buffer, alg: SigningAlg, policy: LifecyclePolicy, events: KeyringEvents = {}): Promise<Keyring> {
    if ((await store.list()).length === 0) {
      const record = await newStoredKey(kek, alg, 1);
      if (await store.insert(record)) events.generated?.(record.kid, alg);
    }
    // A lone first key with no transitions is activated here, by whoever sees it: the instance that stored it, or
    // another starting at the same moment (a second worker) before the storer got to it, or after it died between
    // the two writes. Transitions are unique per (kid, type), so whichever write comes first stands and the rest are
    // no-ops. Any other keyring is one this process must not second-guess.
    const [stored, transitions] = await Promise.all([store.list(), store.transitions()]);
    const first = stored[0];
    if (stored.length === 1 && first?.seq === 1 && transitions.length === 0) {
      await store.addTransition({ kid: first.kid, type: 'activate', at: first.createdAt, recordedAt: new Date().toISOString(), reason: 'first key' });
    }
    const ring = new Keyring(store, kek, policy);
    await ring.refresh();
    if (ring.#stored.length === 0) throw new KeyMaterialError('a signing key was stored but cannot be read back');
    // Refuse to start on keys this KEK cannot open, even if none is published (e.g. all archived).
    if (ring.#unsealed.size === 0) {
      const newest = ring.#stored.at(-1)!;
      unseal(kek, newest.sealed, newest.kid);
    }
    return ring;
  }
}
