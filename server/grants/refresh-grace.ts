import { Provider, errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { handler as builtinRefreshGrant } from 'oidc-provider/lib/actions/grants/refresh_token.js';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';

import { RefreshTokenRaceLost, failClosedInProvider } from '../../adapters/oidc-adapter.js';
import type { Consumption, ModelStore } from '../../adapters/types.js';

/**
 * The refresh_token grant with a reuse grace (RFC 9700 §4.14.2 leaves the reuse policy to the server).
 *
 * oidc-provider's own handler still does every check and issues every token; this module decides only what a reuse
 * of a rotated refresh token gets:
 * - the winner of a rotation records its successor's id with the consumed token (ModelStore.setSuccessor, once), as
 *   the successor is saved;
 * - a reuse of exactly that token, by the same client, within the tier's `refreshGraceSeconds` after it was consumed,
 *   is answered as a refresh with the recorded successor that does not rotate it: the same successor refresh token
 *   comes back (with a new access token), so concurrent callers converge on one live token;
 * - any other reuse (outside the window, grace 0, no successor recorded in time, or the successor itself already
 *   used) goes to oidc-provider's handler, which revokes the whole grant.
 * A concurrent use that loses the consume race (adapters/oidc-adapter.ts, deferRefreshTokenReuse) is run again: it
 * then sees the token consumed and meets the same decision.
 */
export interface RefreshGraceDeps {
  refreshTokens: Pick<ModelStore, 'consumption' | 'setSuccessor'>;
  /** The client's tier `refreshGraceSeconds`. */
  graceSeconds(client: NonNullable<KoaContextWithOIDC['oidc']['client']>): number;
  health?: { markDown(err: unknown): void };
  /** How long a reuse waits for the rotation's winner to record its successor (ms). */
  successorWaitMs?: number;
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
}

const states = new WeakMap<object, RefreshState>();

/** True while the request is a grace re-issue: the refresh grant must not rotate the successor it hands back. */
export function isGraceReissue(ctx: object): boolean {
  return states.get(ctx)?.graceFrom !== undefined;
}

class GraceRedirect extends Error {
  constructor(readonly successor: string) {
    super('grace re-issue of a rotated refresh token');
  }
}

interface StoredRefreshToken {
  jti: string;
  clientId?: string;
  consumed?: number;
}
type FindRefreshToken = (value: string, options?: object) => Promise<StoredRefreshToken | undefined>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function installRefreshGrace(provider: Provider, deps: RefreshGraceDeps): void {
  const failClosed = <T>(fn: () => Promise<T>) => failClosedInProvider(fn, deps.health);
  const waitMs = deps.successorWaitMs ?? 2000;

  /** The successor a reuse of `token` may get, or undefined when the reuse must revoke. */
  async function graceSuccessor(ctx: KoaContextWithOIDC, token: StoredRefreshToken, mark: Consumption): Promise<string | undefined> {
    const client = ctx.oidc.client;
    // Only for the client the token was issued to (a mismatch is refused by the handler's own check, with no revocation).
    if (!client || token.clientId !== client.clientId) return undefined;
    const grace = deps.graceSeconds(client);
    if (grace <= 0 || Math.floor(Date.now() / 1000) - mark.at > grace) return undefined;
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
    return successor;
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
    if (token.consumed === undefined && !state.rerun && state.graceFrom === undefined) return token;
    const mark = await failClosed(() => deps.refreshTokens.consumption(token.jti));
    if (!mark) return token;
    token.consumed = mark.at;
    // The successor being re-issued has itself been used: no second hop, the handler revokes the grant.
    if (state.graceFrom !== undefined) return token;
    const successor = await graceSuccessor(ctx, token, mark);
    if (successor !== undefined) throw new GraceRedirect(successor);
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

  const run = (ctx: KoaContextWithOIDC) => builtinRefreshGrant(provider, helpers, ctx);

  async function handler(ctx: KoaContextWithOIDC): Promise<void> {
    const presented = ctx.oidc.params?.refresh_token;
    if (typeof presented !== 'string' || !presented) return run(ctx);
    const state: RefreshState = { presented, rerun: false, replayChecked: false };
    states.set(ctx, state);
    try {
      try {
        await run(ctx);
      } catch (err) {
        if (!(err instanceof RefreshTokenRaceLost)) throw err;
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
      ctx.state.refreshGrace = { grace: true };
      return;
    }
  }

  // A rotation records its successor with the consumed token, for a reuse within the grace window. The record is
  // written in the same event-loop turn as the successor itself, so that on the embedded store both travel to the
  // writer thread together and share one commit (one fsync, not two, per refresh); the answer waits for both.
  type SavedToken = { jti?: string; generateTokenId(): string };
  const prototype = (provider.RefreshToken as unknown as { prototype: SavedToken & { save(...args: unknown[]): Promise<string> } }).prototype;
  const save = prototype.save;
  prototype.save = async function saveRecordingSuccessor(this: SavedToken, ...args: unknown[]): Promise<string> {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    const entities = ctx && states.has(ctx) ? (ctx.oidc.entities as { RotatedRefreshToken?: { jti: string }; RefreshToken?: unknown }) : undefined;
    const rotated = entities?.RotatedRefreshToken;
    const client = ctx?.oidc.client;
    if (!rotated || entities.RefreshToken !== this || !client || deps.graceSeconds(client) <= 0) return save.apply(this, args);
    this.jti ??= this.generateTokenId(); // what save() does first; the successor's id is needed now
    if (this.jti === rotated.jti) return save.apply(this, args);
    const [value] = await Promise.all([save.apply(this, args), failClosed(() => deps.refreshTokens.setSuccessor(rotated.jti, this.jti!))]);
    return value;
  };

  provider.registerGrantType('refresh_token', handler as never, ['refresh_token', 'scope', 'resource'], ['resource']);
}
