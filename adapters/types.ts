import type { AdapterPayload } from 'oidc-provider';
import { AuditCheckpointError } from './errors.js';

export type { AdapterPayload };

/** The oidc-provider model names agentauth persists (one store each). */
export const MODEL_NAMES = [
  'Session', 'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'ClientCredentials', 'Client',
  'InitialAccessToken', 'RegistrationAccessToken', 'Interaction', 'ReplayDetection', 'PushedAuthorizationRequest',
  'Grant', 'BackchannelAuthenticationRequest', 'PreAuthorizedCode',
] as const;

export type ModelName = (typeof MODEL_NAMES)[number];

/** The models whose records are indexed by their payload's `accountId` (ModelStore.idsByAccount). */
export const ACCOUNT_INDEXED: ReadonlySet<ModelName> = new Set<ModelName>(['Grant', 'Session']);

/**
 * Storage for one oidc-provider model. Every method validates the values it is given before they reach a query
 * (see validate.ts); an invalid identifier finds nothing. Expired records are never returned.
 */
export interface ModelStore {
  upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void>;
  find(id: string): Promise<AdapterPayload | undefined>;
  findByUid(uid: string): Promise<AdapterPayload | undefined>;
  findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
  /**
   * Marks the record consumed. Atomic: of any number of concurrent calls for one id, exactly one returns true;
   * the rest (and any call for a missing, expired or already consumed record) return false.
   */
  consume(id: string): Promise<boolean>;
  /**
   * Records, once, the id of the record that replaced a consumed one (a rotated refresh token's successor). Atomic:
   * of concurrent calls for one id at most one returns true; a call for a missing, expired or unconsumed record, or
   * one whose successor is already recorded, returns false and changes nothing.
   */
  setSuccessor(id: string, successor: string): Promise<boolean>;
  /**
   * A rotation: consume `consumedId` and, only if this call consumed it, store `id` (as upsert would) and, with
   * `recordSuccessor`, record `id` as its successor (setSuccessor). True when this call consumed it; false (nothing
   * stored) otherwise, as consume. Single use is as atomic as consume's; on the embedded store the three writes are
   * also one commit. On MongoDB the successor is stored first and the consume's marker records it, so a rotation cut
   * between its writes leaves the token either unused or used with its successor recorded (a loser removes the
   * successor it stored).
   */
  rotate(consumedId: string, id: string, payload: AdapterPayload, expiresIn: number | undefined, recordSuccessor: boolean): Promise<boolean>;
  /**
   * When a live record was consumed (epoch seconds) and, if recorded, its successor; undefined when the record is
   * missing, expired or not consumed. Reads the store's own single-use mark, so it is current as soon as consume
   * has returned true to someone.
   */
  consumption(id: string): Promise<Consumption | undefined>;
  destroy(id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
  /** Removes every record whose payload names this client (grants, codes, tokens). */
  revokeByClientId(clientId: string): Promise<void>;
  /**
   * Stores the record only if no live record has this id. Atomic: of concurrent calls for one id exactly one
   * returns true. Used for replay detection (DPoP proof and client assertion `jti`s).
   */
  insertOnce(id: string, payload: AdapterPayload, expiresIn: number): Promise<boolean>;
  /**
   * A page of the ids of the live records whose payload's `accountId` is `accountId`, in ascending order, after `after`
   * (exclusive): one person's grants and sessions, for `agentauth subjects revoke`. `next` is where the following page
   * starts, undefined on the last page; a page may hold fewer than `limit` ids (even none) and not be the last. Looked
   * up through an index for Grant and Session (ACCOUNT_INDEXED); any other model is read through. Any string may be
   * asked for; one that is no account finds nothing.
   */
  idsByAccount(accountId: string, after: string | undefined, limit: number): Promise<AccountPage>;
  /** Live records in ascending id order, ids after `after` (exclusive), at most `limit`: for administration (clients, IATs). */
  list(after: string | undefined, limit: number): Promise<Array<{ id: string; payload: AdapterPayload }>>;
}

/** A page of ModelStore.idsByAccount. */
export interface AccountPage {
  ids: string[];
  next?: string;
}

/** A consumed record's single-use mark: when it was used up, and what replaced it. */
export interface Consumption {
  at: number;
  successor?: string;
}

/** Denylist of revoked JWT access tokens, by `jti`, kept until the token's own expiry. */
export interface RevokedTokenStore {
  /** Idempotent. `exp` is the token's expiry (epoch seconds); the entry is kept until then. */
  revoke(jti: string, exp: number): Promise<void>;
  isRevoked(jti: string): Promise<boolean>;
  /**
   * True when any of these ids is on the list (one lookup for a token's own jti and the marks of its lineage, see
   * server/revocation-lineage.ts). Invalid ids match nothing; at most MAX_REVOKED_LOOKUP ids.
   */
  anyRevoked(ids: readonly string[]): Promise<boolean>;
}

/** Most ids one anyRevoked call takes: a token's jti, its grant, and three marks per ancestor at the deepest chain. */
export const MAX_REVOKED_LOOKUP = 64;

/**
 * Single-use nonces (EIP-4361 sign-in): issued with a TTL for one purpose (`binding`, e.g. `client:<client_id>`),
 * consumed atomically once; plus bounded attempt counters for the sign-ins that use them.
 */
export interface NonceStore {
  issue(nonce: string, ttlSeconds: number, binding: string): Promise<void>;
  /** What an issued, unexpired nonce is bound to (whether or not it was consumed); undefined for any other value. */
  boundTo(nonce: string): Promise<string | undefined>;
  /** True for exactly one caller, and only while the nonce is issued and unexpired. */
  consume(nonce: string): Promise<boolean>;
  /**
   * Takes one of `limit` attempt slots for `key`, kept `ttlSeconds`. Atomic: of any number of calls for one key
   * (concurrent or not), exactly min(calls, limit) return true while the slots live; the rest return false.
   */
  takeAttempt(key: string, limit: number, ttlSeconds: number): Promise<boolean>;
  /**
   * Records `value` under `key` for `ttlSeconds` unless a live value is already there, and returns the value that
   * holds: `value` itself for exactly one of any number of calls for one key (concurrent or not, on every instance),
   * the value of that one for all the others. A decision made once, whose losers learn what was decided. Keys share
   * the nonces' namespace: use a prefix (`consent:`) that no nonce has.
   */
  claim(key: string, value: string, ttlSeconds: number): Promise<string>;
  /**
   * Withdraws a claim while it still holds `value` (a decision that could not be carried out), so that the key can be
   * claimed again; a claim holding any other value is left as it is. Atomic: a compare-and-delete in the store.
   */
  release(key: string, value: string): Promise<void>;
}

/** A signing key as persisted: the public JWK in clear, the private JWK sealed under the key-encryption key. */
export interface StoredKey {
  kid: string;
  /** Ordering and the single-writer guard: inserting a key whose seq is taken fails. */
  seq: number;
  alg: 'ES256' | 'EdDSA';
  /** Legacy marker from the first releases; states are derived from KeyTransitions (keys/lifecycle.ts). */
  state?: 'active';
  createdAt: string;
  publicJwk: Record<string, string>;
  sealed: SealedSecret;
  /** Integrity MAC under a KEK-derived key (keys/integrity.ts); absent only in stores written before it existed. */
  mac?: string;
  /**
   * Set by a store only, never written: the stored record could not be read back (not JSON), and this says why. The
   * integrity check refuses such a key by its kid, as any altered record.
   */
  unreadable?: string;
}

export interface SealedSecret {
  /** Which key-encryption key sealed it (a fingerprint, not the key). */
  kekId: string;
  iv: string;
  ciphertext: string;
  tag: string;
}

/** A scheduled change of a key's state. Immutable; one per (kid, type), so writing one twice changes nothing. */
export interface KeyTransition {
  kid: string;
  /** `withdraw`: taken out of JWKS at once, its signatures no longer trusted (keys/lifecycle.ts). */
  type: 'activate' | 'retire' | 'withdraw';
  /** ISO time from which the transition is in effect (may be in the future: a scheduled activation). */
  at: string;
  /** When it was recorded, and by what (CLI, automatic rotation). */
  recordedAt: string;
  reason?: string;
  /** Integrity MAC under a KEK-derived key (keys/integrity.ts); absent only in stores written before it existed. */
  mac?: string;
  /** As StoredKey.unreadable. */
  unreadable?: string;
}

export interface KeyStore {
  list(): Promise<StoredKey[]>;
  /** Inserts a key; false when another key already holds `seq` (someone else won the race). */
  insert(key: StoredKey): Promise<boolean>;
  transitions(): Promise<KeyTransition[]>;
  /** Records a transition; false when that (kid, type) was already recorded. */
  addTransition(t: KeyTransition): Promise<boolean>;
  /** Sets the MAC of a key stored without one (the one-time upgrade); a key that has a MAC keeps it. */
  addKeyMac(kid: string, mac: string): Promise<void>;
  /** Sets the MAC of a transition stored without one; a transition that has a MAC keeps it. */
  addTransitionMac(kid: string, type: KeyTransition['type'], mac: string): Promise<void>;
  /**
   * Replaces the stored record of `key.kid` (same seq) with `key`, MAC included, only while its stored MAC is
   * `expectedMac`: a key re-sealed under a new KEK (keys/kek-rotation.ts). False when the key is gone, has another seq
   * or another MAC (another process re-sealed it first: whichever write stands is a whole record of one writer).
   */
  replaceKey(key: StoredKey, expectedMac: string): Promise<boolean>;
  /** Replaces a transition's MAC only while it is `expectedMac` (a transition re-MACed under a new KEK). */
  replaceTransitionMac(kid: string, type: KeyTransition['type'], expectedMac: string, mac: string): Promise<boolean>;
}

/**
 * The audit log is a set of hash chains, one per writer (a server process, the CLI), so that writers never contend
 * for one head. `DEFAULT_AUDIT_CHAIN` ('') is the chain of records that name none: logs written before writers had
 * chains, and writers that are not given one.
 */
export const DEFAULT_AUDIT_CHAIN = '';
/** A writer's chain id: letters, digits and `.`, `_`, `:`, `#`, `-` (no `/`, which the MongoDB store uses). */
export const AUDIT_CHAIN_ID = /^[A-Za-z0-9._:#-]{1,100}$/;

/** One event of the hash-chained audit log. `hash` covers every other field (see server/audit/chain.ts). */
export interface AuditRecord {
  /** The writer's chain; absent for the default chain. seq and prev_hash are per chain. */
  chain?: string;
  seq: number;
  time: string;
  type: string;
  client_id?: string;
  sub?: string;
  details: Record<string, unknown>;
  prev_hash: string;
  hash: string;
  /**
   * Set by a store only, never written: the stored record could not be read back (not JSON, details not JSON), and
   * this says why. Such a record has only its `seq` (and chain): readers page past it, verification reports it.
   */
  undecodable?: string;
}

/** A stored record that could not be read back: its place, and why (see AuditRecord.undecodable). */
export function undecodableRecord(chain: string, seq: number, err: unknown): AuditRecord {
  return { ...(chain === DEFAULT_AUDIT_CHAIN ? {} : { chain }), seq, time: '', type: '', details: {}, prev_hash: '', hash: '', undecodable: err instanceof Error ? err.message : String(err) };
}

/** The chain a record belongs to ('' for the default chain). */
export const chainOf = (record: { chain?: unknown }): string => (typeof record.chain === 'string' ? record.chain : DEFAULT_AUDIT_CHAIN);

/**
 * Where a chain starts after `agentauth audit prune`: the last record removed (its seq, hash and time), so that the
 * records kept are verified as a chain continuing from it, and when that was done.
 */
export interface AuditCheckpoint {
  chain: string;
  seq: number;
  hash: string;
  time: string;
  pruned_at: string;
}

/** A stored checkpoint as agentauth wrote it; anything else is refused (AuditCheckpointError), not trusted. */
export function checkpointFrom(chain: string, seq: number, value: unknown): AuditCheckpoint {
  const c = (typeof value === 'object' && value !== null ? value : {}) as Partial<Record<keyof AuditCheckpoint, unknown>>;
  const ok =
    c.chain === chain && c.seq === seq && Number.isSafeInteger(seq) && seq >= 1 &&
    typeof c.hash === 'string' && /^[0-9a-f]{64}$/.test(c.hash) &&
    typeof c.time === 'string' && !Number.isNaN(Date.parse(c.time)) &&
    typeof c.pruned_at === 'string' && !Number.isNaN(Date.parse(c.pruned_at));
  if (!ok) throw new AuditCheckpointError(chain);
  return { chain, seq, hash: c.hash as string, time: c.time as string, pruned_at: c.pruned_at as string };
}

export interface AuditStore {
  /** The record with the highest seq in `chain` (default: the default chain), or undefined when it is empty. */
  head(chain?: string): Promise<AuditRecord | undefined>;
  /**
   * Inserts records of one chain with consecutive seqs, in order, each with a unique seq in that chain. Returns how
   * many were inserted from the start of the list before a seq was found taken (another writer of the same chain
   * got there first); 0 if the first was taken.
   */
  insertBatch(records: AuditRecord[]): Promise<number>;
  /** Records of `chain` (default: the default chain) with seq ≥ fromSeq, ascending, at most `limit`. */
  list(fromSeq: number, limit: number, chain?: string): Promise<AuditRecord[]>;
  /** Every chain that holds at least one record, sorted ('' for the default chain). */
  chains(): Promise<string[]>;
  /**
   * Where stored records lie that no reading of the log reaches (`list` from seq 1 of each chain `chains` names):
   * a seq below 1, a chain name agentauth never writes, a MongoDB `_id` of another shape. No agentauth writer puts a
   * record there, so each was edited or planted. At most `limit`, each named as the store names its place.
   */
  strays(limit: number): Promise<string[]>;
  /**
   * The revocation records that name one of `keys`, in any chain: `token.revoked` of that `details.jti`,
   * `grant.revoked` of that `details.grant_id`, `client.deleted` and `client.disabled` of that `client_id`. Found
   * through an index where the store has one (SQLite, MongoDB), not by reading the log; ordered by chain, then seq; at
   * most `limit`. Records no reading of the log reaches (strays) are left out, as are undecodable ones.
   */
  revocations(keys: RevocationKeys, limit: number): Promise<AuditRecord[]>;
  /** The checkpoint of every pruned chain, sorted by chain (none for a log never pruned). */
  checkpoints(): Promise<AuditCheckpoint[]>;
  /**
   * Records `checkpoint` as where its chain now starts (unless a checkpoint at a higher seq is already recorded:
   * atomically, so two prunes racing keep the higher), then removes the chain's records with seq at or below the
   * recorded checkpoint's, `batch` at a time, each batch its own write so that writers are never held up for long.
   * Returns how many records were removed. The caller checks that the head stays (seq below the head's).
   */
  prune(checkpoint: AuditCheckpoint, batch: number): Promise<number>;
}

/** What `AuditStore.revocations` looks for: a token's jti, its grant, its client, the person it is for. */
export interface RevocationKeys {
  jti?: string;
  grantId?: string;
  clientId?: string;
  /** A person's subject (`subjects revoke`): given only for a token of a person, never a client's own (its sub is its id). */
  sub?: string;
}

/** The audit record types that revoke something, and the field of each that names what (AuditStore.revocations). */
export const REVOCATION_RECORD_TYPES = ['token.revoked', 'grant.revoked', 'client.deleted', 'client.disabled', 'subject.revoked'] as const;

/**
 * What revocation record `record` names (its jti, grant id or client id, by its type), or undefined for any other
 * record. The stores index records by this value; `revocations` keeps only records whose value is one of the keys.
 */
export function revokedBy(record: Pick<AuditRecord, 'type' | 'client_id' | 'details' | 'sub'>): string | undefined {
  const value = record.type === 'token.revoked' ? record.details?.jti
    : record.type === 'grant.revoked' ? record.details?.grant_id
    : record.type === 'client.deleted' || record.type === 'client.disabled' ? record.client_id
    : record.type === 'subject.revoked' ? record.sub
    : undefined;
  return typeof value === 'string' ? value : undefined;
}

/** Whether `record` is a revocation record naming one of `keys` (see AuditStore.revocations). */
export function revokesOneOf(record: AuditRecord, keys: RevocationKeys): boolean {
  const value = revokedBy(record);
  if (value === undefined) return false;
  if (record.type === 'token.revoked') return value === keys.jti;
  if (record.type === 'grant.revoked') return value === keys.grantId;
  if (record.type === 'subject.revoked') return value === keys.sub;
  return value === keys.clientId;
}

/** The values `revocations` looks up: the keys given, each once. */
export const revocationLookups = (keys: RevocationKeys): string[] => [...new Set([keys.jti, keys.grantId, keys.clientId, keys.sub].filter((k): k is string => typeof k === 'string'))];

export interface Storage {
  readonly kind: 'mongodb' | 'embedded' | 'sqlite';
  /** Creates indexes (idempotent) and starts expiry sweeps where the server has no TTL indexes. */
  init(): Promise<void>;
  model(name: ModelName): ModelStore;
  readonly keys: KeyStore;
  readonly revokedTokens: RevokedTokenStore;
  readonly nonces: NonceStore;
  readonly audit: AuditStore;
  /** Resolves when storage answers; rejects with StorageUnavailableError otherwise. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
