/**
 * The hash chains of the audit log: pure functions over records, no I/O. Each writer appends to its own chain
 * (`chain`, absent for the default chain); seqs and links are per chain, and {@link LogVerifier} checks each.
 *
 * Every record carries `prev_hash` (the `hash` of the record with the previous seq in its chain; {@link GENESIS_HASH}
 * for seq 1) and `hash`, the hex SHA-256 of the canonical JSON of every other field (seq and chain included).
 * Changing, removing, splicing in or moving a record in the middle of a chain therefore breaks a hash or a link that
 * {@link verifyChain} reports.
 *
 * What a chain without a secret cannot show: anyone who can write the store can also compute SHA-256, so removing
 * the newest records (truncation), or rewriting every record from some point up to the head with fresh hashes and
 * links, leaves a chain that verifies. Verification therefore reports each chain's head (`headSeq`, `headHash`): an operator
 * keeps heads exported earlier (`agentauth audit export` prints it; the exported file holds it) somewhere the
 * server cannot write, and checks that the current log still contains that head unchanged and has not shrunk below it.
 */
import { hash } from 'node:crypto';

import { AUDIT_CHAIN_ID, DEFAULT_AUDIT_CHAIN, chainOf } from '../../adapters/types.js';
import type { AuditRecord } from '../../adapters/types.js';

/** One-shot SHA-256 (node:crypto `hash`, cheaper than a Hash object for short inputs). */
const sha256Hex = (text: string): string => hash('sha256', text, 'hex');

/** `prev_hash` of the first record (seq 1). */
export const GENESIS_HASH = '0'.repeat(64);

/** What a caller asks to record. `details` must be JSON data; never put tokens, secrets or key material in it. */
export interface AuditEventInput {
  /** Dotted lower-case event name, e.g. `token.revoked`, `client.registered`, `key.rotated`. */
  type: string;
  client_id?: string;
  sub?: string;
  details?: Record<string, unknown>;
}

export type ChainProblemKind = 'edited' | 'deleted' | 'inserted' | 'reordered' | 'broken-link';

export interface ChainProblem {
  /** The seq where the problem shows (for `deleted`, the first missing seq). */
  seq: number;
  kind: ChainProblemKind;
  detail: string;
}

export interface ChainVerification {
  ok: boolean;
  /** How many records were examined. */
  checked: number;
  /** The record with the highest seq: compare with a head kept from an earlier export to detect truncation. */
  headSeq?: number;
  headHash?: string;
  problems: ChainProblem[];
}

export interface VerifyOptions {
  /** The seq the records should start at (default 1). */
  startSeq?: number;
  /**
   * The hash the record at startSeq must link to. Defaults to GENESIS_HASH when startSeq is 1; when verifying a
   * later segment without it, the first link is taken on trust.
   */
  startPrevHash?: string;
}

/** An audit event that cannot be recorded (bad type, non-JSON details, ...). Nothing was written. */
export class InvalidAuditEventError extends Error {
  readonly code = 'invalid_audit_event';

  constructor(message: string) {
    super(message);
    this.name = 'InvalidAuditEventError';
  }
}

export const EVENT_TYPE = /^[a-z]+(\.[a-z_]+)+$/;
const MAX_TYPE_LENGTH = 100;
const MAX_ID_LENGTH = 1024;
/** Canonical JSON length limit for `details`: the log is for facts, not payloads. */
export const MAX_DETAILS_LENGTH = 32 * 1024;
const HEX_HASH = /^[0-9a-f]{64}$/;
const RECORD_FIELDS = new Set(['chain', 'seq', 'time', 'type', 'client_id', 'sub', 'details', 'prev_hash', 'hash']);

/** An object literal or Object.create(null), from any realm (structuredClone and vm contexts have their own Object). */
function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value) as object | null;
  return proto === null || Object.getPrototypeOf(proto) === null;
}

/** A value that is not JSON data, found at `path` (JSONPath-like, relative until the top adds `$`). */
class NotJsonError extends TypeError {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(`$${path}: ${reason}`);
  }
}

/** Prefixes the path of an error raised below `segment` (paths are only built when something is wrong). */
function under(segment: string, err: unknown): never {
  if (err instanceof NotJsonError) throw new NotJsonError(`${segment}${err.path}`, err.reason);
  throw err;
}

function canonical(value: unknown, ancestors: Set<object>): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new NotJsonError('', `${value} is not a JSON number`);
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw new NotJsonError('', `a ${typeof value} is not a JSON value`);
  }
  if (ancestors.has(value)) throw new NotJsonError('', 'circular reference');
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      let out = '[';
      for (let i = 0; i < value.length; i += 1) {
        const item: unknown = value[i];
        if (item === undefined) throw new NotJsonError(`[${i}]`, 'undefined is not a JSON value');
        try {
          out += (i > 0 ? ',' : '') + canonical(item, ancestors);
        } catch (err) {
          under(`[${i}]`, err);
        }
      }
      return `${out}]`;
    }
    if (!isPlainObject(value)) {
      const name = (value as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      throw new NotJsonError('', `a ${name} is not plain JSON data${value instanceof Date ? ' (use toISOString())' : ''}`);
    }
    const keys = Object.keys(value).sort();
    let out = '{';
    let first = true;
    for (const key of keys) {
      const member = (value as Record<string, unknown>)[key];
      if (member === undefined) continue; // as JSON.stringify: an absent member
      try {
        out += `${first ? '' : ','}${JSON.stringify(key)}:${canonical(member, ancestors)}`;
      } catch (err) {
        under(`.${key}`, err);
      }
      first = false;
    }
    return `${out}}`;
  } finally {
    ancestors.delete(value);
  }
}

/**
 * JSON with object keys sorted (by UTF-16 code units) at every depth and no whitespace, so equal data always gives
 * the same text. Object members whose value is undefined are left out (as JSON.stringify does); anything else that
 * is not JSON data (undefined at top level or in an array, functions, symbols, bigints, NaN/Infinity, Dates, Maps,
 * class instances, cycles) throws a TypeError naming the path.
 */
export function canonicalJson(value: unknown): string {
  return canonical(value, new Set());
}

/** The fields the hash covers, with absent optional fields left out (never present as undefined or null). */
function hashedFields(record: Omit<AuditRecord, 'hash'>): Record<string, unknown> {
  const fields: Record<string, unknown> = { seq: record.seq, time: record.time, type: record.type };
  if (record.chain !== undefined && record.chain !== null) fields.chain = record.chain;
  if (record.client_id !== undefined && record.client_id !== null) fields.client_id = record.client_id;
  if (record.sub !== undefined && record.sub !== null) fields.sub = record.sub;
  fields.details = record.details;
  fields.prev_hash = record.prev_hash;
  return fields;
}

/** Hex SHA-256 of the canonical JSON of { chain?, seq, time, type, client_id?, sub?, details, prev_hash }. */
export function computeHash(record: Omit<AuditRecord, 'hash'> & { hash?: string }): string {
  return sha256Hex(canonicalJson(hashedFields(record)));
}

/** An event checked by {@link normalizeEvent}: a private copy of its data and the canonical JSON of its details. */
export interface NormalizedEvent extends AuditEventInput {
  details: Record<string, unknown>;
  /** canonicalJson(details), computed once: the hash of the record embeds it as is. */
  readonly detailsJson: string;
}

/** Checks an event and returns a copy holding only what will be stored (details as plain JSON data). */
export function normalizeEvent(event: AuditEventInput): NormalizedEvent {
  if (typeof event !== 'object' || event === null) throw new InvalidAuditEventError('audit event: must be an object');
  const { type, client_id: clientId, sub, details } = event;
  if (typeof type !== 'string' || type.length > MAX_TYPE_LENGTH || !EVENT_TYPE.test(type)) {
    throw new InvalidAuditEventError(`audit event type: ${JSON.stringify(type)} must look like "token.revoked" (${EVENT_TYPE.source})`);
  }
  for (const [name, value] of [['client_id', clientId], ['sub', sub]] as const) {
    if (value !== undefined && (typeof value !== 'string' || value === '' || value.length > MAX_ID_LENGTH)) {
      throw new InvalidAuditEventError(`audit event ${name}: must be a non-empty string of at most ${MAX_ID_LENGTH} characters`);
    }
  }
  if (details !== undefined && (typeof details !== 'object' || details === null || Array.isArray(details))) {
    throw new InvalidAuditEventError('audit event details: must be an object');
  }
  let text: string;
  try {
    text = canonicalJson(details ?? {});
  } catch (err) {
    throw new InvalidAuditEventError(`audit event details: ${(err as Error).message.replace(/^\$/, 'details')}`);
  }
  if (text.length > MAX_DETAILS_LENGTH) {
    throw new InvalidAuditEventError(`audit event details: ${text.length} characters of JSON, more than ${MAX_DETAILS_LENGTH}`);
  }
  const normalized: NormalizedEvent = { type, details: JSON.parse(text) as Record<string, unknown>, detailsJson: text };
  if (clientId !== undefined) normalized.client_id = clientId;
  if (sub !== undefined) normalized.sub = sub;
  return normalized;
}

/**
 * The canonical JSON that {@link computeHash} hashes, written out directly for a record built from a normalized
 * event (keys in canonical order: chain, client_id, details, prev_hash, seq, sub, time, type), so a new record costs one
 * serialisation of its details instead of three. A unit test holds it equal to canonicalJson of the same fields.
 */
function hashTextOf(chain: string, seq: number, time: string, event: NormalizedEvent, prevHash: string): string {
  const chainMember = chain !== DEFAULT_AUDIT_CHAIN ? `"chain":${JSON.stringify(chain)},` : '';
  const clientId = event.client_id !== undefined ? `"client_id":${JSON.stringify(event.client_id)},` : '';
  const sub = event.sub !== undefined ? `"sub":${JSON.stringify(event.sub)},` : '';
  return `{${chainMember}${clientId}"details":${event.detailsJson},"prev_hash":${JSON.stringify(prevHash)},"seq":${seq},${sub}"time":${JSON.stringify(time)},"type":${JSON.stringify(event.type)}}`;
}

const isNormalized = (event: AuditEventInput): event is NormalizedEvent => typeof (event as Partial<NormalizedEvent>).detailsJson === 'string';

/**
 * Turns events into records that continue the chain after `head` (undefined: an empty log): consecutive seqs, each
 * linked to the one before, stamped with `now()`. Throws InvalidAuditEventError for an event that cannot be stored.
 * Events already passed through {@link normalizeEvent} are not checked again.
 */
export function chainRecords(
  head: AuditRecord | undefined,
  events: AuditEventInput[],
  now: () => Date = () => new Date(),
  chain: string = DEFAULT_AUDIT_CHAIN,
): AuditRecord[] {
  if (chain !== DEFAULT_AUDIT_CHAIN && !AUDIT_CHAIN_ID.test(chain)) throw new InvalidAuditEventError(`audit chain id ${JSON.stringify(chain)} must match ${AUDIT_CHAIN_ID.source}`);
  let seq = head?.seq ?? 0;
  let prevHash = head?.hash ?? GENESIS_HASH;
  return events.map((input) => {
    const event = isNormalized(input) ? input : normalizeEvent(input);
    seq += 1;
    const time = now().toISOString();
    const hash = sha256Hex(hashTextOf(chain, seq, time, event, prevHash));
    const record: AuditRecord = {
      ...(chain !== DEFAULT_AUDIT_CHAIN ? { chain } : {}),
      seq,
      time,
      type: event.type,
      ...(event.client_id !== undefined ? { client_id: event.client_id } : {}),
      ...(event.sub !== undefined ? { sub: event.sub } : {}),
      // The normalized event's private copy: only the one record that gets stored is ever handed out with it.
      details: event.details,
      prev_hash: prevHash,
      hash,
    };
    prevHash = hash;
    return record;
  });
}

/** Why a record is not shaped like one agentauth writes, or undefined when it is. */
function malformed(record: Record<string, unknown>): string | undefined {
  const extra = Object.keys(record).filter((k) => !RECORD_FIELDS.has(k));
  if (extra.length > 0) return `unexpected field${extra.length > 1 ? 's' : ''} ${extra.join(', ')}`;
  if (record.chain !== undefined && (typeof record.chain !== 'string' || !AUDIT_CHAIN_ID.test(record.chain))) return 'chain is not a chain id';
  if (typeof record.time !== 'string') return 'time is not a string';
  if (typeof record.type !== 'string') return 'type is not a string';
  for (const field of ['client_id', 'sub'] as const) {
    if (record[field] !== undefined && typeof record[field] !== 'string') return `${field} is not a string`;
  }
  const { details } = record;
  if (typeof details !== 'object' || details === null || Array.isArray(details)) return 'details is not an object';
  try {
    canonicalJson(details);
  } catch (err) {
    return `details: ${(err as Error).message}`;
  }
  if (typeof record.prev_hash !== 'string' || !HEX_HASH.test(record.prev_hash)) return 'prev_hash is not a hex SHA-256';
  if (typeof record.hash !== 'string' || !HEX_HASH.test(record.hash)) return 'hash is not a hex SHA-256';
  return undefined;
}

/** How far from its stored seq a record's hash is searched for, to tell a moved record from an edited one. */
const MOVE_SEARCH = 16;
/** How many seqs of history the verifier keeps for link checks (bounded memory for any log size). */
const HISTORY = 4096;

interface Seen {
  seq: number;
  hash: string;
}

/**
 * Verifies records one at a time in the order they are given (ascending seq for a healthy log), in memory bounded
 * by a window of recent seqs, so a log of any length can be streamed through it. {@link verifyChain} is the
 * one-call form.
 *
 * Each record gets an "origin seq": its own seq when its hash matches its content, or the nearby seq under which it
 * does (the record was moved, or renumbered, and not re-hashed). Then:
 * - hash matches no seq → `edited` (content changed with the hash left as is); matches another seq → `edited`
 *   (its seq was changed), plus whatever the move caused below;
 * - origin seqs skipped and never seen → `deleted`; seen again → `inserted` (duplicate); seen late → `reordered`;
 * - `prev_hash` not the hash of the record before → `inserted` when it is the hash of the record two before (a
 *   record was spliced in between), otherwise `broken-link` (the record before was rewritten and re-hashed, or
 *   this one was forged).
 * Kinds are diagnostics; any problem at all means the log is not what agentauth wrote.
 */
export class ChainVerifier {
  readonly #startSeq: number;
  readonly #startPrevHash: string | undefined;
  readonly #problems: ChainProblem[] = [];
  /** Records by origin seq, for links (duplicates kept). */
  readonly #byOrigin = new Map<number, Seen[]>();
  /** Records waiting for the record before them to arrive (origin seq of that record → waiters). */
  readonly #awaiting = new Map<number, Array<{ seq: number; prevHash: string }>>();
  /** Origin seqs skipped so far and not yet seen, as inclusive ranges in ascending order. */
  #missing: Array<[number, number]> = [];
  #next: number;
  #checked = 0;
  #head: Seen | undefined;

  constructor(opts: VerifyOptions = {}) {
    this.#startSeq = opts.startSeq ?? 1;
    this.#startPrevHash = opts.startPrevHash ?? (this.#startSeq === 1 ? GENESIS_HASH : undefined);
    this.#next = this.#startSeq;
  }

  #problem(seq: number, kind: ChainProblemKind, detail: string): void {
    this.#problems.push({ seq, kind, detail });
  }

  push(input: AuditRecord): void {
    this.#checked += 1;
    const record = input as unknown as Record<string, unknown>;
    const seq = record.seq;
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) {
      this.#problem(0, 'edited', `record #${this.#checked} has no valid seq (${JSON.stringify(seq) ?? String(seq)})`);
      return;
    }
    const shape = malformed(record);
    if (shape) {
      this.#problem(seq, 'edited', `malformed: ${shape}`);
      this.#order(seq, seq);
      if (typeof record.hash === 'string') this.#remember(seq, { seq, hash: record.hash });
      return;
    }

    // Integrity: which seq does the stored hash belong to?
    let origin = seq;
    if (computeHash(input) !== input.hash) {
      const moved = this.#movedFrom(input);
      if (moved === undefined) {
        this.#problem(seq, 'edited', 'content does not match its hash');
      } else {
        origin = moved;
        this.#problem(seq, 'edited', `seq was changed: its hash is that of seq ${moved} (moved or renumbered)`);
      }
    }

    if (!this.#head || seq > this.#head.seq) this.#head = { seq, hash: input.hash };
    const inOrder = this.#order(origin, seq);
    if (inOrder !== 'duplicate') this.#link(origin, seq, input.prev_hash);
    this.#remember(origin, { seq, hash: input.hash });
  }

  /** A seq near the stored one under which the record's content matches its hash, if any. */
  #movedFrom(record: AuditRecord): number | undefined {
    for (let d = 1; d <= MOVE_SEARCH; d += 1) {
      for (const candidate of [record.seq - d, record.seq + d]) {
        if (candidate >= 1 && computeHash({ ...record, seq: candidate }) === record.hash) return candidate;
      }
    }
    return undefined;
  }

  /** Seq order, in origin seqs. */
  #order(origin: number, seq: number): 'next' | 'gap' | 'late' | 'duplicate' {
    if (origin === this.#next) {
      this.#next += 1;
      return 'next';
    }
    if (origin > this.#next) {
      this.#missing.push([this.#next, origin - 1]);
      this.#next = origin + 1;
      return 'gap';
    }
    const index = this.#missing.findIndex(([lo, hi]) => lo <= origin && origin <= hi);
    if (index >= 0) {
      const [lo, hi] = this.#missing[index]!;
      const rest: Array<[number, number]> = [];
      if (lo < origin) rest.push([lo, origin - 1]);
      if (origin < hi) rest.push([origin + 1, hi]);
      this.#missing.splice(index, 1, ...rest);
      this.#problem(
        seq,
        'reordered',
        origin === seq
          ? `comes after seq ${this.#next - 1}`
          : `holds the event hashed as seq ${origin}, placed after the event of seq ${this.#next - 1}`,
      );
      return 'late';
    }
    if (origin < this.#startSeq) {
      this.#problem(seq, 'inserted', `${origin !== seq ? `hashed as seq ${origin}, ` : ''}before the start of the log (seq ${this.#startSeq})`);
      return 'duplicate';
    }
    const at = [...(this.#byOrigin.get(origin) ?? []).map((s) => s.seq), seq].join(', ');
    this.#problem(seq, 'inserted', `seq ${origin} appears more than once (records at seq ${at}): one was inserted`);
    return 'duplicate';
  }

  #link(origin: number, seq: number, prevHash: string): void {
    if (origin === this.#startSeq) {
      if (this.#startPrevHash !== undefined && prevHash !== this.#startPrevHash) {
        this.#problem(seq, 'broken-link', `prev_hash is not ${this.#startPrevHash === GENESIS_HASH ? 'the genesis hash' : 'the hash of the last record pruned (the checkpoint of the chain)'}`);
      }
      return;
    }
    const before = this.#byOrigin.get(origin - 1);
    if (before) {
      this.#checkLink(origin, seq, prevHash, before);
      return;
    }
    // The record before has not arrived (yet): check when it does; if it never does, it is reported as deleted.
    const waiters = this.#awaiting.get(origin - 1) ?? [];
    waiters.push({ seq, prevHash });
    this.#awaiting.set(origin - 1, waiters);
  }

  #checkLink(origin: number, seq: number, prevHash: string, before: Seen[]): void {
    if (before.some((b) => b.hash === prevHash)) return;
    const twoBack = this.#byOrigin.get(origin - 2)?.find((b) => b.hash === prevHash);
    if (twoBack) {
      const spliced = before.map((b) => b.seq).join(', ');
      this.#problem(before[0]!.seq, 'inserted', `not part of the chain: seq ${seq} links past it to seq ${twoBack.seq}${before.length > 1 ? ` (records at seq ${spliced})` : ''}`);
      return;
    }
    this.#problem(seq, 'broken-link', `prev_hash is not the hash of seq ${before.map((b) => b.seq).join(', ')} (that record was rewritten and re-hashed, or this one forged)`);
  }

  #remember(origin: number, seen: Seen): void {
    const list = this.#byOrigin.get(origin);
    if (list) list.push(seen);
    else this.#byOrigin.set(origin, [seen]);
    const waiters = this.#awaiting.get(origin);
    if (waiters) {
      this.#awaiting.delete(origin);
      for (const w of waiters) this.#checkLink(origin + 1, w.seq, w.prevHash, this.#byOrigin.get(origin)!);
    }
    if (this.#byOrigin.size > 2 * HISTORY) {
      const floor = this.#next - HISTORY;
      for (const key of this.#byOrigin.keys()) if (key < floor) this.#byOrigin.delete(key);
      for (const key of this.#awaiting.keys()) if (key < floor) this.#awaiting.delete(key);
    }
  }

  /** The verdict over everything pushed; problems in seq order. */
  result(): ChainVerification {
    const problems = [...this.#problems];
    for (const [lo, hi] of this.#missing) {
      problems.push({ seq: lo, kind: 'deleted', detail: lo === hi ? 'missing' : `seqs ${lo}–${hi} missing (${hi - lo + 1} records)` });
    }
    problems.sort((a, b) => a.seq - b.seq);
    const verdict: ChainVerification = { ok: problems.length === 0, checked: this.#checked, problems };
    if (this.#head) {
      verdict.headSeq = this.#head.seq;
      verdict.headHash = this.#head.hash;
    }
    return verdict;
  }
}

/**
 * Verifies records given in stored order (ascending seq). See {@link ChainVerifier} for what is reported.
 *
 * Deleting the newest record(s) cannot be seen from the chain alone (what is left is a valid, shorter chain), nor
 * can a rewrite of everything from some seq to the head: compare `headSeq`/`headHash` with a head exported earlier.
 */
export function verifyChain(records: AuditRecord[], opts?: VerifyOptions): ChainVerification {
  const verifier = new ChainVerifier(opts);
  for (const record of records) verifier.push(record);
  return verifier.result();
}

/** The verdict over a log of several writers' chains: each chain verified on its own. */
export interface LogVerification {
  ok: boolean;
  checked: number;
  /** Per chain, sorted by chain id ('' is the default chain). */
  chains: Array<{ chain: string; verification: ChainVerification }>;
}

/**
 * Verifies records of any number of chains, given in any interleaving of chains as long as each chain's records come
 * in stored (ascending seq) order: each record goes to its chain's {@link ChainVerifier}. A record moved to another
 * chain (its `chain` field changed) no longer matches its hash and is reported as edited there, and leaves a gap in
 * its own chain. Removing a whole chain, like truncating one, shows only against heads exported earlier.
 */
export class LogVerifier {
  readonly #chains = new Map<string, ChainVerifier>();
  /** Where pruned chains start: the last record removed (`agentauth audit prune`), by chain. */
  readonly #starts = new Map<string, { seq: number; hash: string }>();
  #checked = 0;

  /**
   * Verifies `chain` as continuing after the record at `seq` with `hash` (a pruned chain's checkpoint) instead of
   * from seq 1. Given before any record of that chain; returns false (and changes nothing) after one.
   */
  startAfter(chain: string, seq: number, hash: string): boolean {
    if (this.#chains.has(chain)) return false;
    this.#starts.set(chain, { seq, hash });
    return true;
  }

  push(record: AuditRecord): void {
    this.#checked += 1;
    const chain = chainOf(record);
    let verifier = this.#chains.get(chain);
    if (!verifier) {
      const start = this.#starts.get(chain);
      verifier = new ChainVerifier(start ? { startSeq: start.seq + 1, startPrevHash: start.hash } : {});
      this.#chains.set(chain, verifier);
    }
    verifier.push(record);
  }

  result(): LogVerification {
    const chains = [...this.#chains.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([chain, verifier]) => ({ chain, verification: verifier.result() }));
    return { ok: chains.every((c) => c.verification.ok), checked: this.#checked, chains };
  }
}

/** {@link LogVerifier} in one call. */
export function verifyLog(records: AuditRecord[]): LogVerification {
  const verifier = new LogVerifier();
  for (const record of records) verifier.push(record);
  return verifier.result();
}
