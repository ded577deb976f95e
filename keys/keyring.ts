import type { JWK } from 'jose';

import type { KeyStore, KeyTransition, StoredKey } from '../adapters/types.js';
import { KeyIntegrityError, KeyMaterialError } from './errors.js';
import { generateSigningKey } from './generate.js';
import type { SigningAlg } from './generate.js';
import { deriveKeyView, publishedKids } from './lifecycle.js';
import type { KeyTimeline, KeyView, LifecyclePolicy } from './lifecycle.js';
import { checkKeyPair, keyRecordText, macKeyRecord, macTransition, readVerifiedKeys, transitionText, upgradeKeyStore } from './integrity.js';
import type { UpgradeReport } from './integrity.js';
import { resealKeyStore } from './kek-rotation.js';
import type { ResealReport } from './kek-rotation.js';
import { seal } from './seal.js';

/** Why a keyring with no key signing now cannot serve (start refuses with it; `config check` says the same). */
export const NO_ACTIVE_KEY = 'no active signing key: run `agentauth keys rotate --immediately`';

export interface LoadedKey {
  kid: string;
  alg: SigningAlg;
  seq: number;
  publicJwk: JWK;
  privateJwk: JWK;
}

export interface KeyringEvents {
  generated?: (kid: string, alg: SigningAlg) => void;
  /** A store from before key records carried integrity MACs was upgraded (keys/integrity.ts). */
  upgraded?: (report: UpgradeReport) => void;
  /** Records under the fallback KEK were written again under the KEK (keys/kek-rotation.ts). */
  resealed?: (report: ResealReport) => void;
}

export interface KeyringOptions {
  /**
   * The KEK being rotated away from (AGENTAUTH_KEK_FALLBACK): records sealed or MACed under it are read, and the load
   * re-seals them under the KEK. Nothing is ever written under it.
   */
  fallback?: Buffer | undefined;
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
  /** Set when an operator withdrew the key: nothing it signed is trusted. */
  withdrawn_at?: string | undefined;
  jwk: JWK;
}

/** Seals a freshly generated key for storage, with its integrity MAC. */
export async function newStoredKey(kek: Buffer, alg: SigningAlg, seq: number, now = new Date()): Promise<StoredKey> {
  const fresh = await generateSigningKey(alg);
  return macKeyRecord(kek, {
    kid: fresh.kid,
    seq,
    alg,
    createdAt: now.toISOString(),
    publicJwk: fresh.publicJwk as Record<string, string>,
    sealed: seal(kek, JSON.stringify(fresh.privateJwk), fresh.kid),
  });
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
    ...(t.withdrawnAt ? { withdrawn_at: t.withdrawnAt.toISOString() } : {}),
    jwk: { ...(stored.find((s) => s.kid === t.kid)!.publicJwk as JWK) },
  }));
}

/**
 * The signing keys this process holds. States come from storage (keys/lifecycle.ts); `refresh()` re-reads them so
 * every instance follows rotations without a restart. Every record must carry a valid integrity MAC, and every key is
 * checked once against its sealed private key (keys/integrity.ts); a refused record refuses the whole refresh, so
 * the keyring only ever holds a key set that verified. Only published private keys are kept; archived ones are
 * never needed again and stay sealed in storage.
 */
export class Keyring {
  #stored: StoredKey[] = [];
  #transitions: KeyTransition[] = [];
  #unsealed = new Map<string, LoadedKey>();
  /** kid → the canonical text of the record whose key pair was checked. */
  #checked = new Map<string, string>();
  /** The canonical text of every record and transition last read: a refresh that finds the same keeps the view. */
  #storedText = '';
  /** The newest key (by seq) this process has seen signing: no later read may make an older one sign again. */
  #newestSigner: { kid: string; seq: number } | undefined;

  private constructor(
    private readonly store: KeyStore,
    private readonly kek: Buffer,
    private readonly policy: LifecyclePolicy,
    /** The KEK being rotated away from: records another process has not re-sealed yet are still read under it. */
    private readonly fallback: Buffer | undefined,
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
    if (!key) throw new KeyMaterialError(NO_ACTIVE_KEY);
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

  /**
   * Re-reads keys and transitions from storage, verifies them (MACs; key pairs not checked before), and unseals
   * newly published keys. Throws a KeyMaterialError naming the record refused, or saying that what was read has no
   * active signing key, and then changes nothing.
   */
  async refresh(): Promise<void> {
    await this.#read(true);
  }

  /** `refresh`; `requireSigner: false` on load, where a store without a signer is refused by `active` (NO_ACTIVE_KEY). */
  async #read(requireSigner: boolean): Promise<void> {
    const { keys: stored, transitions } = await readVerifiedKeys(this.store, this.kek, this.fallback);
    const view = deriveKeyView(stored, transitions, new Date(), this.policy);
    // A read with no signing key (an empty store, keys without their transitions: a store being restored or written
    // by hand, read between two of its writes) is not adopted: this process would stop signing and publish nothing.
    if (requireSigner && !view.signer) {
      throw new KeyMaterialError(`the key store read holds no active signing key (${stored.length} keys, ${transitions.length} transitions); ${NO_ACTIVE_KEY}`);
    }
    // Storage is only ever inserted into: a read in which a key older than one that already signed signs again lost a
    // record (the newer key's activation, or the key itself), which only someone writing the database around
    // agentauth can do. It would bring a retired key, perhaps one retired because it leaked, back to signing.
    const newest = this.#newestSigner;
    if (view.signer && newest && view.signer.seq < newest.seq) {
      throw new KeyIntegrityError(
        `the key store read makes key ${view.signer.kid} (seq ${view.signer.seq}) sign again after key ${newest.kid} (seq ${newest.seq}) replaced it: ` +
          'a key or transition was removed from storage (see docs/operations.md, "Integrity of the key store")',
      );
    }
    const published = new Set(publishedKids(view));
    const checked = new Map<string, string>();
    const unsealed = new Map<string, LoadedKey>();
    for (const s of stored) {
      const text = keyRecordText(s);
      const known = this.#checked.get(s.kid) === text;
      const held = known ? this.#unsealed.get(s.kid) : undefined;
      checked.set(s.kid, text);
      if (known && (held || !published.has(s.kid))) {
        if (held && published.has(s.kid)) unsealed.set(s.kid, held);
        continue;
      }
      const privateJwk = await checkKeyPair(this.kek, s, this.fallback);
      if (published.has(s.kid)) unsealed.set(s.kid, { kid: s.kid, alg: s.alg, seq: s.seq, publicJwk: s.publicJwk as JWK, privateJwk });
    }
    if (view.signer && (!newest || view.signer.seq > newest.seq)) this.#newestSigner = { kid: view.signer.kid, seq: view.signer.seq };
    this.#checked = checked;
    this.#unsealed = unsealed;
    this.#stored = stored;
    this.#transitions = transitions;
    // The view (and the published key set derived from it) only changes with what is stored or with time, which the
    // cached view already follows (its `until`). Keeping it when storage is unchanged keeps `publicJwks()` the same
    // object, so what is derived from it (the JWT verification key set, the verified-token cache) is not rebuilt on
    // every refresh (every 10 s by default).
    const storedText = JSON.stringify([stored.map(keyRecordText), transitions.map(transitionText)]);
    if (storedText !== this.#storedText) this.#cache = undefined;
    this.#storedText = storedText;
  }

  /**
   * Loads the keys and unseals the published ones under `kek`. On empty storage one key is generated and activated
   * (reported through `events.generated`); if another instance wins that race, its key is used. A store written
   * before records carried MACs is upgraded first (`events.upgraded`). Keys sealed under another KEK, or any record
   * altered, refuse the load: a replacement is never generated silently. With `options.fallback`, records under that
   * KEK are accepted and re-sealed under `kek` first (`events.resealed`).
   */
  static async load(store: KeyStore, kek: Buffer, alg: SigningAlg, policy: LifecyclePolicy, events: KeyringEvents = {}, options: KeyringOptions = {}): Promise<Keyring> {
    const upgraded = await upgradeKeyStore(store, kek);
    if (upgraded.keys.length > 0 || upgraded.transitions.length > 0) events.upgraded?.(upgraded);
    if (options.fallback) {
      const resealed = await resealKeyStore(store, kek, options.fallback);
      if (resealed.keys.length > 0 || resealed.transitions.length > 0) events.resealed?.(resealed);
    }
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
      await store.addTransition(macTransition(kek, { kid: first.kid, type: 'activate', at: first.createdAt, recordedAt: new Date().toISOString(), reason: 'first key' }));
    }
    const ring = new Keyring(store, kek, policy, options.fallback);
    await ring.#read(false);
    // #read() has checked every key, archived ones included, against its sealed private key under this KEK.
    if (ring.#stored.length === 0) throw new KeyMaterialError('a signing key was stored but cannot be read back');
    return ring;
  }
}
