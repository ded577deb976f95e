import { randomInt } from 'node:crypto';

import { BSON, MongoBulkWriteError, MongoClient, MongoServerError } from 'mongodb';
import type { Collection, Db, Filter, FindCursor } from 'mongodb';

import { deadline, withDeadline } from './deadline.js';
import { AuditCheckpointError, StorageUnavailableError, absentIfUnreadable, decodeStoredPayload } from './errors.js';
import type { UnreadableListener } from './errors.js';
import type { AccountPage, AdapterPayload, AuditCheckpoint, AuditRecord, Consumption, AuditStore, KeyStore, KeyTransition, ModelName, ModelStore, NonceStore, RevocationKeys, RevokedTokenStore, Storage, StoredKey } from './types.js';
import { ACCOUNT_INDEXED, AUDIT_CHAIN_ID, DEFAULT_AUDIT_CHAIN, MODEL_NAMES, REVOCATION_RECORD_TYPES, chainOf, checkpointFrom, revocationLookups, revokedBy, revokesOneOf, undecodableRecord } from './types.js';
import { checkKey, checkLookup, isAccountLookup, isValidKey } from './validate.js';

/** How a record sits in MongoDB. The payload is kept as JSON text: its maps are keyed by URLs (which hold `.`). */
interface RecordDoc {
  _id: string;
  payload: string;
  expiresAt?: Date;
  grantId?: string;
  uid?: string;
  userCode?: string;
  clientId?: string;
  /**
   * The payload's `accountId`, on Grant and Session records (ACCOUNT_INDEXED; '' when it has none), for
   * idsByAccount. Records written before agentauth stored it have no such field.
   */
  accountId?: string;
  consumed?: number;
}

/** One marker per consumed record; its unique `_id` makes consume atomic even where updates are not. */
interface ConsumedDoc {
  _id: string;
  at: Date;
  expiresAt: Date;
  /**
   * The id of the record that replaced the consumed one: on the marker itself when a rotation consumed it, on a
   * second marker (`<model>:<id>:successor`) when setSuccessor recorded it afterwards.
   */
  successor?: string;
}

interface KeyDoc extends Omit<StoredKey, 'kid'> {
  _id: string;
}

const NOT_IMPLEMENTED = 238;
const DUPLICATE_KEY = 11000;
const collectionName = (model: ModelName) => `oidc_${model}`;
const CONSUMED = 'oidc_consumed';
const KEYS = 'signing_keys';
const AUDIT = 'audit_events';
const AUDIT_CHECKPOINTS = 'audit_checkpoints';
const REVOKED = 'revoked_tokens';
const NONCES = 'nonces';

/**
 * A driver error's message as logged: without the " (undefinedms)" the driver (mongodb 7.9) puts in "Timed out during
 * socket read" when it has no duration to name.
 */
export function driverMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replaceAll(' (undefinedms)', '');
}

function unavailable(op: string, err: unknown): StorageUnavailableError {
  if (err instanceof StorageUnavailableError) return err;
  const reason = err instanceof Error ? `${err.name}: ${driverMessage(err)}` : String(err);
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

/**
 * Expiry is checked on every document read, in code, after a lookup by `_id` (or by `uid`/`userCode`). The result is
 * what an `expiresAt` filter would give, without a second condition in the query: on MongoDB the lookup is one index
 * seek either way. FerretDB v1's SQLite backend reads the whole collection for every lookup, even by `_id` (measured:
 * the time grows with the collection, about 1-4 µs per document), so there a lookup costs in proportion to the
 * collection's size: `node bench/ferretdb-lookups.mjs`, and docs/operations.md, "FerretDB v1 is for tests".
 */
const live = <T extends { expiresAt?: Date }>(doc: T | null, now = Date.now()): T | null =>
  doc && (doc.expiresAt === undefined || doc.expiresAt.getTime() > now) ? doc : null;

/** A document's payload as oidc-provider wrote it; UnreadableRecordError when it is not a JSON object's text. */
function toPayload(doc: RecordDoc | null, model: ModelName, id?: string): AdapterPayload | undefined {
  if (!doc) return undefined;
  const payload = decodeStoredPayload<AdapterPayload>(doc.payload, model, id);
  if (doc.consumed !== undefined) payload.consumed = doc.consumed;
  return payload;
}

/** The account of a document stored without its `accountId` beside the payload; none when the payload is unreadable. */
const accountOf = (doc: RecordDoc, model: ModelName): unknown => absentIfUnreadable(() => toPayload(doc, model)?.accountId, undefined);

class MongoModelStore implements ModelStore {
  constructor(
    private readonly model: ModelName,
    private readonly records: Collection<RecordDoc>,
    private readonly consumed: Collection<ConsumedDoc>,
    private readonly onUnreadable?: UnreadableListener,
  ) {}

  /** A lookup's document decoded, if live; an unreadable one is absent (errors.ts `absentIfUnreadable`). */
  #found(doc: RecordDoc | null): AdapterPayload | undefined {
    return absentIfUnreadable(() => toPayload(live(doc), this.model), this.onUnreadable);
  }

  #toDoc(id: string, payload: AdapterPayload, expiresIn?: number): RecordDoc {
    checkKey('id', id);
    const doc: RecordDoc = { _id: id, payload: JSON.stringify(payload) };
    if (expiresIn) doc.expiresAt = new Date(Date.now() + expiresIn * 1000);
    if (payload.grantId !== undefined) doc.grantId = checkKey('grantId', payload.grantId);
    if (payload.uid !== undefined) doc.uid = checkKey('uid', payload.uid);
    if (payload.userCode !== undefined) doc.userCode = checkKey('userCode', payload.userCode);
    if (payload.clientId !== undefined) doc.clientId = checkKey('clientId', payload.clientId);
    // Stored, not looked up by: any string (a value, never a key or an operator); '' keeps records without an account
    // out of the index's missing-field entries, which stand for records stored before the field was.
    if (ACCOUNT_INDEXED.has(this.model)) doc.accountId = typeof payload.accountId === 'string' ? payload.accountId : '';
    if (typeof payload.consumed === 'number') doc.consumed = payload.consumed;
    return doc;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    const doc = this.#toDoc(id, payload, expiresIn);
    // Most upserts create a record (a new token, grant, code): insert first, replace only when the id exists.
    try {
      await this.records.insertOne(doc);
      return;
    } catch (err) {
      if (!(err instanceof MongoServerError && err.code === DUPLICATE_KEY)) throw unavailable('upsert', err);
    }
    await guard('upsert', () => this.records.replaceOne({ _id: id }, doc, { upsert: true }));
  }

  async insertOnce(id: string, payload: AdapterPayload, expiresIn: number): Promise<boolean> {
    const doc = this.#toDoc(id, payload, expiresIn);
    try {
      await this.records.insertOne(doc);
      return true;
    } catch (err) {
      if (!(err instanceof MongoServerError && err.code === DUPLICATE_KEY)) throw unavailable('insertOnce', err);
    }
    // The id is taken. If that record has expired (no TTL index, not yet swept), replace it and retry once:
    // deleting only the expired document keeps a live one safe, and the insert stays the single point of truth.
    const removed = await guard('insertOnce', () => this.records.deleteOne({ _id: id, expiresAt: { $lte: new Date() } }));
    if (removed.deletedCount === 0) return false;
    try {
      await this.records.insertOne(doc);
      return true;
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return false;
      throw unavailable('insertOnce', err);
    }
  }

  async revokeByClientId(clientId: string): Promise<void> {
    if (!isValidKey(clientId)) return;
    await guard('revokeByClientId', () => this.records.deleteMany({ clientId }));
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(id)) return undefined;
    return this.#found(await guard('find', () => this.records.findOne({ _id: id })));
  }

  async findByUid(uid: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(uid)) return undefined;
    return this.#found(await guard('findByUid', () => this.records.findOne({ uid })));
  }

  async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    if (!isValidKey(userCode)) return undefined;
    return this.#found(await guard('findByUserCode', () => this.records.findOne({ userCode })));
  }

  async consume(id: string): Promise<boolean> {
    if (!isValidKey(id)) return false;
    const doc = live(await guard('consume', () => this.records.findOne({ _id: id })));
    if (!doc || doc.consumed !== undefined) return false;
    return this.#mark('consume', id, doc, undefined);
  }

  /**
   * The single-use decision: a unique insert of the record's marker, carrying the successor when there is one (so a
   * rotation's decision and the record of what replaced the token are one write), then the record's own `consumed`
   * field, which only the winner sets and which nothing decides on (consumption reads the marker).
   */
  async #mark(op: string, id: string, doc: RecordDoc, successor: string | undefined): Promise<boolean> {
    const at = new Date();
    const marker: ConsumedDoc = { _id: `${this.model}:${id}`, at, expiresAt: doc.expiresAt ?? new Date(at.getTime() + 86_400_000) };
    if (successor !== undefined) marker.successor = successor;
    try {
      await this.consumed.insertOne(marker);
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return false;
      throw unavailable(op, err);
    }
    await guard(op, () => this.records.updateOne({ _id: id }, { $set: { consumed: Math.floor(at.getTime() / 1000) } }));
    return true;
  }

  /**
   * A second marker, also a unique insert (updates are not atomic on FerretDB): the first successor recorded stays,
   * whether by this call or by the rotation that consumed the record.
   */
  async setSuccessor(id: string, successor: string): Promise<boolean> {
    if (!isValidKey(id)) return false;
    checkKey('successor', successor);
    const mark = live(await guard('setSuccessor', () => this.consumed.findOne({ _id: `${this.model}:${id}` })));
    if (!mark || mark.successor !== undefined) return false;
    try {
      await this.consumed.insertOne({ _id: `${this.model}:${id}:successor`, at: new Date(), expiresAt: mark.expiresAt, successor });
      return true;
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return false;
      throw unavailable('setSuccessor', err);
    }
  }

  /**
   * The successor is stored before the consume, and the consume's marker records it: every write that can be cut
   * (a timeout answered 503, then applied when the database resumes) leaves either the token unused (and the
   * successor an orphan nobody holds, which expires) or the token used with its successor stored and recorded, which
   * the refresh grant's grace can hand to a retry. Consuming first left a token used with no successor when the cut
   * fell between the writes. A loser of the consume removes the successor it stored; if that removal fails too, the
   * orphan is still unknown to any client.
   */
  async rotate(consumedId: string, id: string, payload: AdapterPayload, expiresIn: number | undefined, recordSuccessor: boolean): Promise<boolean> {
    if (!isValidKey(consumedId)) return false;
    const doc = live(await guard('rotate', () => this.records.findOne({ _id: consumedId })));
    if (!doc || doc.consumed !== undefined) return false;
    await this.upsert(id, payload, expiresIn);
    if (await this.#mark('rotate', consumedId, doc, recordSuccessor ? id : undefined)) return true;
    await this.records.deleteOne({ _id: id }).catch(() => undefined);
    return false;
  }

  /** Read from the markers, which are the single-use decision (the record's own `consumed` field follows them). */
  async consumption(id: string): Promise<Consumption | undefined> {
    if (!isValidKey(id)) return undefined;
    const key = `${this.model}:${id}`;
    const marks = await guard('consumption', () => this.consumed.find({ _id: { $in: [key, `${key}:successor`] } }).toArray());
    const now = Date.now();
    const mark = marks.find((m) => m._id === key && live(m, now));
    if (!mark) return undefined;
    const record = live(await guard('consumption', () => this.records.findOne({ _id: id })), now);
    if (!record) return undefined;
    const at = Math.floor(mark.at.getTime() / 1000);
    const successor = mark.successor ?? marks.find((m) => m._id === `${key}:successor` && live(m, now))?.successor;
    return successor === undefined ? { at } : { at, successor };
  }

  async destroy(id: string): Promise<void> {
    if (!isValidKey(id)) return;
    await guard('destroy', () => this.records.deleteOne({ _id: id }));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (!isValidKey(grantId)) return;
    await guard('revokeByGrantId', () => this.records.deleteMany({ grantId }));
  }

  async idsByAccount(accountId: string, after: string | undefined, limit: number): Promise<AccountPage> {
    if (!isAccountLookup(accountId) || limit < 1) return { ids: [] };
    const now = new Date();
    // Through the accountId index, with the records stored before the field was (no accountId: matched on their
    // payload here), which expire with their grant or session. Other models have no field: every record is read.
    const filter: Filter<RecordDoc> = {
      ...(ACCOUNT_INDEXED.has(this.model) ? { $or: [{ accountId }, { accountId: { $exists: false } }] } : {}),
      ...(after === undefined ? {} : { _id: { $gt: after } }),
    };
    const docs = await guard('idsByAccount', () => this.records.find(filter).sort({ _id: 1 }).limit(limit).toArray());
    const ids = docs.filter((d) => live(d, now.getTime()) && (d.accountId ?? accountOf(d, this.model)) === accountId).map((d) => d._id);
    return docs.length === limit ? { ids, next: docs.at(-1)!._id } : { ids };
  }

  async list(after: string | undefined, limit: number): Promise<Array<{ id: string; payload: AdapterPayload }>> {
    if (limit < 1) return [];
    // Expiry in the filter (not only in code), so that a page is never cut short by expired records not yet swept.
    const now = new Date();
    const filter: Filter<RecordDoc> = { $or: [{ expiresAt: { $exists: false } }, { expiresAt: { $gt: now } }], ...(after === undefined ? {} : { _id: { $gt: after } }) };
    const docs = await guard('list', () => this.records.find(filter).sort({ _id: 1 }).limit(limit).toArray());
    return docs.flatMap((d) => (live(d, now.getTime()) ? [{ id: d._id, payload: toPayload(d, this.model, d._id)! }] : []));
  }
}

interface ExpiringDoc {
  _id: string;
  expiresAt: Date;
}

class MongoRevokedTokens implements RevokedTokenStore {
  constructor(private readonly col: Collection<ExpiringDoc>) {}

  async revoke(jti: string, exp: number): Promise<void> {
    checkKey('jti', jti);
    try {
      await this.col.insertOne({ _id: jti, expiresAt: new Date(exp * 1000) });
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return; // already revoked: idempotent
      throw unavailable('revoke', err);
    }
  }

  async isRevoked(jti: string): Promise<boolean> {
    if (!isValidKey(jti)) return false;
    return live(await guard('isRevoked', () => this.col.findOne({ _id: jti }))) !== null;
  }

  async anyRevoked(ids: readonly string[]): Promise<boolean> {
    const valid = checkLookup(ids).filter(isValidKey);
    if (valid.length === 0) return false;
    if (valid.length === 1) return this.isRevoked(valid[0]!);
    return (await guard('anyRevoked', () => this.col.findOne({ _id: { $in: valid }, expiresAt: { $gt: new Date() } }))) !== null;
  }
}

interface NonceDoc extends ExpiringDoc {
  binding: string;
}

/**
 * Nonces: issued as documents with their binding; consumed by inserting a marker with a unique id, so exactly one use
 * wins. Attempt slots are markers too (`attempt:<n>:<key>`, n = 1..limit): a unique insert per slot is atomic on
 * MongoDB and on FerretDB, where a filtered update (a counter) is not.
 */
/** Most attempt ranges whose last taken slot a process remembers (MongoNonces.takeAttempt's hints). */
const MAX_SLOT_HINTS = 10_000;

class MongoNonces implements NonceStore {
  /**
   * Per attempt range of more than one slot (key and first slot), the highest slot this process saw taken, and until
   * when: every slot up to it is taken (a range fills from its first slot upward, with no gap), so the next take here
   * starts above it. Only ever a lower bound of what is taken (other processes take slots too), so a take never skips
   * a free slot it needs; it lapses with the slots (the request limits' keys name their window anyway).
   */
  readonly #hints = new Map<string, { slot: number; until: number }>();

  constructor(
    private readonly issued: Collection<NonceDoc>,
    private readonly consumed: Collection<ConsumedDoc>,
  ) {}

  async issue(nonce: string, ttlSeconds: number, binding: string): Promise<void> {
    checkKey('nonce', nonce);
    checkKey('nonce binding', binding);
    await guard('nonce.issue', () => this.issued.insertOne({ _id: nonce, binding, expiresAt: new Date(Date.now() + ttlSeconds * 1000) }));
  }

  async boundTo(nonce: string): Promise<string | undefined> {
    if (!isValidKey(nonce)) return undefined;
    const doc = live(await guard('nonce.boundTo', () => this.issued.findOne({ _id: nonce })));
    return typeof doc?.binding === 'string' ? doc.binding : undefined;
  }

  async consume(nonce: string): Promise<boolean> {
    if (!isValidKey(nonce)) return false;
    const doc = live(await guard('nonce.consume', () => this.issued.findOne({ _id: nonce })));
    if (!doc) return false;
    try {
      await this.consumed.insertOne({ _id: `nonce:${nonce}`, at: new Date(), expiresAt: doc.expiresAt });
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return false;
      throw unavailable('nonce.consume', err);
    }
    // The marker makes it single-use; the issued record expires with the nonce and is swept then.
    return true;
  }

  async claim(key: string, value: string, ttlSeconds: number): Promise<string> {
    checkKey('claim key', key);
    checkKey('claim value', value);
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const now = new Date();
      try {
        // A unique _id: of concurrent inserts exactly one goes in, on MongoDB and FerretDB alike.
        await this.issued.insertOne({ _id: key, binding: value, expiresAt: new Date(now.getTime() + ttlSeconds * 1000) });
        return value;
      } catch (err) {
        if (!(err instanceof MongoServerError && err.code === DUPLICATE_KEY)) throw unavailable('nonce.claim', err);
      }
      // Someone holds the key: its value, if it is still live. An expired, unswept holder is removed (only while
      // expired) and the claim made again.
      const held = await this.boundTo(key);
      if (held !== undefined) return held;
      await guard('nonce.claim', () => this.issued.deleteOne({ _id: key, expiresAt: { $lte: new Date() } }));
    }
    throw new StorageUnavailableError('MongoDB nonce.claim failed (the claim kept expiring as it was read)');
  }

  async release(key: string, value: string): Promise<void> {
    checkKey('claim key', key);
    checkKey('claim value', value);
    // One filtered delete: a claim taken over by another value since is not this one's to withdraw.
    await guard('nonce.release', () => this.issued.deleteOne({ _id: key, binding: value }));
  }

  async takeAttempt(key: string, limit: number, ttlSeconds: number): Promise<boolean> {
    checkKey('attempt key', key);
    const at = new Date();
    const expiresAt = new Date(at.getTime() + ttlSeconds * 1000);
    // The slots 1..limit are split into ranges (one per eight slots, at most 16), each filled from its first slot
    // upward, so a range is full exactly when its last slot is taken. A take starts in a random range and moves to the
    // next only when that one is full, so it refuses only when every range is full. With one range, concurrent takes
    // queued behind each other, one failed insert per slot taken ahead of them: 60 concurrent takes with limit 40 cost
    // about 1,300 failed inserts and 0.6-0.9 s on FerretDB, which serialises writes, and passed the deadline under load.
    const count = slotRanges(limit);
    const first = randomInt(count);
    try {
      for (let i = 0; i < count; i += 1) {
        const range = (first + i) % count;
        const from = Math.floor((range * limit) / count) + 1;
        const to = Math.floor(((range + 1) * limit) / count);
        if (await this.#takeIn(key, from, to, at, expiresAt)) return true;
      }
    } catch (err) {
      throw unavailable('nonce.takeAttempt', err);
    }
    return false;
  }

  /**
   * Takes the first free slot of from..to (which fill in order, so the range is full when `to` is taken). A range this
   * process has taken from before starts above its last taken slot, with an insert at once: the usual take (one
   * process, or few) costs that one insert and no read; a range known full here costs nothing.
   */
  async #takeIn(key: string, from: number, to: number, at: Date, expiresAt: Date): Promise<boolean> {
    const hintKey = to > from ? `${from}:${key}` : undefined;
    const seen = (slot: number) => hintKey !== undefined && this.#hint(hintKey, slot, expiresAt.getTime());
    const hinted = () => (hintKey === undefined ? undefined : this.#hinted(hintKey));
    const insert = async (slot: number): Promise<boolean> => {
      try {
        await this.consumed.insertOne({ _id: attemptId(slot, key), at, expiresAt });
        seen(slot);
        return true;
      } catch (err) {
        if (!(err instanceof MongoServerError && err.code === DUPLICATE_KEY)) throw err;
        seen(slot);
        return false;
      }
    };
    const hint = hinted();
    if (hint !== undefined) {
      if (hint >= to) return false;
      if (await insert(hint + 1)) return true;
    }
    const taken = async (slot: number) => {
      const found = (await this.consumed.findOne({ _id: attemptId(slot, key) }, { projection: { _id: 1 } })) !== null;
      if (found) seen(slot);
      return found;
    };
    let low = Math.max(from, (hinted() ?? from - 1) + 1);
    if (low > to) return false;
    if (to > low) {
      // Point reads (by _id) first: one says whether the range is full, and a binary search finds its first free slot
      // in about log2(range) more. Reads, because a failed insert is a write: walking with inserts cost a refused take
      // one failed insert per slot of every range.
      if (await taken(to)) return false;
      let high = to;
      while (low < high) {
        const mid = Math.floor((low + high) / 2);
        if (await taken(mid)) low = mid + 1;
        else high = mid;
      }
    }
    for (let slot = low; slot <= to; slot += 1) {
      if (await insert(slot)) return true;
      // Slot taken. An expired marker that the sweep has not removed yet still counts: the count errs on refusing.
    }
    return false;
  }

  /** Remembers that `slot` of a range is taken, until `until` (the highest seen; the oldest ranges are forgotten first). */
  #hint(hintKey: string, slot: number, until: number): void {
    const held = this.#hinted(hintKey);
    if (held !== undefined && held >= slot) return;
    this.#hints.delete(hintKey);
    this.#hints.set(hintKey, { slot, until });
    while (this.#hints.size > MAX_SLOT_HINTS) this.#hints.delete(this.#hints.keys().next().value!);
  }

  /** The highest slot of a range known taken here, while that knowledge holds. */
  #hinted(hintKey: string): number | undefined {
    const hint = this.#hints.get(hintKey);
    if (hint === undefined) return undefined;
    if (hint.until > Date.now()) return hint.slot;
    this.#hints.delete(hintKey);
    return undefined;
  }
}

/** An attempt slot's marker in the consumed collection (the same _id for every limit, so ranges never collide). */
const attemptId = (slot: number, key: string) => `attempt:${slot}:${key}`;
/** How many ranges a limit's attempt slots are split into: one per eight slots, at most 16 (a refused take reads each once). */
const slotRanges = (limit: number) => Math.max(1, Math.min(16, Math.floor(limit / 8)));

interface TransitionDoc extends KeyTransition {
  _id: string;
}

interface AuditDoc extends Omit<AuditRecord, 'seq' | 'details'> {
  /** The default chain: the seq itself (as records were always stored). A named chain: `<chain>/<seq, 15 digits>`. */
  _id: number | string;
  /** Named chains only (the _id of the default chain is its seq). */
  seq?: number;
  /** JSON text: details may hold keys with "." (URLs), which stored documents cannot. */
  details: string;
  /**
   * Not part of the record (never read back into it): what a revocation record revokes (types.ts `revokedBy`), for the
   * `type_1_revokes_1` index that AuditStore.revocations reads. Absent on other records and on records stored before it.
   */
  revokes?: string;
}

/**
 * Where a pruned chain starts (AuditStore.checkpoints): one document per prune, `_id` `<chain>/<padded seq>` (the
 * default chain's starts with `/`), so that each prune inserts and the chain's checkpoint is its highest document.
 */
interface CheckpointDoc {
  _id: string;
  chain: string;
  seq: number;
  hash: string;
  time: string;
  pruned_at: string;
}

const SEQ_DIGITS = 15;
/** `<chain>/<seq, 15 digits>`: one chain is one `_id` range, in seq order (a named chain's records, every checkpoint). */
const checkpointId = (chain: string, seq: number): string => `${chain}/${String(seq).padStart(SEQ_DIGITS, '0')}`;
const auditId = (chain: string, seq: number): number | string => (chain === DEFAULT_AUDIT_CHAIN ? seq : checkpointId(chain, seq));
/** A cursor opened with `{ raw: true }`: the driver hands back each document's bytes, whatever its type says. */
const raw = (cursor: FindCursor<unknown>): FindCursor<Uint8Array> => cursor as unknown as FindCursor<Uint8Array>;
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

/**
 * A stored document, read as the bytes the server returned (MongoAuditStore's cursors are `raw`). It is a record only if
 * those bytes are exactly what the driver writes for the document they decode to, and if its `revokes` (not hashed)
 * names what its content revokes. Either way round, a record could keep its hash while the server's queries read
 * it otherwise: a field named twice (which MongoDB stores as sent, and FerretDB refuses) decodes as its last here
 * and may match a query as its first; a `revokes` edited to another value takes a revocation out of the
 * `type_1_revokes_1` index that `agentauth verify` reads. Both would hide a revocation in a log `audit verify` calls
 * intact, as a member named twice did on SQLite.
 */
export function auditRecordFromBytes(bytes: Uint8Array): AuditRecord {
  let doc: AuditDoc;
  try {
    doc = BSON.deserialize(bytes) as AuditDoc;
  } catch (err) {
    // Not even a document (a string that is not UTF-8, which MongoDB stores as sent): read at its _id alone.
    const id = BSON.deserialize(bytes, { validation: { utf8: false } })._id as unknown;
    return undecodableRecord(typeof id === 'number' ? DEFAULT_AUDIT_CHAIN : String(id).slice(0, Math.max(0, String(id).lastIndexOf('/'))), typeof id === 'number' ? id : Number(String(id).slice(String(id).lastIndexOf('/') + 1)), err);
  }
  const { _id, seq, details, revokes: index, ...rest } = doc;
  // The seq of the key the record is stored under (as the SQLite store does with its row): paging goes by it.
  const keyed = typeof _id === 'number' ? _id : Number(String(_id).slice(String(_id).lastIndexOf('/') + 1));
  const at = Number.isSafeInteger(keyed) ? keyed : Number(seq);
  const chain = typeof _id === 'number' ? DEFAULT_AUDIT_CHAIN : String(_id).slice(0, String(_id).lastIndexOf('/'));
  try {
    if (!sameBytes(BSON.serialize(doc), bytes)) throw new Error('its stored document is not the one agentauth wrote (a field named twice, or a value stored as another BSON type)');
    const record = { ...rest, seq: at, details: JSON.parse(details) as Record<string, unknown> } as AuditRecord;
    if (index !== undefined && index !== revokedBy(record)) throw new Error('its revokes field does not name what the record revokes');
    return record;
  } catch (err) {
    return undecodableRecord(chain, at, err);
  }
}

/**
 * Audit records, one document per record, keyed so that one chain is one `_id` range: the default chain's numeric
 * ids (a range query on numbers matches no strings), a named chain's `<chain>/<padded seq>` strings (chain ids hold
 * no `/`, so `[chain/, chain0)` holds exactly that chain, in seq order). Uniqueness per chain and seq is `_id`'s own.
 */
class MongoAuditStore implements AuditStore {
  constructor(
    private readonly col: Collection<AuditDoc>,
    private readonly checkpointsCol: Collection<CheckpointDoc>,
  ) {}

  static #range(chain: string, fromSeq: number): Filter<AuditDoc> {
    if (chain === DEFAULT_AUDIT_CHAIN) return { _id: { $gte: fromSeq } };
    return { _id: { $gte: auditId(chain, Math.max(0, fromSeq)), $lt: `${chain}0` } };
  }

  async head(chain: string = DEFAULT_AUDIT_CHAIN): Promise<AuditRecord | undefined> {
    const doc = await guard('audit.head', () => raw(this.col.find(MongoAuditStore.#range(chain, 0), { raw: true })).sort({ _id: -1 }).limit(1).next());
    return doc ? auditRecordFromBytes(doc) : undefined;
  }

  async insertBatch(records: AuditRecord[]): Promise<number> {
    if (records.length === 0) return 0;
    // One ordered insertMany: documents after the first taken seq are not inserted, so the count that went in is
    // always a prefix of the batch. A unique _id per chain and seq is the guarantee both MongoDB and FerretDB keep.
    const docs = records.map(({ seq, details, ...rest }) => {
      const chain = chainOf(rest);
      const revokes = revokedBy({ ...rest, details });
      return { _id: auditId(chain, seq), ...(chain === DEFAULT_AUDIT_CHAIN ? {} : { seq }), ...rest, details: JSON.stringify(details), ...(revokes === undefined ? {} : { revokes }) };
    });
    try {
      const res = await this.col.insertMany(docs, { ordered: true });
      return res.insertedCount;
    } catch (err) {
      // Only duplicate seqs mean "the rest is taken". A bulk error with no write errors (the connection dropped
      // mid-write) is a storage failure: `every` on an empty list would have called it a conflict.
      const writeErrors = err instanceof MongoBulkWriteError && err.writeErrors ? [err.writeErrors].flat() : [];
      if (err instanceof MongoBulkWriteError && writeErrors.length > 0 && writeErrors.every((e) => e.code === DUPLICATE_KEY)) {
        return err.insertedCount;
      }
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return 0;
      throw unavailable('audit.insert', err);
    }
  }

  async list(fromSeq: number, limit: number, chain: string = DEFAULT_AUDIT_CHAIN): Promise<AuditRecord[]> {
    const docs = await guard('audit.list', () => raw(this.col.find(MongoAuditStore.#range(chain, fromSeq), { raw: true })).sort({ _id: 1 }).limit(limit).toArray());
    return docs.map((d) => auditRecordFromBytes(d));
  }

  async chains(): Promise<string[]> {
    const [named, hasDefault] = await guard('audit.chains', () =>
      Promise.all([this.col.distinct('chain', { chain: { $exists: true } }), this.col.findOne(MongoAuditStore.#range(DEFAULT_AUDIT_CHAIN, 0), { projection: { _id: 1 } })]),
    );
    const ids = (named as unknown[]).filter((c): c is string => typeof c === 'string' && AUDIT_CHAIN_ID.test(c));
    return [...(hasDefault ? [DEFAULT_AUDIT_CHAIN] : []), ...ids.sort()];
  }

  async strays(limit: number): Promise<string[]> {
    // Classified here rather than by query operators FerretDB may not have: every _id is read (the _ids only), which
    // is no more than verification reads anyway. Reached: a number ≥ 1 (the default chain), or `<chain>/<seq>` at or
    // above seq 1 of a chain that `chains` names (chain ids hold no `/`, so the chain is what precedes the first one).
    const chains = new Set(await this.chains());
    const found: string[] = [];
    const cursor = this.col.find({}, { projection: { _id: 1 } }).sort({ _id: 1 });
    try {
      for await (const { _id: id } of cursor) {
        if (MongoAuditStore.#reached(id, chains)) continue;
        found.push(`_id ${typeof id === 'string' || typeof id === 'number' ? JSON.stringify(id) : String(id)}`);
        if (found.length >= limit) break;
      }
    } catch (err) {
      throw unavailable('audit.strays', err);
    } finally {
      await cursor.close().catch(() => undefined);
    }
    return found;
  }

  async revocations(keys: RevocationKeys, limit: number): Promise<AuditRecord[]> {
    const lookups = revocationLookups(keys);
    if (lookups.length === 0 || limit < 1) return [];
    const type = { $in: [...REVOCATION_RECORD_TYPES] };
    // Through the type_1_revokes_1 index: the records that carry what they revoke, and those stored before the field
    // was (revokes missing: matched on their details here; the index's null range holds them, and no more are added).
    const docs = await guard('audit.revocations', async () => {
      const filter: Filter<AuditDoc> = { type, $or: [{ revokes: { $in: lookups } }, { revokes: { $exists: false } }] };
      const cursor = raw(this.col.find(filter, { raw: true })).sort({ _id: 1 });
      const found: AuditRecord[] = [];
      try {
        for await (const doc of cursor) {
          const record = auditRecordFromBytes(doc);
          const chain = chainOf(record);
          if (record.undecodable !== undefined || !(record.seq >= 1) || !(chain === DEFAULT_AUDIT_CHAIN || AUDIT_CHAIN_ID.test(chain))) continue;
          if (revokesOneOf(record, keys)) found.push(record);
          if (found.length >= limit) break;
        }
      } finally {
        await cursor.close().catch(() => undefined);
      }
      return found;
    });
    return docs.sort((a, b) => (chainOf(a) < chainOf(b) ? -1 : chainOf(a) > chainOf(b) ? 1 : a.seq - b.seq));
  }

  async checkpoints(): Promise<AuditCheckpoint[]> {
    const docs = await guard('audit.checkpoints', () => this.checkpointsCol.find({}).sort({ _id: 1 }).toArray());
    // Each prune inserted its own document: a chain's checkpoint is its highest.
    const highest = new Map<string, CheckpointDoc>();
    for (const doc of docs) {
      const chain = typeof doc.chain === 'string' ? doc.chain : String(doc._id).slice(0, Math.max(0, String(doc._id).lastIndexOf('/')));
      const seen = highest.get(chain);
      if (!seen || !(Number(seen.seq) >= Number(doc.seq))) highest.set(chain, doc);
    }
    return [...highest.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([chain, { _id, ...rest }]) => {
        if (_id !== checkpointId(chain, Number(rest.seq))) throw new AuditCheckpointError(chain);
        return checkpointFrom(chain, Number(rest.seq), rest);
      });
  }

  async prune(checkpoint: AuditCheckpoint, batch: number): Promise<number> {
    const { chain, seq } = checkpoint;
    // Insert only (a unique _id per chain and seq), never an update: a chain's checkpoint is the highest of its
    // documents, so of two prunes racing the higher stays whatever order they land in, also on FerretDB, whose
    // conditional updates are not atomic (a test of 50 racing prunes caught one lowering the checkpoint).
    try {
      await this.checkpointsCol.insertOne({ _id: checkpointId(chain, seq), ...checkpoint });
    } catch (err) {
      if (!(err instanceof MongoServerError && err.code === DUPLICATE_KEY)) throw unavailable('audit.checkpoint', err);
    }
    const range = { $gte: `${chain}/`, $lt: `${chain}0` };
    const top = await guard('audit.checkpoints', () => this.checkpointsCol.find({ _id: range }).sort({ _id: -1 }).limit(1).next());
    const through = top ? Number(top.seq) : seq;
    // The lower ones are no longer read (removing them never removes the highest).
    await guard('audit.checkpoints', () => this.checkpointsCol.deleteMany({ _id: { $gte: `${chain}/`, $lt: checkpointId(chain, through) } }));
    const first = await guard('audit.prune', () => this.col.find(MongoAuditStore.#range(chain, 0)).sort({ _id: 1 }).limit(1).project<{ _id: number | string }>({ _id: 1 }).next());
    let removed = 0;
    if (!first) return 0;
    const firstSeq = typeof first._id === 'number' ? first._id : Number(first._id.slice(first._id.lastIndexOf('/') + 1));
    for (let from = Math.max(0, firstSeq); from <= through; from += batch) {
      const to = Math.min(through, from + batch - 1);
      const res = await guard('audit.prune', () => this.col.deleteMany({ _id: { $gte: auditId(chain, from), $lte: auditId(chain, to) } }));
      removed += res.deletedCount;
    }
    return removed;
  }

  static #reached(id: unknown, chains: ReadonlySet<string>): boolean {
    if (typeof id === 'number') return id >= 1;
    if (typeof id !== 'string') return false;
    const slash = id.indexOf('/');
    if (slash <= 0) return false;
    const chain = id.slice(0, slash);
    return chains.has(chain) && id >= String(auditId(chain, 1));
  }
}

class MongoKeyStore implements KeyStore {
  constructor(
    private readonly keys: Collection<KeyDoc>,
    private readonly transitionsCol: Collection<TransitionDoc>,
  ) {}

  async transitions(): Promise<KeyTransition[]> {
    const docs = await guard('keys.transitions', () => this.transitionsCol.find({}).toArray());
    return docs.map(({ _id, ...t }) => t);
  }

  async addTransition(t: KeyTransition): Promise<boolean> {
    try {
      await this.transitionsCol.insertOne({ _id: `${t.kid}:${t.type}`, ...t });
      return true;
    } catch (err) {
      if (err instanceof MongoServerError && err.code === DUPLICATE_KEY) return false;
      throw unavailable('keys.addTransition', err);
    }
  }

  async list(): Promise<StoredKey[]> {
    const docs = await guard('keys.list', () => this.keys.find({}).sort({ seq: 1 }).toArray());
    // The document's key (_id) is its kid, whatever its content says (as the SQLite store does with its row).
    return docs.map(({ _id, ...rest }) => ({ ...rest, kid: _id }));
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

  async addKeyMac(kid: string, mac: string): Promise<void> {
    await guard('keys.addKeyMac', () => this.keys.updateOne({ _id: kid, mac: { $exists: false } }, { $set: { mac } }));
  }

  async addTransitionMac(kid: string, type: KeyTransition['type'], mac: string): Promise<void> {
    await guard('keys.addTransitionMac', () => this.transitionsCol.updateOne({ _id: `${kid}:${type}`, mac: { $exists: false } }, { $set: { mac } }));
  }

  async replaceKey(key: StoredKey, expectedMac: string): Promise<boolean> {
    const { kid, ...rest } = key;
    // A whole-document replacement: whichever of several racing writers stands, the record is one writer's (FerretDB
    // does not make the filter and the write one step).
    const result = await guard('keys.replaceKey', () => this.keys.replaceOne({ _id: kid, seq: key.seq, mac: expectedMac }, rest));
    return result.modifiedCount === 1;
  }

  async replaceTransitionMac(kid: string, type: KeyTransition['type'], expectedMac: string, mac: string): Promise<boolean> {
    const result = await guard('keys.replaceTransitionMac', () => this.transitionsCol.updateOne({ _id: `${kid}:${type}`, mac: expectedMac }, { $set: { mac } }));
    return result.modifiedCount === 1;
  }
}

export interface MongoStorageOptions {
  uri: string;
  /** Database name. */
  dbName: string;
  /**
   * Bound on how long any storage call may take as a whole (server selection, connection checkout, every round trip
   * it makes): a server that hangs fails the call after this long. Index creation and expiry sweeps are not bounded by it.
   */
  timeoutMs?: number;
  sweepIntervalMs?: number;
  /** Called when the client is replaced after pings kept failing (see `ping`), with the last ping's error. */
  onReconnect?: (reason: string) => void;
  /** Told of a record a lookup found unreadable (not a JSON object) and answered as absent. */
  onUnreadable?: UnreadableListener;
  /** Called once at `init` when the server is FerretDB 1.x (see `ferretdbV1Version`), with its version. */
  onFerretdbV1?: (version: string) => void;
  /**
   * Reads only (the `agentauth audit` commands): `init` connects and creates no index and starts no sweep, so a
   * database user with read access alone (MongoDB's `read` role) is enough. Writes are not refused here: a read-only
   * store is one its caller does not write to.
   */
  readOnly?: boolean;
}

/**
 * The version of a FerretDB 1.x server from its `buildInfo` answer (FerretDB adds `ferretdbVersion`; MongoDB does
 * not), else undefined. FerretDB v1 with its SQLite backend reads a whole collection for every lookup, so lookups slow
 * down as collections grow, and a deployment stops being able to start at about 50,000 audit records
 * (docs/operations.md, "FerretDB v1 is for tests"). A build that does not know its version says "unknown": no warning.
 */
export function ferretdbV1Version(buildInfo: Record<string, unknown>): string | undefined {
  const version = buildInfo.ferretdbVersion;
  return typeof version === 'string' && /^v?1\.\d/.test(version) ? version : undefined;
}

/** One MongoClient and the stores over its collections; replaced as a whole when the client is replaced. */
interface Connection {
  client: MongoClient;
  db: Db;
  models: Map<ModelName, ModelStore>;
  keys: KeyStore;
  audit: AuditStore;
  revokedTokens: RevokedTokenStore;
  nonces: NonceStore;
}

/** Collections whose documents carry `expiresAt`. */
const EXPIRING = [...MODEL_NAMES.map(collectionName), CONSUMED, 'revoked_tokens', 'nonces'];

/** Index layout per collection: `expiresAt` everywhere (TTL where supported), plus the lookup fields a model uses. */
const LOOKUP_INDEXES: Partial<Record<ModelName, Array<keyof RecordDoc>>> = {
  Session: ['uid'],
  DeviceCode: ['userCode', 'grantId', 'clientId'],
  AccessToken: ['grantId', 'clientId'],
  AuthorizationCode: ['grantId', 'clientId'],
  RefreshToken: ['grantId', 'clientId'],
  BackchannelAuthenticationRequest: ['grantId', 'clientId'],
  Grant: ['grantId', 'clientId'],
  ClientCredentials: ['clientId'],
  PushedAuthorizationRequest: ['clientId'],
  RegistrationAccessToken: ['clientId'],
};

export class MongoStorage implements Storage {
  readonly kind = 'mongodb' as const;
  readonly keys: KeyStore;
  readonly revokedTokens: RevokedTokenStore;
  readonly nonces: NonceStore;
  readonly audit: AuditStore;
  readonly #models = new Map<ModelName, ModelStore>();
  readonly #options: MongoStorageOptions;
  readonly #sweepIntervalMs: number;
  readonly #timeoutMs: number;
  readonly #reconnectAfterMs: number;
  #conn: Connection;
  /** When the current run of failed pings began (undefined while pings succeed). */
  #failingSince: number | undefined;
  #ttlSupported: boolean | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: MongoStorageOptions) {
    this.#options = options;
    this.#timeoutMs = options.timeoutMs ?? 2000;
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 60_000;
    this.#reconnectAfterMs = Math.max(5000, 3 * this.#timeoutMs);
    this.#conn = this.#open();
    // What callers hold: each call goes to the current client's store and is bounded by timeoutMs as a whole.
    const bounded = <T extends object>(current: () => T, label: string) => withDeadline(current, this.#timeoutMs, `MongoDB ${label}`);
    for (const name of MODEL_NAMES) this.#models.set(name, bounded(() => this.#conn.models.get(name)!, name));
    this.keys = bounded(() => this.#conn.keys, 'keys');
    this.audit = bounded(() => this.#conn.audit, 'audit');
    this.revokedTokens = bounded(() => this.#conn.revokedTokens, 'revokedTokens');
    this.nonces = bounded(() => this.#conn.nonces, 'nonces');
  }

  #open(): Connection {
    const client = new MongoClient(this.#options.uri, {
      serverSelectionTimeoutMS: this.#timeoutMs,
      connectTimeoutMS: this.#timeoutMs,
      socketTimeoutMS: this.#timeoutMs * 5,
      waitQueueTimeoutMS: this.#timeoutMs,
      appName: 'agentauth',
    });
    const db = client.db(this.#options.dbName);
    const consumed = db.collection<ConsumedDoc>(CONSUMED);
    return {
      client,
      db,
      models: new Map(MODEL_NAMES.map((name) => [name, new MongoModelStore(name, db.collection<RecordDoc>(collectionName(name)), consumed, this.#options.onUnreadable)])),
      keys: new MongoKeyStore(db.collection<KeyDoc>(KEYS), db.collection<TransitionDoc>('key_transitions')),
      audit: new MongoAuditStore(db.collection<AuditDoc>(AUDIT), db.collection<CheckpointDoc>(AUDIT_CHECKPOINTS)),
      revokedTokens: new MongoRevokedTokens(db.collection<ExpiringDoc>(REVOKED)),
      nonces: new MongoNonces(db.collection<NonceDoc>(NONCES), consumed),
    };
  }

  /** The current client (replaced when pings keep failing; see `ping`). */
  get client(): MongoClient {
    return this.#conn.client;
  }

  get db(): Db {
    return this.#conn.db;
  }

  /** Whether the server honoured TTL indexes at init (false on FerretDB v1: expiry is then swept). */
  get ttlSupported(): boolean | undefined {
    return this.#ttlSupported;
  }

  /** Connects to the server (bounded by timeoutMs): what init does first, and all `agentauth config check` does. */
  async connect(): Promise<void> {
    await guard('connect', () => this.client.connect());
  }

  async init(): Promise<void> {
    await this.connect();
    if (this.#options.readOnly) return;
    if (this.#options.onFerretdbV1) {
      const version = await this.ferretdbV1();
      if (version) this.#options.onFerretdbV1(version);
    }
    for (const name of EXPIRING) await this.#expiryIndex(name);
    for (const [model, fields] of Object.entries(LOOKUP_INDEXES) as Array<[ModelName, string[]]>) {
      for (const field of fields) {
        await guard('createIndex', () => this.db.collection(collectionName(model)).createIndex({ [field]: 1 }, { name: `${field}_1` }));
      }
    }
    // idsByAccount: equality on accountId, in _id order after a cursor; with _id in the index each $or branch comes out
    // in _id order already (merged, not sorted), whatever the number of records.
    for (const model of ACCOUNT_INDEXED) {
      await guard('createIndex', () => this.db.collection(collectionName(model)).createIndex({ accountId: 1, _id: 1 }, { name: 'accountId_1__id_1' }));
    }
    await guard('createIndex', () => this.db.collection(KEYS).createIndex({ seq: 1 }, { name: 'seq_1', unique: true }));
    // AuditStore.revocations: `agentauth verify` finds a token's revocation records without reading the log.
    await guard('createIndex', () => this.db.collection(AUDIT).createIndex({ type: 1, revokes: 1 }, { name: 'type_1_revokes_1' }));
    if (this.#ttlSupported === false && !this.#timer) {
      this.#timer = setInterval(() => void this.sweep().catch(() => undefined), this.#sweepIntervalMs);
      this.#timer.unref();
    }
  }

  /**
   * The server's version when it is FerretDB 1.x (see `ferretdbV1Version`), else undefined. Advisory only: a server
   * that does not answer buildInfo within timeoutMs is taken as not FerretDB v1, never refused for it.
   */
  async ferretdbV1(): Promise<string | undefined> {
    const info = await deadline(this.db.command({ buildInfo: 1 }), this.#timeoutMs, 'MongoDB buildInfo').catch(() => undefined);
    return info && ferretdbV1Version(info);
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
    for (const name of EXPIRING) {
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

  /**
   * Pings the server, bounded by timeoutMs. When pings have failed for `max(5 s, 3 × timeoutMs)` the client is
   * replaced by a new one: a MongoClient can stay stuck after its server vanished mid-operation (an operation, or
   * its server monitor, waiting on a connection that closed under it never settles), and then fails every call
   * even once the server is back. A new client starts from nothing; the old one is closed in the background.
   */
  async ping(): Promise<void> {
    // The signal makes the driver give up on (and close) a connection to a server that does not answer.
    const signal = AbortSignal.timeout(this.#timeoutMs);
    const { client, db } = this.#conn;
    try {
      // connect() is a no-op on a connected client; on a new client, or one whose first (automatic) connect failed
      // and left it closed for good, it opens a fresh connection to the server.
      const ping = async () => {
        await client.connect();
        return db.command({ ping: 1 }, { signal });
      };
      await deadline(guard('ping', ping), this.#timeoutMs, 'MongoDB ping');
      this.#failingSince = undefined;
    } catch (err) {
      const now = Date.now();
      this.#failingSince ??= now;
      if (now - this.#failingSince >= this.#reconnectAfterMs) {
        this.#failingSince = now;
        this.#reconnect(driverMessage(err));
      }
      throw err;
    }
  }

  #reconnect(reason: string): void {
    const old = this.#conn;
    this.#conn = this.#open();
    void deadline(old.client.close(), this.#timeoutMs, 'MongoDB close').catch(() => undefined);
    this.#options.onReconnect?.(reason);
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#conn.client.close();
  }
}
