import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { hash } from 'node:crypto';

import type { NonceStore } from '../adapters/types.js';

/** How long a rotation answered 503 keeps the grace answer for its token. */
const UNDELIVERED_MS = 15 * 60_000;
/** At most this many are remembered per kind of credential (the oldest go first). */
const MAX_UNDELIVERED = 10_000;
/** How long a worker waits for the primary's answer (an answer not come by then counts as "not remembered"). */
export const PRIMARY_TIMEOUT_MS = 1000;

/** The single-use credentials whose undelivered rotations are remembered, each in its own set. */
export type RotatedCredential = 'refresh_token' | 'registration_access_token';

/**
 * Rotations of a single-use credential that were answered 503 (storage failed after the rotation was sent, or the
 * answer's audit record was refused): the credential may be used up and its recorded successor delivered to nobody.
 * A retry of such a credential may get that successor (server/grants/refresh-grace.ts for refresh tokens,
 * server/http/registration-steps.ts for RFC 7592 registration access tokens). Kept by a hash of the credential with the
 * successor that rotation sent to be stored (never either value itself), for UNDELIVERED_MS: a retry asks with the
 * successor the store recorded for the credential, so a 503 for a rotation that was never stored says nothing about
 * the rotation that used the credential up later (answered to whoever made it). A delete's consume has no successor
 * and is kept by the credential alone.
 *
 * Held by the process that serves, or under `agentauth start --workers N` by the cluster's primary for every worker
 * (a retry on a new connection reaches any worker): a worker asks the primary over the cluster's IPC channel, and a
 * 503 is answered only once the primary has the rotation. Another instance (another host, or this one after a
 * restart) learns of it from the store: sharedRotations, below, records it there.
 */
export interface UndeliveredRotations {
  /** Remembers the rotation of `credential` to `successor` as answered 503; resolves once it is remembered (or could not be). */
  add(credential: string, successor?: string): Promise<void>;
  /** Whether the rotation of `credential` to `successor` was answered 503 (within UNDELIVERED_MS). */
  has(credential: string, successor?: string): Promise<boolean>;
  /** Whether it was, forgetting it (at most one request gets the grace answer for one rotation). */
  take(credential: string, successor?: string): Promise<boolean>;
}

type Op = 'add' | 'has' | 'take';

/**
 * The hash a rotation is remembered by: neither the credential nor its successor leaves the request (nor reaches the
 * primary or the store). Of a JSON array, so that no credential alone spells a pair.
 */
const keyOf = (credential: string, successor?: string) => hash('sha256', JSON.stringify(successor === undefined ? [credential] : [credential, successor]), 'base64url');

/** One set of remembered rotations, by key (a credential's hash), bounded and expiring. */
export class RememberedRotations {
  readonly #until = new Map<string, number>();

  apply(op: Op, key: string): boolean {
    if (op === 'add') {
      this.#until.delete(key);
      this.#until.set(key, Date.now() + UNDELIVERED_MS);
      while (this.#until.size > MAX_UNDELIVERED) this.#until.delete(this.#until.keys().next().value!);
      return true;
    }
    const until = this.#until.get(key);
    if (until === undefined) return false;
    if (until <= Date.now() || op === 'take') this.#until.delete(key);
    return until > Date.now();
  }

  /** The keys still remembered, with until when (expired ones are dropped on the way). */
  *live(): Generator<[string, number]> {
    for (const [key, until] of this.#until) {
      if (until > Date.now()) yield [key, until];
      else this.#until.delete(key);
    }
  }

  get size(): number {
    return this.#until.size;
  }
}

/** This process's own sets: a server without workers, and the primary of one with workers. */
const held = new Map<RotatedCredential, RememberedRotations>();
const heldFor = (kind: RotatedCredential) => {
  let set = held.get(kind);
  if (!set) held.set(kind, (set = new RememberedRotations()));
  return set;
};

const ASK = 'agentauth:undelivered';
const ANSWER = 'agentauth:undelivered-answer';

interface Ask {
  type: typeof ASK;
  id: number;
  kind: RotatedCredential;
  op: Op;
  key: string;
}

interface Answer {
  type: typeof ANSWER;
  id: number;
  value: boolean;
}

const KINDS: ReadonlySet<unknown> = new Set<RotatedCredential>(['refresh_token', 'registration_access_token']);
const OPS: ReadonlySet<unknown> = new Set<Op>(['add', 'has', 'take']);

function isAsk(message: unknown): message is Ask {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Partial<Ask>;
  return m.type === ASK && typeof m.id === 'number' && KINDS.has(m.kind) && OPS.has(m.op) && typeof m.key === 'string' && m.key.length <= 64;
}

function isAnswer(message: unknown): message is Answer {
  if (typeof message !== 'object' || message === null) return false;
  const m = message as Partial<Answer>;
  return m.type === ANSWER && typeof m.id === 'number' && typeof m.value === 'boolean';
}

/** In the primary of `start --workers N`: holds every worker's remembered rotations. Call once, before forking. */
export function serveUndeliveredRotations(): void {
  cluster.on('message', (worker: Worker, message: unknown) => {
    if (!isAsk(message)) return;
    const value = heldFor(message.kind).apply(message.op, message.key);
    if (worker.isConnected()) worker.send({ type: ANSWER, id: message.id, value } satisfies Answer);
  });
}

/** A worker's questions to the primary waiting for their answer. */
const waiting = new Map<number, { resolve(value: boolean): void; timer: NodeJS.Timeout }>();
let nextId = 0;
let listening = false;

function askPrimary(kind: RotatedCredential, op: Op, key: string): Promise<boolean> {
  if (!listening) {
    listening = true;
    process.on('message', (message: unknown) => {
      if (!isAnswer(message)) return;
      const pending = waiting.get(message.id);
      if (!pending) return;
      waiting.delete(message.id);
      clearTimeout(pending.timer);
      pending.resolve(message.value);
    });
  }
  return new Promise<boolean>((resolve) => {
    // The primary gone or not answering: nothing is remembered, and a retry is refused as a reuse would be (fail closed).
    if (!process.send || !process.connected) {
      resolve(false);
      return;
    }
    const id = nextId++;
    const timer = setTimeout(() => {
      waiting.delete(id);
      resolve(false);
    }, PRIMARY_TIMEOUT_MS);
    timer.unref();
    waiting.set(id, { resolve, timer });
    process.send({ type: ASK, id, kind, op, key } satisfies Ask);
  });
}

/** The remembered rotations of `kind` for this process: its own, or in a cluster worker the primary's. */
export function undeliveredRotations(kind: RotatedCredential): UndeliveredRotations {
  const run = (op: Op, credential: string, successor?: string): Promise<boolean> => {
    const key = keyOf(credential, successor);
    return cluster.isWorker ? askPrimary(kind, op, key) : Promise.resolve(heldFor(kind).apply(op, key));
  };
  return {
    add: async (credential, successor) => {
      await run('add', credential, successor);
    },
    has: (credential, successor) => run('has', credential, successor),
    take: (credential, successor) => run('take', credential, successor),
  };
}

/** Where an instance records, for the others sharing its store, the rotations it answered 503. */
export type SharedRotationStore = Pick<NonceStore, 'claim' | 'boundTo' | 'consume'>;

/** How long add() waits for the store to take the record before the 503 goes out (the rest is retried every second). */
export const STORE_WAIT_MS = 250;
const FLUSH_EVERY_MS = 1000;
const STORED = 'answered-503';

/** Rotations answered 503, known to every instance that shares the store (sharedRotations). */
export interface SharedRotations extends UndeliveredRotations {
  /**
   * Forgets a delete's consume of `credential` (remembered without a successor) after a consume of it succeeded (its
   * earlier 503 came before the consume was stored). Not waited for by the caller. A rotation needs no forgetting:
   * the one that succeeded stored another successor than the one a 503 remembered.
   */
  forget(credential: string): Promise<void>;
}

/**
 * Rotations answered 503, known to every instance that shares the store, not only the one that answered (behind a
 * load balancer, the retry reaches any): remembered here as undeliveredRotations(kind) does (this process, or the
 * primary of `--workers N`), and recorded in the store as a claim (NonceStore.claim, keyed
 * `undelivered:<kind>:<SHA-256 of the credential and its successor>`, for what is left of the 15 minutes; never the credential). The
 * record is written at once when the store takes it (the 503 waits up to STORE_WAIT_MS for that), else retried every
 * second while it is remembered: a store that failed the answer is usually back before the client's retry
 * (Retry-After: 5).
 *
 * has() asks this instance, then the store. take() decides in the store, so that of any number of retries, at any
 * instances, exactly one gets the successor: the instance that still remembers the rotation makes sure its record is
 * there (a claim: idempotent) and every taker consumes it (NonceStore.consume: one winner). A record that is neither
 * remembered here nor in the store (an instance restarted before it wrote it) is not known.
 */
export function sharedRotations(kind: RotatedCredential, store: SharedRotationStore): SharedRotations {
  const local = undeliveredRotations(kind);
  const storeKey = (key: string) => `undelivered:${kind}:${key}`;
  /** Rotations not yet recorded in the store (a bounded, expiring set like the memory's own). */
  const pending = new RememberedRotations();
  let flushing: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;

  const schedule = () => {
    if (pending.size === 0 || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      void flush();
    }, FLUSH_EVERY_MS);
    timer.unref();
  };
  const flush = (): Promise<void> =>
    (flushing ??= (async () => {
      try {
        for (const [key, until] of pending.live()) {
          await store.claim(storeKey(key), STORED, Math.max(1, Math.ceil((until - Date.now()) / 1000)));
          pending.apply('take', key);
        }
      } catch {
        // The store still fails: the timer tries again.
      } finally {
        flushing = undefined;
        schedule();
      }
    })());

  return {
    async add(credential, successor) {
      await local.add(credential, successor);
      pending.apply('add', keyOf(credential, successor));
      let waited: NodeJS.Timeout | undefined;
      await Promise.race([flush(), new Promise<void>((resolve) => (waited = setTimeout(resolve, STORE_WAIT_MS)))]);
      clearTimeout(waited);
    },
    async has(credential, successor) {
      if (await local.has(credential, successor)) return true;
      return (await store.boundTo(storeKey(keyOf(credential, successor)))) !== undefined;
    },
    async take(credential, successor) {
      const key = keyOf(credential, successor);
      const mine = await local.take(credential, successor);
      // Not to be written by the flush from here on: whatever is in the store now, the consume below decides on.
      pending.apply('take', key);
      await flushing;
      try {
        if (mine) await store.claim(storeKey(key), STORED, UNDELIVERED_MS / 1000);
        return await store.consume(storeKey(key));
      } catch (err) {
        // Undecided (the store failed): still remembered here, for the next retry.
        if (mine) {
          await local.add(credential, successor);
          pending.apply('add', key);
          schedule();
        }
        throw err;
      }
    },
    async forget(credential) {
      const key = keyOf(credential);
      await local.take(credential);
      pending.apply('take', key);
      await flushing;
      if ((await store.boundTo(storeKey(key))) !== undefined) await store.consume(storeKey(key));
    },
  };
}
