import { hash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import type { AdapterPayload, ModelStore, NonceStore } from '../../adapters/types.js';

/**
 * A stored client's revision: a random token written with every change made here, so that every state a client's
 * record passes through has a name no other state has. Records written before it existed are named by a hash of
 * what is stored.
 */
export const REVISION_FIELD = 'agentauth_rev';

/** What a change does to the record it was shown. */
export type ClientDecision = { write: AdapterPayload } | { destroy: true } | { keep: true };

export interface ClientChange {
  /** The record as stored when the change was made (the one `decide` was shown). */
  before: AdapterPayload;
  decision: ClientDecision;
  /** What was stored, revision included (for `write`). */
  after?: AdapterPayload;
}

/** The client's record is gone (deleted by another change, or never there). */
export class ClientGone extends Error {
  constructor(readonly clientId: string) {
    super(`no client ${clientId}`);
    this.name = 'ClientGone';
  }
}

/** Another change of the client held its record for longer than a change takes: it is running slowly, or died. */
export class ClientChangeInProgress extends Error {
  constructor(readonly clientId: string) {
    super(`another change of client ${clientId} is in progress, or stopped halfway (its process ended between claiming the record and writing it, which blocks changes of this client for about a minute); retry shortly`);
    this.name = 'ClientChangeInProgress';
  }
}

/**
 * How long a claimed revision stays claimed: well beyond what the steps between a claim and its write take (an audit
 * record and a write, each bounded by storage.timeoutMs, at most 10 s), so a claim never lapses under a live change;
 * and the time after which a change whose process ended between its claim and its write stops blocking the client
 * (on MongoDB, once the expired marker is removed: by the TTL monitor, every 60 s, or by a server's sweep).
 */
export const CLAIM_TTL_SECONDS = 60;
/** How long a change that lost a claim waits for the winner's write before answering ClientChangeInProgress. */
const WAIT_MS = 5_000;
/** The waiting change reads the record after 20 ms, then at doubling intervals up to 250 ms. */
const POLL_MS = 20;
const MAX_POLL_MS = 250;
/** A change whose write failed frees its record from 250 ms on, retrying at doubling intervals up to 2 s (#release). */
const RELEASE_FIRST_MS = 250;
const RELEASE_MAX_MS = 2_000;
/** How long before its claim's lapse a failed change stops trying to free the record (at most a third of the claim's life). */
const RELEASE_MARGIN_MS = 20_000;
/** Changes of one client that can win before a waiting one gives up (a bound, not a queue position). */
const MAX_ROUNDS = 100;

export function revisionOf(payload: AdapterPayload): string {
  const stored = payload[REVISION_FIELD];
  return typeof stored === 'string' ? stored : `h${hash('sha256', JSON.stringify(payload), 'base64url').slice(0, 22)}`;
}

const newRevision = () => randomBytes(16).toString('base64url');

/**
 * Every change of a stored client's record, from any process sharing the store (servers, `--workers`, the CLI):
 * administration (server/admin/client-admin.ts) and oidc-provider's own writes (an RFC 7592 update or delete, through
 * the Client adapter in server/admin/disabled-clients.ts).
 *
 * A change is a compare-and-set built on the store's unique inserts (the only atomic primitive FerretDB has, see
 * NonceStore.takeAttempt): it reads the record, decides, then claims the record's current revision, once: of any
 * number of changes shown that revision, in any number of processes, exactly one claims it, and only that one writes.
 * The others wait for its write, read the new record and decide again. So no change is made to a record other than
 * the one it was decided on: a client deleted stays deleted, a disabled one is not enabled by a rotate-secret or by
 * the client's own update that read it before the disable.
 */
export class ClientWrites {
  readonly #claimTtl: number;
  readonly #waitMs: number;

  constructor(
    private readonly clients: Pick<ModelStore, 'find' | 'upsert' | 'destroy'>,
    private readonly claims: Pick<NonceStore, 'takeAttempt'>,
    /** Shorter bounds than CLAIM_TTL_SECONDS and WAIT_MS, for tests of a change that stops halfway. */
    timing: { claimTtlSeconds?: number; waitMs?: number } = {},
  ) {
    this.#claimTtl = timing.claimTtlSeconds ?? CLAIM_TTL_SECONDS;
    this.#waitMs = timing.waitMs ?? WAIT_MS;
  }

  /**
   * Applies `decide` to the record as stored, atomically as above. `commit` runs once the change holds the record
   * (claimed, or nothing to write) and before the write: the audit record goes there, so that it names a change that
   * is about to be made, and, if it fails, the change is not made (the record is written back unchanged under a new
   * revision, which frees it for the next change).
   * Throws ClientGone when there is no record (or it was deleted meanwhile), ClientChangeInProgress when another
   * change holds it too long, and whatever `decide` or `commit` throws.
   */
  async change(
    clientId: string,
    decide: (current: AdapterPayload) => ClientDecision,
    commit?: (current: AdapterPayload, decision: ClientDecision) => Promise<void>,
  ): Promise<ClientChange> {
    for (let round = 0; round < MAX_ROUNDS; round += 1) {
      const before = await this.clients.find(clientId);
      if (!before) throw new ClientGone(clientId);
      const decision = decide(before);
      const revision = revisionOf(before);
      if ('keep' in decision) {
        await commit?.(before, decision);
        return { before, decision };
      }
      const claimedAt = Date.now();
      if (await this.claims.takeAttempt(claimKey(clientId, revision), 1, this.#claimTtl)) {
        try {
          await commit?.(before, decision);
        } catch (err) {
          // Nothing is changed, but the record must not stay claimed: this change still holds it, so it writes the
          // record back as it was, under a new revision (a store that refused the commit may refuse this too: then
          // again in the background, as after a failed write).
          await this.clients.upsert(clientId, { ...before, [REVISION_FIELD]: newRevision() }).catch(() => void this.#release(clientId, before, revision, claimedAt));
          throw err;
        }
        const after = 'destroy' in decision ? undefined : { ...decision.write, [REVISION_FIELD]: newRevision() };
        try {
          if (after === undefined) await this.clients.destroy(clientId);
          else await this.clients.upsert(clientId, after);
        } catch (err) {
          // The write failed (the store is down or timed out): the record stays claimed, which would hold every other
          // change of this client until the claim lapses. This change still holds it, so once the store answers it
          // puts the record back as it was, under a new revision, which frees it.
          void this.#release(clientId, before, revision, claimedAt);
          throw err;
        }
        return after === undefined ? { before, decision } : { before, decision, after };
      }
      await this.#waitPast(clientId, revision);
    }
    throw new ClientChangeInProgress(clientId);
  }

  /** A record with no stored predecessor (a registration): written with its first revision. */
  async create(clientId: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    await this.clients.upsert(clientId, { ...payload, [REVISION_FIELD]: newRevision() }, expiresIn);
  }

  /**
   * After a change's write failed, in the background: the record written back as it was (`before`, a new revision),
   * as soon as the store takes it, if it is still at the revision this change claimed. Not if it moved on or is gone:
   * the failed write was applied after all (the 503 said it might be). Only while the claim certainly holds (a third of
   * its life is left as margin for the read and the write themselves): once it may have lapsed, another change may hold
   * the record, and the claim's lapse frees it anyway. The timers do not keep a process (the CLI) alive.
   */
  async #release(clientId: string, before: AdapterPayload, revision: string, claimedAt: number): Promise<void> {
    const lifeMs = this.#claimTtl * 1000;
    const until = claimedAt + lifeMs - Math.min(RELEASE_MARGIN_MS, lifeMs / 3);
    for (let pause = RELEASE_FIRST_MS; Date.now() + pause < until; pause = Math.min(pause * 2, RELEASE_MAX_MS)) {
      await sleep(pause, undefined, { ref: false });
      try {
        const now = await this.clients.find(clientId);
        if (!now || revisionOf(now) !== revision || Date.now() >= until) return;
        await this.clients.upsert(clientId, { ...before, [REVISION_FIELD]: newRevision() });
        return;
      } catch {
        // The store still fails: try again after the next pause.
      }
    }
  }

  /** Until the record is no longer at `revision` (changed, or deleted); ClientChangeInProgress after the wait. */
  async #waitPast(clientId: string, revision: string): Promise<void> {
    const deadline = Date.now() + this.#waitMs;
    for (let pause = POLL_MS; Date.now() < deadline; pause = Math.min(pause * 2, MAX_POLL_MS)) {
      await sleep(pause);
      const now = await this.clients.find(clientId);
      if (!now || revisionOf(now) !== revision) return;
    }
    throw new ClientChangeInProgress(clientId);
  }
}

/** One claim per (client, revision); the client id hashed, since ids may be 2,048 characters and keys are bounded. */
const claimKey = (clientId: string, revision: string) => `client-rev:${hash('sha256', clientId, 'base64url')}:${revision}`;
