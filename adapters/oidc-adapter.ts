import { errors } from 'oidc-provider';
import type { Adapter, AdapterFactory, AdapterPayload } from 'oidc-provider';

import { StorageUnavailableError } from './errors.js';
import type { StorageHealth } from './health.js';
import type { ModelName, Storage } from './types.js';
import { MODEL_NAMES } from './types.js';

/** The errors temporarilyUnavailable() made: a storage outage, whichever layer it reaches. */
const OUTAGES = new WeakSet<object>();

/** 503 `temporarily_unavailable`: what a client sees while storage cannot be reached. */
export function temporarilyUnavailable(description = 'the authorization server cannot reach its storage; retry shortly'): InstanceType<typeof errors.TemporarilyUnavailable> {
  const err = new errors.TemporarilyUnavailable(description);
  // Built as a 400 (so oidc-provider exposes it), then raised to 503 as RFC 6749 §5.2 practice and RFC 9110 suggest.
  Object.assign(err, { status: 503, statusCode: 503 });
  OUTAGES.add(err);
  return err;
}

/**
 * Whether `err` is a storage outage raised inside oidc-provider's pipeline and not rendered by it: one raised where its
 * own error handling does not reach (agentauth's routes, the session save after the endpoint answered). The server's
 * last-resort handler answers it 503 like any other outage, not 500.
 */
export function isStorageOutage(err: unknown): boolean {
  return typeof err === 'object' && err !== null && OUTAGES.has(err);
}

/** Whether `err` is answered 503: storage failed (StorageUnavailableError) or an outage raised inside oidc-provider. */
export function answersUnavailable(err: unknown): boolean {
  return err instanceof StorageUnavailableError || isStorageOutage(err);
}

/**
 * Runs a storage call made inside oidc-provider's request pipeline (where any other error would render as a 500):
 * storage failures become 503 temporarily_unavailable, and mark storage down. While storage is known to be down the
 * call is not made: a request that saw one call time out would otherwise wait the whole timeout again for its next
 * (a session save after a lookup), and answer after twice the bound. The health ping, which brings storage back up,
 * does not go through here.
 */
export async function failClosedInProvider<T>(fn: () => Promise<T>, health?: { markDown(err: unknown): void; readonly up?: boolean }): Promise<T> {
  if (health?.up === false) throw temporarilyUnavailable();
  try {
    return await fn();
  } catch (err) {
    if (err instanceof StorageUnavailableError) {
      health?.markDown(err);
      throw temporarilyUnavailable();
    }
    throw err;
  }
}

/**
 * Runs a check made after a record was written back (was its person revoked meanwhile?): a check that fails (storage)
 * undoes the write with `undo`, best effort, before the error goes on, so that a storage hiccup at that moment does
 * not leave behind what a revocation may have ended.
 */
export async function checkedOrUndone(check: () => Promise<boolean>, undo: () => Promise<unknown>): Promise<boolean> {
  try {
    return await check();
  } catch (err) {
    await undo().catch(() => undefined);
    throw err;
  }
}

const USED: Partial<Record<ModelName, string>> = {
  AuthorizationCode: 'authorization code already used',
  RefreshToken: 'refresh token already used',
  PushedAuthorizationRequest: 'pushed authorization request already used',
  DeviceCode: 'device code already used',
};

const isModel = (name: string): name is ModelName => (MODEL_NAMES as readonly string[]).includes(name);

/** Single-use artefacts a grant is redeemed with: a lost race for one of them is a reuse, and revokes the grant. */
const GRANT_SOURCES: ReadonlySet<ModelName> = new Set(['AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);
/** Every model whose records belong to a grant (oidc-provider's helpers/revoke.js, plus the grant itself). */
const GRANT_FAMILY: readonly ModelName[] = ['AccessToken', 'RefreshToken', 'AuthorizationCode', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PreAuthorizedCode'];

/** oidc-provider's adapter factory over an agentauth Storage: one adapter per model. */
export interface AdapterOptions {
  /** Client secrets are replaced by their keyed hash before a Client record is stored. */
  clientSecrets?: { hash(secret: string): string };
  /** Told when a lost consume race revoked a grant (for the audit trail and the log). */
  onGrantRevoked?: (grantId: string, reason: string) => void;
  /**
   * A lost consume race for a refresh token throws RefreshTokenRaceLost and revokes nothing: the refresh grant
   * (server/grants/refresh-grace.ts) decides, from the token's consumption mark, between its grace and revocation.
   */
  deferRefreshTokenReuse?: boolean;
  /**
   * Asked when a refresh token is stored: the rotation it completes, if any (server/grants/refresh-grace.ts defers
   * the rotated token's consume to this moment). The store then consumes, stores and records the successor in one
   * rotate call, and a lost consume throws RefreshTokenRaceLost (nothing stored).
   */
  refreshTokenRotation?: (id: string) => { consumes: string; recordSuccessor: boolean } | undefined;
  /**
   * Asked when a registration access token is stored: the token it replaces in the RFC 7592 request being handled, if
   * any (server/http/registration-steps.ts). The store then consumes the old one, stores this one and records it as the
   * successor in one rotate call; a lost consume throws RegistrationAccessTokenRaceLost (nothing stored).
   */
  registrationAccessTokenRotation?: (id: string) => { consumes: string } | undefined;
  /** Cascade revocation (server/revocation-lineage.ts): told of every revocation the adapter carries out. */
  revocation?: RevocationHooks;
  /**
   * The registration policies this server configures (oidc-provider `features.registration.policies`: initial access
   * tokens' tiers). oidc-provider throws a TypeError, answered 500, for a stored token naming a policy it does not
   * know, which a change of settings makes of every earlier token: `registration.mode` from `token` to `open` (no
   * policies at all) or a tier taken out of `tiers`. So an initial access token naming a policy not in this set is not
   * found (401 invalid_token, `onUnconfiguredPolicy` told), and a registration access token is read without its
   * policies, in every mode: they would only assign the tier again on an RFC 7592 update, which takes the tier from
   * the client's stored record instead (server/provider.ts, the `agentauth_tier` validator). Unset, no policy is
   * configured (every initial access token with a policy is refused: fail closed).
   */
  registrationPolicies?: ReadonlySet<string>;
  onUnconfiguredPolicy?: (policy: string) => void;
  /**
   * Asked when a sign-in session of person `accountId` is stored: whether the operator revoked that person while
   * the request storing it was served (server/subject-revocation.ts). oidc-provider stores a session at the end of
   * every request that read it, so a request in flight during `agentauth subjects revoke` would write back the
   * session the revocation just ended. Asked once the session is stored; true: it is deleted again, and the person's
   * next request signs in.
   */
  sessionRevoked?: (accountId: string) => Promise<boolean>;
}

/**
 * What revocation looks like at the adapter, the one place every revocation path of oidc-provider and agentauth goes
 * through: an access token destroyed (RFC 7009), a grant's tokens removed or the grant itself (refresh-token
 * revocation or reuse, code reuse, logout). Each is told before the records go, so a failure leaves them in place.
 */
export interface RevocationHooks {
  tokenRevoked(jti: string): Promise<void>;
  grantRevoked(grantId: string): Promise<void>;
  /**
   * Whether a stored access token (of `model`) may be handed to oidc-provider: false when a token it was derived from
   * is revoked, or (client_credentials) its client no longer holds it.
   */
  accessTokenActive(payload: AdapterPayload, model: ModelName): Promise<boolean>;
}

/** The models whose records are access tokens (opaque ones are stored; JWTs are not). */
const ACCESS_TOKENS: ReadonlySet<ModelName> = new Set(['AccessToken', 'ClientCredentials']);

/** A concurrent use of a refresh token lost the consume race; nothing was revoked yet (see deferRefreshTokenReuse). */
export class RefreshTokenRaceLost extends errors.InvalidGrant {
  constructor() {
    super('refresh token already used');
  }
}

/** A registration access token was used up by another request (or earlier) when this one rotated it; nothing was stored. */
export class RegistrationAccessTokenRaceLost extends errors.InvalidToken {
  constructor() {
    super('registration access token already used');
  }
}

/**
 * Revokes the grant a reused single-use artefact belongs to: every token and code issued from it, and the grant
 * record itself. Tokens the race's winner saves afterwards still name the grant, which no longer exists, so
 * oidc-provider refuses them at refresh, introspection and userinfo (RFC 6749 §4.1.2, RFC 9700 §4.14.2).
 */
export async function revokeGrantFamily(storage: Pick<Storage, 'model'>, grantId: string, hooks: Pick<RevocationHooks, 'grantRevoked'> | undefined): Promise<void> {
  await hooks?.grantRevoked(grantId);
  await storage.model('Grant').destroy(grantId);
  await Promise.all(GRANT_FAMILY.map((model) => storage.model(model).revokeByGrantId(grantId)));
}

const HASHED = /^hmac-sha256:/;

/** The rotation that storing record `id` of `name` completes (a refresh or registration access token's), if any. */
function rotationOf(name: ModelName, id: string, options: AdapterOptions): { consumes: string; recordSuccessor: boolean; lost(): Error } | undefined {
  if (name === 'RefreshToken') {
    const rotation = options.refreshTokenRotation?.(id);
    return rotation && { ...rotation, lost: () => new RefreshTokenRaceLost() };
  }
  if (name === 'RegistrationAccessToken') {
    const rotation = options.registrationAccessTokenRotation?.(id);
    return rotation && { ...rotation, recordSuccessor: true, lost: () => new RegistrationAccessTokenRaceLost() };
  }
  return undefined;
}

/** A registration or initial access token as this server can use it (AdapterOptions `registrationPolicies`). */
function withConfiguredPolicies(name: 'RegistrationAccessToken' | 'InitialAccessToken', payload: AdapterPayload, options: AdapterOptions): AdapterPayload | undefined {
  const { policies } = payload as { policies?: unknown };
  if (policies === undefined) return payload;
  if (name === 'RegistrationAccessToken') {
    const { policies: _unused, ...rest } = payload as AdapterPayload & { policies?: unknown };
    return rest;
  }
  const unconfigured = Array.isArray(policies) ? policies.find((p) => typeof p !== 'string' || !options.registrationPolicies?.has(p)) : policies;
  if (unconfigured === undefined) return payload;
  options.onUnconfiguredPolicy?.(String(unconfigured));
  return undefined;
}

export function oidcAdapterFactory(storage: Storage, health?: StorageHealth, options: AdapterOptions = {}): AdapterFactory {
  const failClosed = <T>(fn: () => Promise<T>) => failClosedInProvider(fn, health);

  return (name: string): Adapter => {
    if (!isModel(name)) throw new Error(`agentauth storage has no model named ${name}`);
    const store = storage.model(name);
    const hooks = options.revocation;
    return {
      upsert: (id: string, payload: AdapterPayload, expiresIn?: number) => {
        const { clientSecrets } = options;
        if (name === 'Client' && clientSecrets && typeof payload.client_secret === 'string' && !HASHED.test(payload.client_secret)) {
          payload = { ...payload, client_secret: clientSecrets.hash(payload.client_secret) };
        }
        const rotation = rotationOf(name, id, options);
        if (rotation) {
          return failClosed(async () => {
            if (!(await store.rotate(rotation.consumes, id, payload, expiresIn, rotation.recordSuccessor))) throw rotation.lost();
          });
        }
        const { sessionRevoked } = options;
        if (name === 'Session' && sessionRevoked && typeof payload.accountId === 'string') {
          const accountId = payload.accountId;
          // Stored, then checked: a session stored after a revocation's last listing finds the mark written before it.
          return failClosed(async () => {
            await store.upsert(id, payload, expiresIn);
            if (await checkedOrUndone(() => sessionRevoked(accountId), () => store.destroy(id))) await store.destroy(id);
          });
        }
        return failClosed(() => store.upsert(id, payload, expiresIn));
      },
      find: (id: string) =>
        failClosed(async () => {
          const payload = await store.find(id);
          if (payload && (name === 'RegistrationAccessToken' || name === 'InitialAccessToken')) return withConfiguredPolicies(name, payload, options);
          if (!payload || !hooks || !ACCESS_TOKENS.has(name)) return payload;
          return (await hooks.accessTokenActive(payload, name)) ? payload : undefined;
        }),
      findByUid: (uid: string) => failClosed(() => store.findByUid(uid)),
      findByUserCode: (userCode: string) => failClosed(() => store.findByUserCode(userCode)),
      destroy: (id: string) =>
        failClosed(async () => {
          if (hooks && ACCESS_TOKENS.has(name)) await hooks.tokenRevoked(id);
          if (hooks && name === 'Grant') await hooks.grantRevoked(id);
          await store.destroy(id);
        }),
      revokeByGrantId: (grantId: string) =>
        failClosed(async () => {
          // oidc-provider calls this for every token model of a revoked grant; AccessToken's call is always among them.
          if (hooks && name === 'AccessToken') await hooks.grantRevoked(grantId);
          await store.revokeByGrantId(grantId);
        }),
      consume: (id: string) =>
        failClosed(async () => {
          if (await store.consume(id)) return;
          if (name === 'RefreshToken' && options.deferRefreshTokenReuse) throw new RefreshTokenRaceLost();
          // Lost the race for a single-use artefact (or it was already used): exactly one caller may win. Every
          // caller that gets here passed oidc-provider's own "already consumed" check, so this is a concurrent reuse:
          // revoke the whole grant, as a sequential reuse does (the winner's new tokens included).
          if (GRANT_SOURCES.has(name)) {
            const grantId = (await store.find(id))?.grantId;
            if (typeof grantId === 'string') {
              await revokeGrantFamily(storage, grantId, options.revocation);
              options.onGrantRevoked?.(grantId, `${USED[name] ?? `${name} already used`} (concurrent use)`);
            }
          }
          throw new errors.InvalidGrant(USED[name] ?? `${name} already used`);
        }),
    };
  };
}
