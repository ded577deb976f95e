import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hash, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

import type { AdapterPayload } from 'oidc-provider';

import { deriveKey } from '../keys/seal.js';
import type { AccountPage, Consumption, ModelName, ModelStore, Storage } from './types.js';

/**
 * The models whose record id is the credential itself: an opaque access token, a refresh token, an authorization
 * code, a registration or initial access token is its own id (oidc-provider's `jti`), so a store keyed by it hands
 * every live credential to whoever reads the database or a backup.
 */
export const CREDENTIAL_MODELS: ReadonlySet<ModelName> = new Set<ModelName>([
  'AccessToken', 'ClientCredentials', 'RefreshToken', 'AuthorizationCode', 'RegistrationAccessToken', 'InitialAccessToken',
  'DeviceCode', 'BackchannelAuthenticationRequest',
]);

/** Stored keys this module wrote start with this; oidc-provider's ids (base64url) never contain a dot. */
const KEY_PREFIX = 'h1.';
/**
 * Whether an id could name a record stored before ids were sealed (under the id itself). A stored key never can:
 * whoever read one from the database would otherwise present it as the credential.
 */
const unsealable = (id: string): boolean => !id.startsWith(KEY_PREFIX);
/** No older place to look. */
const NONE: readonly string[] = [];
/** A refresh token's, registration access token's or device code's own value, sealed, in its payload: what a reuse within the grace (or a retry after a 503) gets back as the successor, and what a device code found by its user code gets back as its `jti`. */
const SEALED_VALUE = 'agentauth_sealed_value';
/** What a device code's sealed value is bound to: the user code it is found by. */
const userCodeBinding = (userCode: string): string => `user-code\0${userCode}`;
/** An initial access token's public fingerprint, in its payload: what `clients iat list` shows and `revoke` takes. */
export const FINGERPRINT_FIELD = 'agentauth_fingerprint';

/** The fingerprint of a credential: the first 22 characters of the base64url SHA-256 of its value (not a credential). */
export const credentialFingerprint = (value: string): string => hash('sha256', value, 'base64url').slice(0, 22);

/**
 * A credential model's store that keeps each record under HMAC-SHA256(id) with a key derived from the KEK, never under
 * the id itself, and keeps no copy of the id in the payload (`jti` is dropped when stored and put back when read).
 * A copy of the database, or a backup, then holds no token, code or registration access token that works: finding a
 * record needs the credential, and forging one needs the KEK. One value has to come back out: the successor a
 * rotated refresh token or registration access token records, which a reuse within the grace, or a retry of a
 * rotation answered 503, hands back (server/grants/refresh-grace.ts, server/http/registration-steps.ts). Those tokens
 * therefore carry their own value sealed (AES-256-GCM under another KEK-derived key, bound to its stored key).
 *
 * Records stored before this (under the id itself) are still found, used up and destroyed under it while
 * `acceptUnsealed` holds, so an upgrade loses nothing; they go as they expire or are used (a registration access token
 * is replaced at its next use). While it holds, whoever can write to the database can also plant a record under an id
 * of their choosing and present that id: `storage.unsealedCredentials: refuse` closes that once the old ones are gone.
 */
class SealedIdModelStore implements ModelStore {
  constructor(
    private readonly inner: ModelStore,
    private readonly name: ModelName,
    private readonly ids: KeyObject,
    private readonly values: Buffer,
    private readonly acceptUnsealed: boolean,
    /** The keys of the KEK being rotated away from (AGENTAUTH_KEK_FALLBACK): records stored under them are still found. */
    private readonly fallback: CredentialKeys | undefined,
  ) {}

  /** Whether `id` is looked up under itself as well: a record stored before ids were sealed, while those are accepted. */
  #legacy(id: string): boolean {
    return this.acceptUnsealed && unsealable(id);
  }

  /** The key a record with this id is stored under. */
  keyOf(id: string): string {
    return storedKey(this.ids, this.name, id);
  }

  /**
   * Where a record with this id may have been stored before this process wrote it: under the fallback KEK's key
   * (during a rotation of the KEK), and under the id itself (before ids were sealed). Never where it is written.
   */
  #older(id: string): readonly string[] {
    const legacy = this.#legacy(id);
    if (!this.fallback) return legacy ? [id] : NONE; // no rotation of the KEK: at most the id itself, as before
    const keys = [storedKey(this.fallback.ids, this.name, id)];
    if (legacy) keys.push(id);
    return keys;
  }

  #seal(value: string, key: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.values, iv);
    cipher.setAAD(Buffer.from(key));
    const ciphertext = Buffer.concat([cipher.update(value, 'utf8'), cipher.final()]);
    return [iv, ciphertext, cipher.getAuthTag()].map((b) => b.toString('base64url')).join('.');
  }

  #unseal(sealed: unknown, key: string): string | undefined {
    return this.#unsealWith(this.values, sealed, key) ?? (this.fallback ? this.#unsealWith(this.fallback.values, sealed, key) : undefined);
  }

  #unsealWith(values: Buffer, sealed: unknown, key: string): string | undefined {
    if (typeof sealed !== 'string') return undefined;
    const [iv, ciphertext, tag] = sealed.split('.').map((p) => Buffer.from(p, 'base64url'));
    if (!iv || !ciphertext || !tag) return undefined;
    try {
      const decipher = createDecipheriv('aes-256-gcm', values, iv);
      decipher.setAAD(Buffer.from(key));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
    } catch {
      return undefined; // altered, or sealed under another KEK: the value is not handed out
    }
  }

  /** The payload as stored: without the id, and for a refresh or registration access token with its value sealed. */
  #stored(id: string, key: string, payload: AdapterPayload): AdapterPayload {
    const { jti: _jti, ...rest } = payload as AdapterPayload & { jti?: unknown };
    // A rotated refresh token's or registration access token's successor is handed back to a retry (consumption()).
    if (this.name === 'RefreshToken' || this.name === 'RegistrationAccessToken') return { ...rest, [SEALED_VALUE]: this.#seal(id, key) };
    // A device code is also looked up by its user code, which gives the payload and not the stored key: its value is
    // sealed to the user code instead, and findByUserCode checks it against the record stored under that value.
    if (this.name === 'DeviceCode' && typeof payload.userCode === 'string') return { ...rest, [SEALED_VALUE]: this.#seal(id, userCodeBinding(payload.userCode)) };
    if (this.name === 'InitialAccessToken') return { ...rest, [FINGERPRINT_FIELD]: credentialFingerprint(id) };
    return rest;
  }

  /** The payload as oidc-provider wrote it: the id back in place, the sealed value out. */
  #read(id: string, payload: AdapterPayload | undefined): AdapterPayload | undefined {
    if (!payload) return undefined;
    const { [SEALED_VALUE]: _sealed, ...rest } = payload as AdapterPayload & Record<string, unknown>;
    return { ...rest, jti: id } as AdapterPayload;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    const key = this.keyOf(id);
    await this.inner.upsert(key, this.#stored(id, key, payload), expiresIn);
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const found = await this.inner.find(this.keyOf(id));
    if (found) return this.#read(id, found);
    for (const key of this.#older(id)) {
      const older = await this.inner.find(key);
      // Under the fallback KEK's key: as stored under the KEK's. Under the id itself (before ids were sealed): as is.
      if (older) return key === id ? older : this.#read(id, older);
    }
    return undefined;
  }

  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.inner.findByUid(uid);
  }

  /**
   * A device code by the user code a person typed, with its `jti` back in place (oidc-provider's DeviceCode needs it to
   * be consumed or saved again). The value comes from its sealed copy, and counts only if the record stored under it
   * carries the same user code: a sealed value moved from another record is not handed out.
   */
  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    const payload = await this.inner.findByUserCode(userCode);
    if (!payload) return undefined;
    const value = this.#unseal((payload as AdapterPayload & Record<string, unknown>)[SEALED_VALUE], userCodeBinding(userCode));
    if (value === undefined) return this.acceptUnsealed && typeof payload.jti === 'string' && unsealable(payload.jti) ? payload : undefined; // stored before ids were sealed
    const found = await this.find(value);
    return found?.userCode === userCode ? found : undefined;
  }

  /** `op` under the key the record is written under, then under each older one, until one answers true. */
  async #firstOf(id: string, op: (key: string) => Promise<boolean>): Promise<boolean> {
    if (await op(this.keyOf(id))) return true;
    for (const key of this.#older(id)) if (await op(key)) return true;
    return false;
  }

  consume(id: string): Promise<boolean> {
    return this.#firstOf(id, (key) => this.inner.consume(key));
  }

  setSuccessor(id: string, successor: string): Promise<boolean> {
    const recorded = this.keyOf(successor);
    return this.#firstOf(id, (key) => this.inner.setSuccessor(key, recorded));
  }

  rotate(consumedId: string, id: string, payload: AdapterPayload, expiresIn: number | undefined, recordSuccessor: boolean): Promise<boolean> {
    const key = this.keyOf(id);
    const stored = this.#stored(id, key, payload);
    return this.#firstOf(consumedId, (consumed) => this.inner.rotate(consumed, key, stored, expiresIn, recordSuccessor));
  }

  /** The successor comes back as the token it is (unsealed from its own record), or not at all. */
  async consumption(id: string): Promise<Consumption | undefined> {
    let mark = await this.inner.consumption(this.keyOf(id));
    for (const key of this.#older(id)) mark ??= await this.inner.consumption(key);
    if (!mark?.successor?.startsWith(KEY_PREFIX)) return mark; // none recorded yet, or recorded before ids were sealed
    const value = this.#unseal((await this.inner.find(mark.successor))?.[SEALED_VALUE], mark.successor);
    return value === undefined ? { at: mark.at } : { at: mark.at, successor: value };
  }

  async destroy(id: string): Promise<void> {
    await this.inner.destroy(this.keyOf(id));
    for (const key of this.#older(id)) await this.inner.destroy(key);
  }

  /** Destroys the record stored under `key`, a key as `list` gives it (administration revoking a listed record). */
  destroyStored(key: string): Promise<void> {
    return this.inner.destroy(key);
  }

  revokeByGrantId(grantId: string): Promise<void> {
    return this.inner.revokeByGrantId(grantId);
  }

  revokeByClientId(clientId: string): Promise<void> {
    return this.inner.revokeByClientId(clientId);
  }

  /** Stored keys, as `list` gives them. */
  idsByAccount(accountId: string, after: string | undefined, limit: number): Promise<AccountPage> {
    return this.inner.idsByAccount(accountId, after, limit);
  }

  insertOnce(id: string, payload: AdapterPayload, expiresIn: number): Promise<boolean> {
    const key = this.keyOf(id);
    return this.inner.insertOnce(key, this.#stored(id, key, payload), expiresIn);
  }

  /** Records under their stored keys (what administration lists and fingerprints), payloads without the sealed value. */
  async list(after: string | undefined, limit: number): Promise<Array<{ id: string; payload: AdapterPayload }>> {
    return (await this.inner.list(after, limit)).map(({ id, payload }) => {
      const { [SEALED_VALUE]: _sealed, ...rest } = payload as AdapterPayload & Record<string, unknown>;
      return { id, payload: rest as AdapterPayload };
    });
  }
}

/** The two keys a KEK gives this module: one keys the stored ids, the other seals the values kept in payloads. */
interface CredentialKeys {
  ids: KeyObject;
  values: Buffer;
}

function credentialKeys(kek: Buffer): CredentialKeys {
  return { ids: createSecretKey(deriveKey(kek, 'credential-ids')), values: deriveKey(kek, 'credential-values') };
}

const storedKey = (ids: KeyObject, name: ModelName, id: string): string => KEY_PREFIX + createHmac('sha256', ids).update(`${name}\0${id}`).digest('base64url');

/** The stored key of a credential record, when `store` keeps them sealed (what `list` shows for it). */
export function storedKeyOf(store: ModelStore, id: string): string {
  return store instanceof SealedIdModelStore ? store.keyOf(id) : id;
}

/** Destroys a record by the key `list` gave for it (its stored key when `store` keeps them sealed). */
export function destroyListed(store: ModelStore, listedId: string): Promise<void> {
  return store instanceof SealedIdModelStore ? store.destroyStored(listedId) : store.destroy(listedId);
}

/**
 * The same storage, with the credential models' records kept under keyed hashes of their ids (see SealedIdModelStore).
 * Every other store, and what each store does, is unchanged.
 */
export function sealCredentialIds(storage: Storage, kek: Buffer, { acceptUnsealed, fallback }: { acceptUnsealed: boolean; fallback?: Buffer | undefined }): Storage {
  const { ids, values } = credentialKeys(kek);
  const older = fallback ? credentialKeys(fallback) : undefined;
  const models = new Map<ModelName, ModelStore>();
  const model = (name: ModelName): ModelStore => {
    if (!CREDENTIAL_MODELS.has(name)) return storage.model(name);
    let store = models.get(name);
    if (!store) {
      store = new SealedIdModelStore(storage.model(name), name, ids, values, acceptUnsealed, older);
      models.set(name, store);
    }
    return store;
  };
  return new Proxy(storage, {
    get(target, prop) {
      if (prop === 'model') return model;
      const value = Reflect.get(target, prop) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
