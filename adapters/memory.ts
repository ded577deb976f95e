import type { AdapterPayload, KeyStore, ModelName, ModelStore, Storage } from './types.js';
import { MODEL_NAMES } from './types.js';
import { checkKey, isValidKey } from './validate.js';
import { FileKeyStore } from './file-keys.js';

interface Entry {
  payload: AdapterPayload;
  /** epoch ms; undefined = no expiry */
  expiresAt: number | undefined;
}

const now = () => Date.now();
const live = (e: Entry | undefined, t = now()): e is Entry => e !== undefined && (e.expiresAt === undefined || e.expiresAt > t);

/**
 * The embedded store's model storage: plain maps in this process, no entry limit, with the same semantics as the
 * MongoDB store (copies in and out, expiry on read plus a sweep, atomic consume). Nothing survives a restart.
 */
class MemoryModelStore implements ModelStore {
  readonly #entries = new Map<string, Entry>();
  readonly #byGrant = new Map<string, Set<string>>();
  readonly #byUid = new Map<string, string>();
  readonly #byUserCode = new Map<string, string>();

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    checkKey('id', id);
    if (payload.grantId !== undefined) checkKey('grantId', payload.grantId);
    if (payload.uid !== undefined) checkKey('uid', payload.uid);
    if (payload.userCode !== undefined) checkKey('userCode', payload.userCode);
    this.#unindex(id);
    const copy = structuredClone(payload);
    this.#entries.set(id, { payload: copy, expiresAt: expiresIn ? now() + expiresIn * 1000 : undefined });
    if (typeof copy.grantId === 'string') {
      let set = this.#byGrant.get(copy.grantId);
      if (!set) this.#byGrant.set(copy.grantId, (set = new Set()));
      set.add(id);
    }
    if (typeof copy.uid === 'string') this.#byUid.set(copy.uid, id);
    if (typeof copy.userCode === 'string') this.#byUserCode.set(copy.userCode, id);
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(id)) return undefined;
    const e = this.#entries.get(id);
    return live(e) ? structuredClone(e.payload) : undefined;
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
    if (typeof uid === 'string' && this.#byUid.get(uid) === id) this.#byUid.delete(uid);
    if (typeof userCode === 'string' && this.#byUserCode.get(userCode) === id) this.#byUserCode.delete(userCode);
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
  readonly #models = new Map<ModelName, MemoryModelStore>();
  readonly #sweepIntervalMs: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: EmbeddedStorageOptions) {
    this.keys = new FileKeyStore(options.dataDir);
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
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
