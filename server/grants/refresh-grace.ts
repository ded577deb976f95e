import { Provider, errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { handler as builtinRefreshGrant } from 'oidc-provider/lib/actions/grants/refresh_token.js';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';
import validateDpop from 'oidc-provider/lib/helpers/validate_dpop.js';

import { RefreshTokenRaceLost, answersUnavailable, failClosedInProvider } from '../../adapters/oidc-adapter.js';
import type { Consumption, ModelStore } from '../../adapters/types.js';
import { bodyReceivedAt } from '../http/body-received.js';
import { sharedRotations } from '../undelivered-rotations.js';
import type { SharedRotationStore } from '../undelivered-rotations.js';

/**
 * The refresh_token grant with a reuse grace (RFC 9700 §4.14.2 leaves the reuse policy to the server).
 *
 * oidc-provider's own handler still does every check and issues every token; this module decides only what a reuse
 * of a rotated refresh token gets:
 * - the winner of a rotation records its successor's id with the consumed token (ModelStore.rotate: consume, store
 *   and record in one call);
 * - a reuse of exactly that token, by the same client, received within the tier's `refreshGraceSeconds` after it was
 *   consumed (when the request's body arrived, server/http/body-received.ts, not when storage let the server handle
 *   it) is answered as a refresh with the recorded successor that does not rotate it: the same successor refresh
 *   token comes back (with a new access token), so concurrent callers converge on one live token;
 * - any other reuse (outside the window, grace 0, no successor recorded in time, or the successor itself already
 *   used) goes to oidc-provider's handler, which revokes the whole grant.
 * A concurrent use that loses the consume race (adapters/oidc-adapter.ts, deferRefreshTokenReuse) is run again: it
 * then sees the token consumed and meets the same decision.
 *
 * A rotation this instance answered 503 (storage failed after the rotation was sent, or the tokens' audit record was
 * refused) may still have been stored: the token is consumed and its successor recorded, and nobody received it. The
 * client retries with the same token, as the 503 tells it to, often after the window (a database paused for seconds
 * applies the rotation late; Retry-After alone is 5 s). Such a rotation is remembered (server/undelivered-rotations.ts)
 * and a reuse of its token gets the grace answer for 15 minutes, not a revocation and a false theft alarm, at any
 * instance sharing the store. What is remembered is the rotation to the successor it sent to be stored: if that
 * rotation never reached the store, the token stays unused, the retry rotates it, and a later reuse of the token is
 * reuse as ever (the successor recorded then is not the one the 503 was for).
 */
export interface RefreshGraceDeps {
  refreshTokens: Pick<ModelStore, 'consumption' | 'setSuccessor'>;
  /** The client's tier `refreshGraceSeconds`. */
  graceSeconds(client: NonNullable<KoaContextWithOIDC['oidc']['client']>): number;
  health?: { markDown(err: unknown): void };
  /** How long a reuse waits for the rotation's winner to record its successor (ms). */
  successorWaitMs?: number;
  /** Where a rotation answered 503 is recorded for the other instances (server/undelivered-rotations.ts). */
  undelivered: SharedRotationStore;
}

interface RefreshState {
  /** The refresh token value the grace decision applies to in this request. */
  presented: string;
  /** After a lost consume race: read the consumption mark even if the record does not show it yet. */
  rerun: boolean;
  /** Set while re-issuing the successor of this rotated token. */
  graceFrom?: string;
  /** The DPoP proof of this request has been checked against replay once (a re-run must not count it twice). */
  replayChecked: boolean;
  /** A rotation whose consume waits for its successor's save (see consumeWithItsSuccessor below). */
  rotation?: PendingRotation;
  /** The token this request set out to rotate (consumed, or about to be): remembered if the answer is a 503. */
  rotated?: string;
  /** The successor that rotation sent to be stored: a 503 is remembered for the rotation to this one only. */
  rotatedTo?: string;
}

interface PendingRotation {
  consumes: string;
  token: { jti: string; emit(event: string): void };
  recordSuccessor: boolean;
  /** Set once the store has consumed, stored and recorded (adapters/oidc-adapter.ts refreshTokenRotation). */
  stored: boolean;
}

const states = new WeakMap<object, RefreshState>();

/**
 * For the oidc adapter (refreshTokenRotation): the rotation that storing refresh token `id` completes in the request
 * being handled, if any. The successor oidc-provider saves is the request's RefreshToken entity.
 */
export function pendingRotation(id: string): { consumes: string; recordSuccessor: boolean } | undefined {
  const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
  const rotation = ctx ? states.get(ctx)?.rotation : undefined;
  if (!rotation || rotation.stored || (ctx!.oidc.entities as { RefreshToken?: { jti?: string } }).RefreshToken?.jti !== id) return undefined;
  if (id === rotation.consumes) return undefined;
  rotation.stored = true;
  states.get(ctx!)!.rotatedTo = id;
  return { consumes: rotation.consumes, recordSuccessor: rotation.recordSuccessor };
}

/** True while the request is a grace re-issue: the refresh grant must not rotate the successor it hands back. */
export function isGraceReissue(ctx: object): boolean {
  return states.get(ctx)?.graceFrom !== undefined;
}

class GraceRedirect extends Error {
  constructor(
    readonly successor: string,
    /** Re-issued outside the window, because this instance answered the rotation 503. */
    readonly undelivered: boolean,
  ) {
    super('grace re-issue of a rotated refresh token');
  }
}

interface StoredRefreshToken {
  jti: string;
  clientId?: string;
  consumed?: number;
  /** The DPoP key thumbprint the token is bound to. */
  jkt?: string;
}
type FindRefreshToken = (value: string, options?: object) => Promise<StoredRefreshToken | undefined>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function installRefreshGrace(provider: Provider, deps: RefreshGraceDeps): void {
  const failClosed = <T>(fn: () => Promise<T>) => failClosedInProvider(fn, deps.health);
  const waitMs = deps.successorWaitMs ?? 2000;
  const undelivered = sharedRotations('refresh_token', deps.undelivered);

  /** The successor a reuse of `token` may get (and whether only as an undelivered rotation), or undefined to revoke. */
  async function graceSuccessor(ctx: KoaContextWithOIDC, token: StoredRefreshToken, mark: Consumption): Promise<{ successor: string; undelivered: boolean } | undefined> {
    const client = ctx.oidc.client;
    // Only for the client the token was issued to (a mismatch is refused by the handler's own check, with no revocation).
    if (!client || token.clientId !== client.clientId) return undefined;
    const grace = deps.graceSeconds(client);
    // Measured when this request's body (the token) was received, not when storage let the server get to it.
    const late = Math.floor(bodyReceivedAt(ctx.req) / 1000) - mark.at > grace;
    // Only the rotation that used the token up counts (the successor recorded with it): a 503 remembered for a rotation
    // that was never stored says nothing about one a retry made later, answered to whoever made it.
    const answeredUnavailable = late && mark.successor !== undefined && (await failClosed(() => undelivered.has(token.jti, mark.successor)));
    if (grace <= 0 || (late && !answeredUnavailable)) return undefined;
    let successor = mark.successor;
    const until = Date.now() + waitMs;
    while (successor === undefined && Date.now() < until) {
      await sleep(20);
      const current = await failClosed(() => deps.refreshTokens.consumption(token.jti));
      if (!current) return undefined; // revoked meanwhile
      successor = current.successor;
    }
    // The rotation's winner has not recorded its successor (it may have failed): refuse, but revoke nothing yet.
    if (successor === undefined) throw new errors.InvalidGrant('refresh token was rotated moments ago and its successor is not available; retry');
    return { successor, undelivered: answeredUnavailable };
  }

  /**
   * RFC 9449 §5: a refresh token issued to a public client that presents a DPoP proof MUST be bound to its key. A grace
   * re-issue hands back the successor as it was stored, without rotating it (refresh-binding.ts binds only what is
   * saved): a successor the first request rotated without a proof is a bearer token, and cannot be the answer to a
   * request that sends one. Refused, revoking nothing, as a grace request with another key is by the handler.
   */
  async function refuseUnboundForAProof(ctx: KoaContextWithOIDC, successor: StoredRefreshToken): Promise<void> {
    if (successor.jkt !== undefined || ctx.oidc.client?.clientAuthMethod !== 'none') return;
    if (!(await validateDpop(provider, ctx))) return;
    throw new errors.InvalidGrant(
      'refresh token was rotated moments ago by a request without a DPoP proof: its successor is not bound to a key and is not handed to a request with one (RFC 9449 section 5); use the successor the first request received',
    );
  }

  // The handler looks its refresh token up through the model; for the token this request presents, the lookup also
  // applies the grace decision (before the handler's own "already used" branch revokes the grant).
  const model = provider.RefreshToken as unknown as { find: FindRefreshToken };
  const find: FindRefreshToken = model.find.bind(model);
  model.find = async (value, options) => {
    const token = await find(value, options);
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    const state = ctx && states.get(ctx);
    if (!ctx || !token || !state || value !== state.presented) return token;
    if (state.graceFrom !== undefined) await refuseUnboundForAProof(ctx, token);
    if (token.consumed === undefined && !state.rerun && state.graceFrom === undefined) return token;
    const mark = await failClosed(() => deps.refreshTokens.consumption(token.jti));
    if (!mark) return token;
    token.consumed = mark.at;
    // The successor being re-issued has itself been used: no second hop, the handler revokes the grant.
    if (state.graceFrom !== undefined) return token;
    const grace = await graceSuccessor(ctx, token, mark);
    if (grace !== undefined) throw new GraceRedirect(grace.successor, grace.undelivered);
    return token;
  };

  const helpers: Record<string, (...args: never[]) => unknown> = Object.fromEntries(
    Object.entries(grantHelpers).map(([name, helper]) => [name, (helper as (...args: unknown[]) => unknown).bind(undefined, provider)]),
  );
  const checkDpopReplay = helpers.checkDpopReplay as unknown as (ctx: KoaContextWithOIDC, ...rest: unknown[]) => Promise<void>;
  helpers.checkDpopReplay = (async (ctx: KoaContextWithOIDC, ...rest: unknown[]) => {
    const state = states.get(ctx);
    if (state?.replayChecked) return;
    await checkDpopReplay(ctx, ...rest);
    if (state) state.replayChecked = true;
  }) as never;

  const run = async (ctx: KoaContextWithOIDC) => {
    await builtinRefreshGrant(provider, helpers, ctx);
    // A consume deferred to a save that never came (not oidc-provider 9.13.3's order): done now, inside the run, so
    // that a lost race here is re-run like any other.
    const state = states.get(ctx);
    const left = state?.rotation;
    if (left) {
      state!.rotation = undefined;
      await consume.call(left.token);
    }
  };

  async function handler(ctx: KoaContextWithOIDC): Promise<void> {
    const presented = ctx.oidc.params?.refresh_token;
    if (typeof presented !== 'string' || !presented) return run(ctx);
    const state: RefreshState = { presented, rerun: false, replayChecked: false };
    states.set(ctx, state);
    try {
      await decide(ctx, state, presented);
    } catch (err) {
      if (state.rotated !== undefined && state.rotatedTo !== undefined && answersUnavailable(err)) await undelivered.add(state.rotated, state.rotatedTo);
      throw err;
    }
    // The tokens' audit record, written after this (server/audit/trail.ts), can still turn the answer into a 503.
    const { rotated, rotatedTo } = state;
    if (rotated !== undefined && rotatedTo !== undefined) ((ctx.state.auditRefused ??= []) as Array<() => Promise<void>>).push(() => undelivered.add(rotated, rotatedTo));
  }

  async function decide(ctx: KoaContextWithOIDC, state: RefreshState, presented: string): Promise<void> {
    try {
      try {
        await run(ctx);
      } catch (err) {
        if (!(err instanceof RefreshTokenRaceLost)) throw err;
        // Another request rotated the token (and answered with its successor): this one's rotation was not stored.
        state.rotated = undefined;
        state.rotatedTo = undefined;
        state.rerun = true;
        await run(ctx);
      }
    } catch (err) {
      if (!(err instanceof GraceRedirect)) throw err;
      state.graceFrom = presented;
      state.presented = err.successor;
      state.rerun = false;
      (ctx.oidc.params as Record<string, unknown>).refresh_token = err.successor;
      await run(ctx);
      ctx.state.refreshGrace = err.undelivered ? { grace: true, after_unavailable: true } : { grace: true };
    }
  }

  // A rotation consumes the presented token, stores its successor and records the successor with the consumed token
  // (for a reuse within the grace window). oidc-provider consumes first and saves the successor right after, with
  // nothing in between; the consume is deferred to that save, so that the store does all three in one rotate call:
  // on the embedded store one job in one commit (it took up to three), whose later writes happen only if the consume
  // won. A lost consume throws RefreshTokenRaceLost from the save, which the handler above runs again.
  type RefreshTokenInstance = { jti: string; emit(event: string): void };
  const prototype = (provider.RefreshToken as unknown as {
    prototype: RefreshTokenInstance & { consume(): Promise<void>; save(...args: unknown[]): Promise<string> };
  }).prototype;
  const consume = prototype.consume;
  const save = prototype.save;
  prototype.consume = async function consumeWithItsSuccessor(this: RefreshTokenInstance): Promise<void> {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    const state = ctx && states.get(ctx);
    const client = ctx?.oidc.client;
    if (!state || !client || state.graceFrom !== undefined) return consume.call(this);
    state.rotation = { consumes: this.jti, token: this, recordSuccessor: deps.graceSeconds(client) > 0, stored: false };
    state.rotated = this.jti;
  };
  prototype.save = async function saveCompletingRotation(this: RefreshTokenInstance, ...args: unknown[]): Promise<string> {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    const state = ctx && states.get(ctx);
    const rotation = state?.rotation;
    if (!rotation) return save.apply(this, args);
    let value: string;
    try {
      value = await save.apply(this, args); // the adapter's upsert asks pendingRotation() and completes the rotation
    } finally {
      if (state.rotation === rotation) state.rotation = undefined;
    }
    if (!rotation.stored) {
      // Not completed by the store (another token was saved first): consume the old way, then record the successor.
      state.rotatedTo = this.jti;
      await consume.call(rotation.token);
      if (rotation.recordSuccessor) await failClosed(() => deps.refreshTokens.setSuccessor(rotation.consumes, this.jti));
      return value;
    }
    rotation.token.emit('consumed'); // what oidc-provider's consume emits once the adapter has consumed
    return value;
  };

  provider.registerGrantType('refresh_token', handler as never, ['refresh_token', 'scope', 'resource'], ['resource']);
}
