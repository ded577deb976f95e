import { MongoClient, MongoServerError } from 'mongodb';
import type { Collection, Db, Filter } from 'mongodb';

import { StorageUnavailableError } from './errors.js';
import type { AdapterPayload, KeyStore, ModelName, ModelStore, Storage, StoredKey } from './types.js';
import { MODEL_NAMES } from './types.js';
import { checkKey, isValidKey } from './validate.js';

/** How a record sits in MongoDB. The payload is kept as JSON text: its maps are keyed by URLs (which hold `.`). */
interface RecordDoc {
  _id: string;
  payload: string;
  expiresAt?: Date;
  grantId?: string;
  uid?: string;
  userCode?: string;
  consumed?: number;
}

/** One marker per consumed record; its unique `_id` makes consume atomic even where updates are not. */
interface ConsumedDoc {
  _id: string;
  at: Date;
  expiresAt: Date;
}

interface KeyDoc extends Omit<StoredKey, 'kid'> {
  _id: string;
}

const NOT_IMPLEMENTED = 238;
const DUPLICATE_KEY = 11000;
const collectionName = (model: ModelName) => `oidc_${model}`;
const CONSUMED = 'oidc_consumed';
const KEYS = 'signing_keys';

function unavailable(op: string, err: unknown): StorageUnavailableError {
  if (err instanceof StorageUnavailableError) return err;
  const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return new StorageUnavailableError(`MongoDB ${op} failed (${reason})`, { cause: err });
}

/** Runs a driver call; every driver failure becomes StorageUnavailableError so callers fail closed. */
async function guard<T>(op: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw unavailable(op, err);
  }
}

const notExpired = (): Filter<RecordDoc> => ({ $or: [{ expiresAt: { $gt: new Date() } }, { expiresAt: { $exists: false } }] });

function toPayload(doc: RecordDoc | null): AdapterPayload | undefined {
  if (!doc) return undefined;
  const payload = JSON.parse(doc.payload) as AdapterPayload;
  if (doc.consumed !== undefined) payload.consumed = doc.consumed;
  return payload;
}

class MongoModelStore implements ModelStore {
  constructor(
    private readonly model: ModelName,
    private readonly records: Collection<RecordDoc>,
    private readonly consumed: Collection<ConsumedDoc>,
  ) {}

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    checkKey('id', id);
    const doc: RecordDoc = { _id: id, payload: JSON.stringify(payload) };
    if (expiresIn) doc.expiresAt = new Date(Date.now() + expiresIn * 1000);
    if (payload.grantId !== undefined) doc.grantId = checkKey('grantId', payload.grantId);
    if (payload.uid !== undefined) doc.uid = checkKey('uid', payload.uid);
    if (payload.userCode !== undefined) doc.userCode = checkKey('userCode', payload.userCode);
    if (typeof payload.consumed === 'number') doc.consumed = payload.consumed;
    await guard('upsert', () => this.records.replaceOne({ _id: id }, doc, { upsert: true }));
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(id)) return undefined;
    return toPayload(await guard('find', () => this.records.findOne({ _id: id, ...notExpired() })));
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(uid)) return undefined;
    return toPayload(await guard('findByUid', () => this.records.findOne({ uid, ...notExpired() })));
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(userCode)) return undefined;
    return toPayload(await guard('findByUserCode', () => this.records.findOne({ userCode, ...notExpired() })));
  }

  async consume(id: string): Promise<boolean> {
    if (!isValidKey(id)) return false;
    const doc = await guard('consume', () => this.records.findOne({ _id: id, ...notExpired() }));
    if (!doc || doc.consumed !== undefined) return false;
    const at = new Date();
    try {
      await this.consumed.insertOne({
        _id: `${this.model}:${id}`,
        at,
        expiresAt: doc.expiresAt ?? new Date(at.getTime() + 86_400_000),
      });
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return false;
      throw unavailable('consume', err);
    }
    // Only the single winner of the insert gets here, so this plain update races with no one.
    await guard('consume', () => this.records.updateOne({ _id: id }, { $set: { consumed: Math.floor(at.getTime() / 1000) } }));
    return true;
  }

  async destroy(id: string): Promise<void> {
    if (!isValidKey(id)) return;
    await guard('destroy', () => this.records.deleteOne({ _id: id }));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (!isValidKey(grantId)) return;
    await guard('revokeByGrantId', () => this.records.deleteMany({ grantId }));
  }
}

class MongoKeyStore implements KeyStore {
  constructor(private readonly keys: Collection<KeyDoc>) {}

  async list(): Promise<StoredKey[]> {
    const docs = await guard('keys.list', () => this.keys.find({}).sort({ seq: 1 }).toArray());
    return docs.map(({ _id, ...rest }) => ({ kid: _id, ...rest }));
  }

  async insert(key: StoredKey): Promise<boolean> {
    const { kid, ...rest } = key;
    try {
      await this.keys.insertOne({ _id: kid, ...rest });
      return true;
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return false;
      throw unavailable('keys.insert', err);
    }
  }
}

export interface MongoStorageOptions {
  uri: string;
  /** Database name. */
  dbName: string;
  /** Bound on how long any storage call may wait for the server (server selection, connect, socket). */
  timeoutMs?: number;
  sweepIntervalMs?: number;
}

/** Index layout per collection: `expiresAt` everywhere (TTL where supported), plus the lookup fields a model uses. */
const LOOKUP_INDEXES: Partial<Record<ModelName, Array<keyof RecordDoc>>> = {
  Session: ['uid'],
  DeviceCode: ['userCode', 'grantId'],
  AccessToken: ['grantId'],
  AuthorizationCode: ['grantId'],
  RefreshToken: ['grantId'],
  BackchannelAuthenticationRequest: ['grantId'],
  Grant: ['grantId'],
};

export class MongoStorage implements Storage {
  readonly kind = 'mongodb' as const;
  readonly keys: KeyStore;
  readonly client: MongoClient;
  readonly db: Db;
  readonly #models = new Map<ModelName, MongoModelStore>();
  readonly #sweepIntervalMs: number;
  readonly #timeoutMs: number;
  #ttlSupported: boolean | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: MongoStorageOptions) {
    this.#timeoutMs = options.timeoutMs ?? 2000;
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
    this.client = new MongoClient(options.uri, {
      serverSelectionTimeoutMS: this.#timeoutMs,
      connectTimeoutMS: this.#timeoutMs,
      socketTimeoutMS: this.#timeoutMs * 5,
      waitQueueTimeoutMS: this.#timeoutMs,
      appName: 'agentauth',
    });
    this.db = this.client.db(options.dbName);
    const consumed = this.db.collection<ConsumedDoc>(CONSUMED);
    for (const name of MODEL_NAMES) {
      this.#models.set(name, new MongoModelStore(name, this.db.collection<RecordDoc>(collectionName(name)), consumed));
    }
    this.keys = new MongoKeyStore(this.db.collection<KeyDoc>(KEYS));
  }

  /** Whether the server honoured TTL indexes at init (false on FerretDB v1: expiry is then swept). */
  get ttlSupported(): boolean | undefined {
    return this.#ttlSupported;
  }

  async init(): Promise<void> {
    await guard('connect', () => this.client.connect());
    const expiring = [...MODEL_NAMES.map(collectionName), CONSUMED];
    for (const name of expiring) await this.#expiryIndex(name);
    for (const [model, fields] of Object.entries(LOOKUP_INDEXES) as Array<[ModelName, string[]]>) {
      for (const field of fields) {
        await guard('createIndex', () => this.db.collection(collectionName(model)).createIndex({ [field]: 1 }, { name: `${field}_1` }));
      }
    }
    await guard('createIndex', () => this.db.collection(KEYS).createIndex({ seq: 1 }, { name: 'seq_1', unique: true }));
    if (this.#ttlSupported === false && !this.#timer) {
      this.#timer = setInterval(() => void this.sweep().catch(() => undefined), this.#sweepIntervalMs);
      this.#timer.unref();
    }
  }

  async #expiryIndex(collection: string): Promise<void> {
    const col = this.db.collection(collection);
    if (this.#ttlSupported !== false) {
      try {
        await col.createIndex({ expiresAt: 1 }, { name: 'expiresAt_1', expireAfterSeconds: 0 });
        this.#ttlSupported = true;
        return;
      } catch (err) {
        if (!(err instanceof MongoServerError && err.code === NOT_IMPLEMENTED)) throw unavailable('createIndex', err);
        this.#ttlSupported = false;
      }
    }
    await guard('createIndex', () => col.createIndex({ expiresAt: 1 }, { name: 'expiresAt_1' }));
  }

  /** Deletes expired records; reads never return them anyway, this only reclaims space. */
  async sweep(): Promise<number> {
    const cutoff = new Date();
    let deleted = 0;
    for (const name of [...MODEL_NAMES.map(collectionName), CONSUMED]) {
      const res = await guard('sweep', () => this.db.collection(name).deleteMany({ expiresAt: { $lte: cutoff } }));
      deleted += res.deletedCount;
    }
    return deleted;
  }

  model(name: ModelName): ModelStore {
    const store = this.#models.get(name);
    if (!store) throw new Error(`unknown model ${name}`);
    return store;
  }

  async ping(): Promise<void> {
    await guard('ping', () => this.db.command({ ping: 1 }, { timeoutMS: this.#timeoutMs }));
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.client.close();
  }
}
