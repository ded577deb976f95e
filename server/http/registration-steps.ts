import { Provider, errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import * as registration from 'oidc-provider/lib/actions/registration.js';

import type { AdapterPayload, ModelStore, NonceStore } from '../../adapters/types.js';
import { RegistrationAccessTokenRaceLost, answersUnavailable, failClosedInProvider } from '../../adapters/oidc-adapter.js';
import { setBeforeClientWrite } from '../admin/client-write-hook.js';
import { auditNow, whenRecorded } from '../audit/trail.js';
import { CLIENT_OWNED } from '../client-revocation.js';
import { ClientSecretHasher } from '../client-secrets.js';
import type { RegistrationConfig } from '../config.js';
import type { Logger } from '../logger.js';
import { describeRefusal, limitError } from '../limits/refusal.js';
import type { SharedWindowLimit } from '../limits/window.js';
import { checkRegistrationRequest } from '../policies/registration.js';
import { parseJsonBody, readBodyText } from '../request-body.js';
import { PROVIDER_BODY_LIMIT } from './body-parse-errors.js';
import { challengeParameter } from './error-description.js';
import type { RegistrationPolicy } from '../policies/registration.js';
import { tierFromPolicies, tierOf } from '../policies/tiers.js';
import type { TierLimits } from '../policies/tiers.js';
import { sharedRotations } from '../undelivered-rotations.js';
import { initialAccessTokenFingerprint, takeUse } from '../initial-access-token-uses.js';
import { registrationLimitsOf } from '../initial-access-token-limits.js';
import { setRequestLimits } from '../policies/registration-limits.js';
import type { SharedRotationStore, SharedRotations } from '../undelivered-rotations.js';

/**
 * agentauth's registration policy as steps of oidc-provider's own RFC 7591/7592 actions (the `registration`,
 * `client`, `client_update` and `client_delete` routes), so that every spelling of a request the router accepts
 * (`/reg`, `/REG`, `/Reg/`, any Authorization scheme case) meets the same rules: the per-IP quota and the metadata
 * policy at registration, single-use registration access tokens that rotate on every read and update, secrets that
 * are never returned once hashed, revocation of everything a deleted client held, and a JSON body read strictly
 * (`strictJsonBody`: no member named twice, UTF-8 only).
 *
 * A rotation is one store call (ModelStore.rotate): the presented token is used up, its successor stored and recorded
 * with it, atomically on the embedded store, and on MongoDB successor first so that a cut leaves the token unused or
 * used with its successor recorded. A request answered 503 after sending the rotation (or the delete's consume) is
 * remembered, and recorded in the store for the other instances (server/undelivered-rotations.ts): one retry with the
 * same token, at any instance, the client doing what the 503 told it, gets the recorded successor (or, for a delete, goes on) instead of losing management of its
 * registration. oidc-provider's own rotation on update (destroy, then save) is off (provider.ts); this module's runs
 * where the update writes the client.
 *
 * The steps are inserted, by name, into the action lists oidc-provider 9.13.3 exports (pinned exactly;
 * test/unit/oidc-provider-internals.test.ts fails on upgrade); `prepareRegistrationSteps` refuses to start if a step
 * it anchors on is missing.
 */

export interface RegistrationStepDeps {
  registration: RegistrationConfig;
  policy: RegistrationPolicy;
  limits: TierLimits;
  hasher: ClientSecretHasher;
  /** Registration access tokens: consumed atomically (one marker insert) so a token works exactly once. */
  registrationAccessTokens: ModelStore;
  /** A deleted client's revocation mark, written before its record goes; `record` as the delete found it (server/client-revocation.ts). */
  markClientRevoked(clientId: string, record: AdapterPayload): Promise<void>;
  /** What a deleted client held, removed once it is gone. */
  removeClientRecords(clientId: string): Promise<void>;
  health: { markDown(err: unknown): void };
  log: Logger;
  /** Where a request answered 503 after its token was sent is recorded for the other instances (server/undelivered-rotations.ts). */
  undelivered: SharedRotationStore;
  /** The per-IP registration quota, counted in the store (server/limits/). */
  quota: SharedWindowLimit;
  /** Where initial access tokens' registration limits are kept and counted (server/initial-access-token-uses.ts). */
  nonces: Pick<NonceStore, 'boundTo' | 'takeAttempt'>;
}

type Next = () => Promise<void>;
type Step = ((ctx: KoaContextWithOIDC, next: Next) => Promise<unknown>) & { name: string };

interface Registered {
  deps: RegistrationStepDeps;
  /** RFC 7592 requests this instance, or another sharing its store, answered 503 after their token's rotation or consume was sent. */
  undelivered: SharedRotations;
}

const SECRET_STAND_IN = 'x'.repeat(43);
const perProvider = new WeakMap<Provider, Registered>();
const PATCHED = Symbol.for('agentauth.registration-steps');

function stateFor(ctx: KoaContextWithOIDC): Registered {
  const state = perProvider.get(ctx.oidc.provider);
  if (!state) throw new Error('agentauth registration steps are not registered for this provider');
  return state;
}

const named = (name: string, fn: (ctx: KoaContextWithOIDC, next: Next) => Promise<unknown>): Step =>
  Object.defineProperty(fn, 'name', { value: name }) as Step;

function indexOf(list: Step[], name: string, action: string): number {
  const i = list.findIndex((h) => h.name === name);
  if (i < 0) {
    throw new Error(`oidc-provider's registration ${action} action no longer has a "${name}" step; agentauth's registration policy must be updated for this oidc-provider version`);
  }
  return i;
}

/** Puts `step` in place of the step named `anchor`. */
function replace(list: Step[], anchor: string, step: Step, action: string): void {
  list.splice(indexOf(list, anchor, action), 1, step);
}

/** Inserts `step` right after (or before) the step named `anchor`. */
function insert(list: Step[], anchor: string, where: 'after' | 'before', step: Step, action: string): void {
  const i = indexOf(list, anchor, action);
  list.splice(where === 'after' ? i + 1 : i, 0, step);
}

/** The client's metadata as a read (GET) returns it: the stored secret is a hash and is never returned. */
function readView(metadata: Record<string, unknown>): Record<string, unknown> {
  const view = { ...metadata };
  if (ClientSecretHasher.isHashed(view.client_secret)) {
    delete view.client_secret;
    delete view.client_secret_expires_at;
  }
  return view;
}

/**
 * 401 invalid_token with this description for the client (oidc-provider's InvalidToken takes only a detail for its
 * log, and answers "invalid token provided").
 */
function invalidToken(description: string): Error {
  const err = new errors.InvalidToken(description);
  err.error_description = description;
  return err;
}

type PresentedToken = { jti: string; clientId?: string; consumed?: unknown };

/** The registration access token a request presented, as validateRegistrationAccessToken found it. */
function presentedToken(ctx: KoaContextWithOIDC): PresentedToken {
  const rat = ctx.oidc.entities.RegistrationAccessToken as PresentedToken | undefined;
  if (!rat) throw invalidToken('registration access token not found');
  return rat;
}

const ALREADY_USED = 'registration access token already used: every read or update returns a new one';

/** Per request: the registration access token whose rotation (or a delete's consume) was sent to storage. */
const SENT = 'agentauthRegistrationTokenSent';

interface Sent {
  token: string;
  /** Sent to be rotated (a delete's consume is not). */
  rotation: boolean;
  /** The successor the rotation sent to be stored, once it was (pendingRegistrationAccessTokenRotation). */
  successor?: string;
}

const sentBy = (ctx: KoaContextWithOIDC): Sent | undefined => ctx.state[SENT] as Sent | undefined;

/**
 * Marks `token` as sent to storage by this request (to be used up by a delete, or rotated to `successor`, which the
 * adapter's hook fills in when the rotation reaches the store), before the call: from here on a 503 (the store's, or
 * one from anything after it) leaves that rotation (or consume) remembered as undelivered (rememberingUndelivered). An
 * update's audit record is written before its rotation (server/admin/disabled-clients.ts), so a refused record leaves
 * nothing to remember.
 */
function markSent(ctx: KoaContextWithOIDC, token: PresentedToken, rotation: { successor?: string } | undefined): void {
  ctx.state[SENT] = { token: token.jti, rotation: rotation !== undefined, successor: rotation?.successor } satisfies Sent;
}

/** The successor recorded for used-up token `jti`, if any (a rotation's; a delete records none). */
async function recordedSuccessor(ctx: KoaContextWithOIDC, jti: string): Promise<string | undefined> {
  const { deps } = stateFor(ctx);
  return (await failClosedInProvider(() => deps.registrationAccessTokens.consumption(jti), deps.health))?.successor;
}

/**
 * Refuses a used token at once, unless the rotation that used it up was answered 503 (rotateRegistrationAccessToken
 * decides then): a 503 remembered for a rotation of the token that was never stored does not count.
 */
async function refuseUsedToken(ctx: KoaContextWithOIDC): Promise<void> {
  const rat = presentedToken(ctx);
  if (rat.consumed === undefined) return;
  const { deps, undelivered } = stateFor(ctx);
  const successor = await recordedSuccessor(ctx, rat.jti);
  if (successor === undefined || !(await failClosedInProvider(() => undelivered.has(rat.jti, successor), deps.health))) throw invalidToken(ALREADY_USED);
}

/**
 * Whether a request with `token` (rotated to `successor`, for a rotation) was answered 503 after it was sent,
 * forgetting it: true for exactly one request.
 */
function takeUndelivered(ctx: KoaContextWithOIDC, token: string, successor?: string): Promise<boolean> {
  const { deps, undelivered } = stateFor(ctx);
  return failClosedInProvider(() => undelivered.take(token, successor), deps.health);
}

/** After a delete used `token` up: an earlier 503 of a delete with it gives no later request anything (not waited for). */
function forgetUndelivered(ctx: KoaContextWithOIDC, token: string): void {
  const { deps, undelivered } = stateFor(ctx);
  undelivered.forget(token).catch((err: unknown) => deps.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not withdraw the record of a registration access token answered 503'));
}

/**
 * Runs an RFC 7592 step; a 503 once the request's token was sent to storage remembers that token's consume, or its
 * rotation to the successor sent with it (markSent). A rotation that never reached the store left nothing to remember.
 */
async function rememberingUndelivered(ctx: KoaContextWithOIDC, step: () => Promise<void>): Promise<void> {
  try {
    await step();
  } catch (err) {
    const sent = sentBy(ctx);
    if (sent && answersUnavailable(err) && (!sent.rotation || sent.successor !== undefined)) await stateFor(ctx).undelivered.add(sent.token, sent.successor);
    throw err;
  }
}

/**
 * Uses up the registration access token presented on a delete: exactly one of any number of concurrent requests with
 * the same token gets past this step (one atomic insert on every store), the rest are `invalid_token`. A delete answered
 * 503 after its consume was sent goes on once, without a consume, when retried with the same token.
 */
async function consumeRegistrationAccessToken(ctx: KoaContextWithOIDC, deps: RegistrationStepDeps): Promise<void> {
  const rat = presentedToken(ctx);
  markSent(ctx, rat, undefined);
  const won = rat.consumed === undefined && (await failClosedInProvider(() => deps.registrationAccessTokens.consume(rat.jti), deps.health));
  // Used up by this request, or by one answered 503 (taken: the retry goes on once).
  if (won) forgetUndelivered(ctx, rat.jti);
  else if (!(await takeUndelivered(ctx, rat.jti))) throw invalidToken(ALREADY_USED);
}

/** Per request: the token the registration access token being saved replaces (the adapter's rotation hook reads it). */
const rotations = new WeakMap<object, { consumes: string; stored: boolean }>();

/**
 * For the oidc adapter (registrationAccessTokenRotation): the token that storing registration access token `id`
 * replaces in the request being handled, if any.
 */
export function pendingRegistrationAccessTokenRotation(id: string): { consumes: string } | undefined {
  const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
  const rotation = ctx ? rotations.get(ctx) : undefined;
  if (!rotation || rotation.stored || rotation.consumes === id) return undefined;
  rotation.stored = true;
  const sent = sentBy(ctx!);
  if (sent?.token === rotation.consumes) sent.successor = id;
  return { consumes: rotation.consumes };
}

/**
 * The successor a retry of an undelivered rotation of `old` gets: the one recorded with it, if that rotation (to that
 * successor) was answered 503 and the successor is still unused and this client's. Otherwise (the rotation that used
 * `old` up was answered, a 503 was for a rotation never stored, forgotten, or the successor gone) `invalid_token`.
 */
async function undeliveredSuccessor(ctx: KoaContextWithOIDC, deps: RegistrationStepDeps, old: PresentedToken): Promise<string> {
  const store = deps.registrationAccessTokens;
  const successor = await recordedSuccessor(ctx, old.jti);
  if (successor === undefined || !(await takeUndelivered(ctx, old.jti, successor))) throw invalidToken(ALREADY_USED);
  markSent(ctx, old, { successor }); // taken: a 503 from here on gives it back
  const RAT = ctx.oidc.provider.RegistrationAccessToken as unknown as { find(value: string): Promise<PresentedToken | undefined> };
  const current = await RAT.find(successor);
  const used = current ? await failClosedInProvider(() => store.consumption(successor), deps.health) : undefined;
  if (!current || current.clientId !== old.clientId || used !== undefined) throw invalidToken(ALREADY_USED);
  return successor;
}

/**
 * Rotates the registration access token this request presented: its successor (without the policies of the initial
 * access token, which the adapter never hands out: adapters/oidc-adapter.ts `registrationPolicies`) is stored and
 * the presented one used up in one rotate call, or, for a retry of a rotation answered 503 (here or at another instance), the recorded
 * successor is handed back. Returns the value to answer with. The presented token's record goes once the answer's
 * audit record is durable.
 */
async function rotateRegistrationAccessToken(ctx: KoaContextWithOIDC, deps: RegistrationStepDeps): Promise<string> {
  const old = presentedToken(ctx);
  let value: string;
  if (old.consumed !== undefined) {
    value = await undeliveredSuccessor(ctx, deps, old);
  } else {
    const { provider, client } = ctx.oidc;
    const RAT = provider.RegistrationAccessToken as unknown as new (init: { client: unknown }) => { save(): Promise<string> };
    rotations.set(ctx, { consumes: old.jti, stored: false });
    markSent(ctx, old, {});
    try {
      // Rotated (if this succeeds) to a successor no earlier 503 remembers: nothing is to be forgotten.
      value = await new RAT({ client }).save();
    } catch (err) {
      if (!(err instanceof RegistrationAccessTokenRaceLost)) throw err;
      // Used up by a concurrent request, or by a rotation answered 503.
      value = await undeliveredSuccessor(ctx, deps, old);
    } finally {
      rotations.delete(ctx);
    }
  }
  whenRecorded(ctx, () => {
    // Only once the successor was answered; used up already, so removing it only tidies the store (a failure leaves a
    // used token that nothing accepts).
    if (ctx.status >= 400) return;
    deps.registrationAccessTokens.destroy(old.jti).catch((err: unknown) => deps.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'could not remove a used registration access token'));
  });
  return value;
}

/** Replaces the request body oidc-provider parsed (its later steps read `ctx.oidc.body`). */
const setBody = (ctx: KoaContextWithOIDC, body: unknown) => {
  (ctx.oidc as unknown as { body: unknown }).body = body;
};

/** Set by strictJsonBody when the request's body was a JSON document (requireJsonBody). */
const METADATA_SENT = 'agentauthMetadataSent';

/**
 * The body step of the create and update actions, in place of oidc-provider's JSON parser
 * (lib/shared/selective_body.js), which took the last of two members with one name and turned bytes that are not
 * UTF-8 into U+FFFD: client metadata is read as strictly as the interaction pages read theirs (server/request-body.ts):
 * invalid UTF-8 and a member named twice in one object are `400 invalid_request` naming what is wrong, and nothing is
 * stored (nesting past the metadata depth stays the registration policy's `invalid_client_metadata`). Otherwise as
 * oidc-provider's step: the same 56 KiB limit (413), a body of another content type refused, `{}` without a body
 * (none, or an empty one) or without its Content-Type (the policy steps then ask for the metadata, `requireJsonBody`).
 * Koa's `is` answers null for a request without a body whatever its Content-Type says, false for a body of another
 * type.
 */
const strictJsonBody = named('strictJsonBody', async (ctx, next) => {
  const json = ctx.is('application/json');
  const text = json ? await readBodyText(ctx, PROVIDER_BODY_LIMIT) : '';
  if (text !== '') {
    setBody(ctx, parseJsonBody(text, { deepForCaller: true }));
    ctx.state[METADATA_SENT] = true;
  } else if (json === false && ctx.get('content-type')) {
    throw new errors.InvalidRequest(`only application/json content-type bodies are supported on ${ctx.method} ${ctx.path.slice(0, 200)}`);
  } else {
    setBody(ctx, {});
  }
  await next();
});

/**
 * RFC 6750 §3: a request refused for the form of its bearer credential (an Authorization header of another scheme, or
 * none after it, the token in the query, the token sent two ways) is `400 invalid_request` with a challenge,
 * `WWW-Authenticate: Bearer realm=..., error="invalid_request", error_description=...`. oidc-provider reads the
 * registration access token (RFC 7592) and the initial access token (RFC 7591 §3, token mode) with
 * `ctx.oidc.getAccessToken()`, which throws these, and its setWWWAuthenticateHeader step around the registration
 * actions writes a challenge for 401s only: the 400s had none. This step, inside that one, answers them with the
 * challenge, in the form and realm (the issuer) of the route's 401 challenges. Only what `getAccessToken` itself
 * threw gets it: another 400 of these routes (the metadata) says nothing about the credential.
 */
const bearerFormChallenge = named('agentauthBearerFormChallenge', async (ctx, next) => {
  const oidc = ctx.oidc as unknown as { getAccessToken(...args: unknown[]): string };
  const read = oidc.getAccessToken;
  let refused: unknown;
  oidc.getAccessToken = function getAccessToken(this: unknown, ...args: unknown[]) {
    try {
      return read.apply(this, args);
    } catch (err) {
      refused = err;
      throw err;
    }
  };
  try {
    await next();
  } catch (err) {
    if (err === refused && err instanceof errors.InvalidRequest) {
      // Registration access tokens and initial access tokens are bearer tokens: oidc-provider said "`DPoP` header not
      // provided" to an Authorization: DPoP header, whether a DPoP proof was sent or not.
      if (err.error_description === '`DPoP` header not provided') {
        err.error_description = 'registration access tokens and initial access tokens are bearer tokens: send Authorization: Bearer <token> (RFC 6750 section 2.1), without DPoP';
      }
      const fields = [`realm="${ctx.oidc.issuer}"`, 'error="invalid_request"', ...(typeof err.error_description === 'string' ? [challengeParameter(err.error_description)] : [])];
      ctx.append('WWW-Authenticate', `Bearer ${fields.join(', ')}`);
    }
    throw err;
  }
});

const quotaStep = named('agentauthRegistrationQuota', async (ctx, next) => {
  const { deps } = stateFor(ctx);
  if (deps.registration.mode === 'open') {
    const decision = await failClosedInProvider(() => deps.quota.hit(deps.quota.address(ctx.ip)), deps.health);
    if (!decision.allowed) {
      throw limitError(ctx, 'temporarily_unavailable', describeRefusal(deps.quota, 'registration quota for this address', decision), decision.retryAfter);
    }
  }
  await next();
});

/**
 * A body without a Content-Type is read as no body at all (`{}`, strictJsonBody), so a client that left the header
 * out was told its metadata lacked redirect_uris. Registration and update need the metadata, as JSON (another
 * content type is refused by strictJsonBody already).
 */
function requireJsonBody(ctx: KoaContextWithOIDC): void {
  if (ctx.state[METADATA_SENT] === true) return;
  throw new errors.InvalidRequest('send the client metadata as a JSON object with Content-Type: application/json (the request has no Content-Type or no body)');
}

const registrationPolicyStep = named('agentauthRegistrationPolicy', async (ctx, next) => {
  const { deps } = stateFor(ctx);
  requireJsonBody(ctx);
  const iat = ctx.oidc.entities.InitialAccessToken as { policies?: string[]; jti: string; exp?: number } | undefined;
  const tierName = tierFromPolicies(iat?.policies) ?? deps.registration.defaultTier;
  const tier = deps.limits.tiers[tierName] ?? tierOf(deps.limits, undefined);
  // The grant types and scopes the token's clients may register (`clients iat create --grant-types/--scope`).
  const limits = iat ? await failClosedInProvider(() => registrationLimitsOf(deps.nonces, initialAccessTokenFingerprint(iat.jti)), deps.health) : undefined;
  if (limits === 'damaged') throw invalidToken('the limits recorded for this initial access token cannot be read, so it registers no client: ask the operator for a new one');
  setBody(ctx, checkRegistrationRequest(ctx.oidc.body, deps.policy, tier, { update: false, origin: iat ? 'initial_access_token' : 'anonymous', limits }));
  // Recorded on the client by the metadata validator (server/provider.ts), from here and never from the body.
  if (limits !== undefined) setRequestLimits(ctx, limits);
  // One of the token's registrations is taken just before the client is written (server/admin/disabled-clients.ts):
  // a registration refused before then uses none.
  if (iat) setBeforeClientWrite(ctx, () => takeInitialAccessTokenUse(deps, iat));
  await next();
});

async function takeInitialAccessTokenUse(deps: RegistrationStepDeps, iat: { jti: string; exp?: number }): Promise<void> {
  const expiresAt = iat.exp ?? Math.floor(Date.now() / 1000);
  const { taken, limit } = await failClosedInProvider(() => takeUse(deps.nonces, initialAccessTokenFingerprint(iat.jti), expiresAt), deps.health);
  if (!taken) {
    throw invalidToken(`the initial access token allowed ${limit} registration${limit === 1 ? '' : 's'}, and all of them have been made: ask the operator for a new one`);
  }
}

const readStep = named('agentauthRotateOnRead', async (ctx, next) => {
  const { deps } = stateFor(ctx);
  if (ctx.oidc.client?.noManage) return next(); // oidc-provider answers 403 for clients from the configuration file
  // HEAD is GET without the content (oidc-provider's router answers it with the read): the token is checked, and
  // neither used up nor rotated, since a successor could never reach the client.
  if (ctx.method === 'HEAD') return next();
  await refuseUsedToken(ctx);
  await next();
  const body = ctx.body as Record<string, unknown>;
  await rememberingUndelivered(ctx, async () => {
    ctx.body = { ...readView(body), registration_access_token: await rotateRegistrationAccessToken(ctx, deps) };
  });
});

const updatePolicyStep = named('agentauthUpdatePolicy', async (ctx, next) => {
  const { deps } = stateFor(ctx);
  requireJsonBody(ctx);
  const client = ctx.oidc.client!;
  // oidc-provider's equalChecks step (after this one) answers a body without client_id as one naming another client
  // ("provided client_id does not match the authenticated client's one"); what is wrong is that it is missing. The
  // client has authenticated with its registration access token, and its id is in the URL: it is named.
  if ((ctx.oidc.body as Record<string, unknown>).client_id === undefined) {
    throw new errors.InvalidRequest(`client_id is required in the body of an update and must equal the registered client_id (${client.clientId}) (RFC 7592 section 2.2)`);
  }
  const metadata = client.metadata() as Record<string, unknown>;
  // What the client may send back unchanged: its read response, and the registration response's
  // client_secret_expires_at, which reads leave out with the secret (RFC 7592 §2.2 allows echoing either response).
  const current = { ...readView(metadata), ...(metadata.client_secret_expires_at !== undefined ? { client_secret_expires_at: metadata.client_secret_expires_at } : {}) };
  const checked = checkRegistrationRequest(ctx.oidc.body, deps.policy, tierOf(deps.limits, client), {
    update: true,
    current,
    presentedToken: ctx.oidc.getAccessToken(),
    clientUri: ctx.oidc.urlFor('client', { clientId: client.clientId }),
  });
  if ('client_secret' in checked) {
    // The stored secret is a keyed hash: compare the presented one in constant time, then leave it as stored.
    if (!deps.hasher.matches(checked.client_secret, client.clientSecret)) {
      throw new errors.InvalidRequest("provided client_secret does not match the authenticated client's one");
    }
    delete checked.client_secret;
  }
  setBody(ctx, checked);
  await next();
});

const updateStep = named('agentauthRotateOnUpdate', async (ctx, next) => {
  const { deps } = stateFor(ctx);
  if (ctx.oidc.client?.noManage) return next();
  // Everything oidc-provider would refuse is refused before the token is used up (a refused update keeps it).
  const { provider, client } = ctx.oidc;
  await (provider.Client as unknown as { validate(m: Record<string, unknown>): Promise<void> }).validate({
    client_id: client!.clientId,
    client_id_issued_at: client!.clientIdIssuedAt,
    // A client that becomes confidential gets its secret from oidc-provider afterwards: validate with a stand-in.
    client_secret: client!.clientSecret ?? SECRET_STAND_IN,
    ...(ctx.oidc.body as Record<string, unknown>),
  });
  await refuseUsedToken(ctx);
  // Rotated when the update holds the client's record, just before it writes (client-write-hook.ts).
  let successor: string | undefined;
  setBeforeClientWrite(ctx, async () => {
    successor = await rotateRegistrationAccessToken(ctx, deps);
  });
  await rememberingUndelivered(ctx, next);
  if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
    // oidc-provider's answer carries the presented token (its own rotation is off): the successor replaces it. A
    // secret it generated for a new authentication method is returned once, a stored one never.
    if (successor === undefined) throw new Error('the RFC 7592 update wrote the client without rotating its registration access token');
    ctx.body = { ...readView(ctx.body as Record<string, unknown>), registration_access_token: successor };
  }
});

const deleteStep = named('agentauthRevokeOnDelete', async (ctx, next) => {
  const { deps } = stateFor(ctx);
  if (ctx.oidc.client?.noManage) return next();
  const clientId = ctx.oidc.client!.clientId;
  // When the delete holds the client's record, just before it removes it (client-write-hook.ts): the token used up,
  // the delete recorded, and the client's revocation mark written. Any of them refused is a 503 with the client still
  // there, and the retry with the same token goes on (rememberingUndelivered). A client deleted meanwhile (`current`
  // undefined) was recorded and marked by whoever deleted it.
  setBeforeClientWrite(ctx, async (current) => {
    await consumeRegistrationAccessToken(ctx, deps);
    if (current === undefined) return;
    await auditNow(ctx, { type: 'client.deleted', client_id: clientId, details: { revoked: [...CLIENT_OWNED] } });
    await failClosedInProvider(() => deps.markClientRevoked(clientId, current), deps.health);
  });
  await rememberingUndelivered(ctx, next);
  if (ctx.status !== 204) return;
  // The client is gone and its mark written: what it held is unusable now, and removed here (a failure leaves it to
  // expire, refused meanwhile because its client is unknown).
  await failClosedInProvider(() => deps.removeClientRecords(clientId), deps.health);
  deps.log.info({ event: 'client.deleted', client_id: clientId }, 'client deleted; its grants and tokens are revoked');
});

/** Patches oidc-provider's registration actions once per process (idempotent). Call before `new Provider(...)`. */
export function prepareRegistrationSteps(): void {
  const lists = registration as unknown as { post: Step[]; get: Step[]; put: Step[]; del: Step[] };
  const marker = lists.post as unknown as Record<symbol, boolean>;
  if (marker[PATCHED]) return;
  insert(lists.post, 'bound selectiveBody', 'before', quotaStep, 'create');
  replace(lists.post, 'bound selectiveBody', strictJsonBody, 'create');
  replace(lists.put, 'bound selectiveBody', strictJsonBody, 'update');
  insert(lists.post, 'validateInitialAccessToken', 'after', registrationPolicyStep, 'create');
  insert(lists.get, 'clientReadResponse', 'before', readStep, 'read');
  insert(lists.put, 'validateJsonBody', 'after', updatePolicyStep, 'update');
  insert(lists.put, 'clientUpdateResponse', 'before', updateStep, 'update');
  insert(lists.del, 'clientRemoveResponse', 'before', deleteStep, 'delete');
  insert(lists.post, 'setWWWAuthenticateHeader', 'after', bearerFormChallenge, 'create');
  insert(lists.get, 'setWWWAuthenticateHeader', 'after', bearerFormChallenge, 'read');
  insert(lists.put, 'setWWWAuthenticateHeader', 'after', bearerFormChallenge, 'update');
  insert(lists.del, 'setWWWAuthenticateHeader', 'after', bearerFormChallenge, 'delete');
  marker[PATCHED] = true;
}

export function registerRegistrationSteps(provider: Provider, deps: RegistrationStepDeps): void {
  perProvider.set(provider, { deps, undelivered: sharedRotations('registration_access_token', deps.undelivered) });
}
