import type { AccountPage, AdapterPayload, Consumption, KeyStore, ModelName, ModelStore, NonceStore, RevokedTokenStore, Storage } from './types.js';
import { MODEL_NAMES } from './types.js';
import { checkKey, checkLookup, isAccountLookup, isValidKey } from './validate.js';
import { FileAuditStore } from './file-audit.js';
import { FileKeyStore } from './file-keys.js';
import { jsonCopy } from './json-copy.js';

interface Entry {
  payload: AdapterPayload;
  /** epoch ms; undefined = no expiry */
  expiresAt: number | undefined;
  /** The record that replaced this consumed one (setSuccessor). */
  successor?: string;
}

const now = () => Date.now();
const live = (e: Entry | undefined, t = now()): e is Entry => e !== undefined && (e.expiresAt === undefined || e.expiresAt > t);

/**
 * The embedded store's model storage: plain maps in this process, no entry limit, with the same semantics as the
 * MongoDB store (JSON copies in and out, expiry on read plus a sweep, atomic consume). Nothing survives a restart.
 */
class MemoryModelStore implements ModelStore {
  readonly #entries = new Map<string, Entry>();
  readonly #byGrant = new Map<string, Set<string>>();
  readonly #byUid = new Map<string, string>();
  readonly #byUserCode = new Map<string, string>();
  readonly #byClient = new Map<string, Set<string>>();

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    this.#put(id, payload, expiresIn);
  }

  #put(id: string, payload: AdapterPayload, expiresIn?: number): void {
    checkKey('id', id);
    if (payload.grantId !== undefined) checkKey('grantId', payload.grantId);
    if (payload.uid !== undefined) checkKey('uid', payload.uid);
    if (payload.userCode !== undefined) checkKey('userCode', payload.userCode);
    this.#unindex(id);
    const copy = jsonCopy(payload);
    this.#entries.set(id, { payload: copy, expiresAt: expiresIn ? now() + expiresIn * 1000 : undefined });
    if (typeof copy.grantId === 'string') {
      let set = this.#byGrant.get(copy.grantId);
      if (!set) this.#byGrant.set(copy.grantId, (set = new Set()));
      set.add(id);
    }
    if (typeof copy.clientId === 'string') {
      let set = this.#byClient.get(copy.clientId);
      if (!set) this.#byClient.set(copy.clientId, (set = new Set()));
      set.add(id);
    }
    if (typeof copy.uid === 'string') this.#byUid.set(copy.uid, id);
    if (typeof copy.userCode === 'string') this.#byUserCode.set(copy.userCode, id);
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(id)) return undefined;
    const e = this.#entries.get(id);
    return live(e) ? jsonCopy(e.payload) : undefined;
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(uid)) return undefined;
    const id = this.#byUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(userCode)) return undefined;
    const id = this.#byUserCode.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id: string): Promise<boolean> {
    if (!isValidKey(id)) return false;
    // Check-and-set with no await in between: atomic on the event loop.
    const e = this.#entries.get(id);
    if (!live(e) || e.payload.consumed !== undefined) return false;
    e.payload.consumed = Math.floor(now() / 1000);
    return true;
  }

  async setSuccessor(id: string, successor: string): Promise<boolean> {
    if (!isValidKey(id)) return false;
    checkKey('successor', successor);
    // Check-and-set with no await in between: atomic on the event loop. Kept beside the payload, not in it.
    const e = this.#entries.get(id);
    if (!live(e) || e.payload.consumed === undefined || e.successor !== undefined) return false;
    e.successor = successor;
    return true;
  }

  /** In order, as nothing else runs between the steps here: the consume decides, and only its winner stores and records. */
  async rotate(consumedId: string, id: string, payload: AdapterPayload, expiresIn: number | undefined, recordSuccessor: boolean): Promise<boolean> {
    if (!(await this.consume(consumedId))) return false;
    await this.upsert(id, payload, expiresIn);
    if (recordSuccessor) await this.setSuccessor(consumedId, id);
    return true;
  }

  async consumption(id: string): Promise<Consumption | undefined> {
    if (!isValidKey(id)) return undefined;
    const e = this.#entries.get(id);
    if (!live(e) || typeof e.payload.consumed !== 'number') return undefined;
    return e.successor === undefined ? { at: e.payload.consumed } : { at: e.payload.consumed, successor: e.successor };
  }

  async destroy(id: string): Promise<void> {
    if (!isValidKey(id)) return;
    this.#unindex(id);
    this.#entries.delete(id);
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (!isValidKey(grantId)) return;
    const ids = this.#byGrant.get(grantId);
    if (!ids) return;
    for (const id of [...ids]) await this.destroy(id);
    this.#byGrant.delete(grantId);
  }

  async revokeByClientId(clientId: string): Promise<void> {
    if (!isValidKey(clientId)) return;
    const ids = this.#byClient.get(clientId);
    if (!ids) return;
    for (const id of [...ids]) await this.destroy(id);
    this.#byClient.delete(clientId);
  }

  async insertOnce(id: string, payload: AdapterPayload, expiresIn: number): Promise<boolean> {
    checkKey('id', id);
    if (live(this.#entries.get(id))) return false;
    // No await between the check and the set: atomic on the event loop.
    this.#put(id, payload, expiresIn);
    return true;
  }

  async idsByAccount(accountId: string, after: string | undefined, limit: number): Promise<AccountPage> {
    if (!isAccountLookup(accountId) || limit < 1) return { ids: [] };
    const t = now();
    const ids = [...this.#entries.entries()]
      .filter(([id, e]) => live(e, t) && e.payload.accountId === accountId && (after === undefined || id > after))
      .map(([id]) => id)
      .sort()
      .slice(0, Math.max(0, limit));
    return ids.length === limit ? { ids, next: ids.at(-1) } : { ids };
  }

  async list(after: string | undefined, limit: number): Promise<Array<{ id: string; payload: AdapterPayload }>> {
    const t = now();
    return [...this.#entries.entries()]
      .filter(([id, e]) => live(e, t) && (after === undefined || id > after))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, Math.max(0, limit))
      .map(([id, e]) => ({ id, payload: jsonCopy(e.payload) }));
  }

  /** Drops expired entries so memory does not grow with dead tokens. */
  sweep(t = now()): void {
    for (const [id, e] of this.#entries) {
      if (!live(e, t)) {
        this.#unindex(id);
        this.#entries.delete(id);
      }
    }
  }

  #unindex(id: string): void {
    const old = this.#entries.get(id);
    if (!old) return;
    const { grantId, uid, userCode } = old.payload;
    if (typeof grantId === 'string') {
      const set = this.#byGrant.get(grantId);
      set?.delete(id);
      if (set?.size === 0) this.#byGrant.delete(grantId);
    }
    const { clientId } = old.payload;
    if (typeof clientId === 'string') {
      const set = this.#byClient.get(clientId);
      set?.delete(id);
      if (set?.size === 0) this.#byClient.delete(clientId);
    }
    if (typeof uid === 'string' && this.#byUid.get(uid) === id) this.#byUid.delete(uid);
    if (typeof userCode === 'string' && this.#byUserCode.get(userCode) === id) this.#byUserCode.delete(userCode);
  }
}

/** Expiring entries in memory: the denylist of the embedded store. */
class MemoryExpiringSet implements RevokedTokenStore {
  readonly #entries = new Map<string, number>();

  async revoke(jti: string, exp: number): Promise<void> {
    checkKey('jti', jti);
    this.#entries.set(jti, Math.max(exp * 1000, this.#entries.get(jti) ?? 0));
  }

  async isRevoked(jti: string): Promise<boolean> {
    if (!isValidKey(jti)) return false;
    const until = this.#entries.get(jti);
    return until !== undefined && until > now();
  }

  async anyRevoked(ids: readonly string[]): Promise<boolean> {
    checkLookup(ids);
    const t = now();
    return ids.some((id) => isValidKey(id) && (this.#entries.get(id) ?? 0) > t);
  }

  sweep(t = now()): void {
    for (const [k, until] of this.#entries) if (until <= t) this.#entries.delete(k);
  }
}

/** The nonces of the embedded store, with their bindings, consumed flags and attempt counters. */
class MemoryNonces implements NonceStore {
  readonly #nonces = new Map<string, { until: number; binding: string; consumed: boolean }>();
  readonly #attempts = new Map<string, { until: number; taken: number }>();

  async issue(nonce: string, ttlSeconds: number, binding: string): Promise<void> {
    checkKey('nonce', nonce);
    checkKey('nonce binding', binding);
    this.#nonces.set(nonce, { until: now() + ttlSeconds * 1000, binding, consumed: false });
  }

  async boundTo(nonce: string): Promise<string | undefined> {
    if (!isValidKey(nonce)) return undefined;
    const entry = this.#nonces.get(nonce);
    return entry && entry.until > now() ? entry.binding : undefined;
  }

  async consume(nonce: string): Promise<boolean> {
    if (!isValidKey(nonce)) return false;
    const entry = this.#nonces.get(nonce);
    if (!entry || entry.until <= now() || entry.consumed) return false;
    entry.consumed = true;
    return true;
  }

  async claim(key: string, value: string, ttlSeconds: number): Promise<string> {
    checkKey('claim key', key);
    checkKey('claim value', value);
    const held = this.#nonces.get(key);
    if (held && held.until > now()) return held.binding;
    this.#nonces.set(key, { until: now() + ttlSeconds * 1000, binding: value, consumed: false });
    return value;
  }

  async release(key: string, value: string): Promise<void> {
    checkKey('claim key', key);
    checkKey('claim value', value);
    if (this.#nonces.get(key)?.binding === value) this.#nonces.delete(key);
  }

  async takeAttempt(key: string, limit: number, ttlSeconds: number): Promise<boolean> {
    checkKey('attempt key', key);
    const t = now();
    // A counter whose window has passed (not yet swept) starts over, as a swept one would (and as on SQLite).
    const held = this.#attempts.get(key);
    const entry = held && held.until > t ? held : { until: t + ttlSeconds * 1000, taken: 0 };
    this.#attempts.set(key, entry);
    if (entry.taken >= limit) return false;
    entry.taken += 1;
    return true;
  }

  sweep(t = now()): void {
    for (const [k, e] of this.#nonces) if (e.until <= t) this.#nonces.delete(k);
    for (const [k, e] of this.#attempts) if (e.until <= t) this.#attempts.delete(k);
  }
}

export interface EmbeddedStorageOptions {
  /** Where signing keys are kept so they survive restarts. */
  dataDir: string;
  sweepIntervalMs?: number;
}

/** The embedded default: models in process memory, signing keys in files under the data directory. */
export class EmbeddedStorage implements Storage {
  readonly kind = 'embedded' as const;
  readonly keys: KeyStore;
  readonly revokedTokens: RevokedTokenStore;
  readonly nonces: NonceStore;
  readonly audit: FileAuditStore;
  readonly #expiring: Array<{ sweep(t: number): void }>;
  readonly #models = new Map<ModelName, MemoryModelStore>();
  readonly #sweepIntervalMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: EmbeddedStorageOptions) {
    this.keys = new FileKeyStore(options.dataDir);
    this.audit = new FileAuditStore(options.dataDir);
    const revoked = new MemoryExpiringSet();
    const nonces = new MemoryNonces();
    this.revokedTokens = revoked;
    this.nonces = nonces;
    this.#expiring = [revoked, nonces];
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
    for (const name of MODEL_NAMES) this.#models.set(name, new MemoryModelStore());
  }

  async init(): Promise<void> {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.sweep(), this.#sweepIntervalMs);
    this.#timer.unref();
  }

  model(name: ModelName): ModelStore {
    const store = this.#models.get(name);
    if (!store) throw new Error(`unknown model ${name}`);
    return store;
  }

  sweep(): void {
    const t = now();
    for (const store of this.#models.values()) store.sweep(t);
    for (const set of this.#expiring) set.sweep(t);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.audit.close();
  }
}
