import { createHash } from 'node:crypto';

import { decodeProtectedHeader, errors as joseErrors, jwtVerify, createLocalJWKSet } from 'jose';
import type { JSONWebKeySet, JWTPayload } from 'jose';
import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
import introspectionHandlers from 'oidc-provider/lib/actions/introspection.js';
import revocationHandlers from 'oidc-provider/lib/actions/revocation.js';

import { failClosedInProvider } from '../adapters/oidc-adapter.js';
import { ExpiringLru } from './client-metadata/cache.js';
import type { RevokedTokenStore } from '../adapters/types.js';
import { LINEAGE_CLAIM, grantMark, lineageOf, tokenMark } from './revocation-lineage.js';
import { revokedByDisable } from './admin/client-fields.js';

/**
 * oidc-provider answers `unsupported_token_type` when a JWT access token is introspected or revoked, because it does
 * not persist them. agentauth keeps the library's endpoint pipelines (parameter parsing, client authentication,
 * RFC 9701 signed responses) and replaces only the two steps that refuse JWTs:
 *   - introspection: verify the JWT against agentauth's own keys, then check the denylist, that the client still
 *     exists and that the grant it came from still exists;
 *   - revocation: record the `jti` in the persisted denylist until the token's `exp`.
 * This relies on the shape of oidc-provider 9.13.3's internals (pinned exactly); `installStructuredTokenSupport`
 * refuses to start if that shape changed.
 */

export interface JwtAccessTokenClaims extends JWTPayload {
  client_id: string;
  scope?: string;
  cnf?: { jkt?: string };
  grant_id?: string;
  act?: Record<string, unknown>;
  may_act?: Record<string, unknown>;
  agentauth_lineage?: string[];
}

export interface StructuredTokenDeps {
  issuer: string;
  /** Public keys agentauth signs access tokens with (every state still published). */
  jwks: () => JSONWebKeySet;
  revoked: RevokedTokenStore;
  health?: { markDown(err: unknown): void };
  mayIntrospect: (caller: { clientId: string; clientAuthMethod?: string; noManage?: boolean }, tokenClientId: string) => boolean;
  /** Tokens of this client issued at or before this time (epoch s) are inactive: it was disabled then (server/admin/). */
  tokensRevokedBefore?: (clientId: string) => Promise<number | undefined>;
  /**
   * What agentauth itself never signs with a retired key, refused even while the key is published: a token dated after
   * the key stopped signing (`retiredAt(kid)`, epoch s) by more than `retireSlackSeconds` (how late another instance may
   * still sign with it: its key refresh interval and clock skew), and one living longer than `maxLifetime` seconds
   * (`exp` − `iat`). Against a key that leaked: after `agentauth keys rotate --immediately`, tokens forged with it are
   * refused unless dated before the rotation, and those expire within `maxLifetime` of it. Tokens of the signing key
   * are not held to `maxLifetime`: one issued under a longer lifetime before a restart stays as it was issued.
   */
  signedByUs?: { maxLifetime: number; retiredAt(kid: string): number | undefined; retireSlackSeconds: number };
}

const perProvider = new WeakMap<Provider, StructuredTokenDeps>();
const PATCHED = Symbol.for('agentauth.structured-tokens');

/**
 * Whether a presented token is a JWT (its first segment decodes to a JSON object), rather than one of oidc-provider's
 * opaque tokens. Opaque tokens never contain a dot, so they are told apart before jose's decode, which throws (an
 * Error with its stack trace, ≈ 12 µs) on every one of them.
 */
export function isJwt(token: unknown): token is string {
  if (typeof token !== 'string' || !token.includes('.')) return false;
  try {
    return Boolean(decodeProtectedHeader(token));
  } catch {
    return false;
  }
}

/**
 * The local JWK set for the current published keys, rebuilt only when they change (key import is the costly part),
 * and the tokens verified against exactly that set.
 */
interface KeySetState {
  source: JSONWebKeySet;
  set: ReturnType<typeof createLocalJWKSet>;
  verified: ExpiringLru<Readonly<JwtAccessTokenClaims>>;
}
const keySets = new WeakMap<StructuredTokenDeps, KeySetState>();
function keySetState(deps: StructuredTokenDeps): KeySetState {
  const source = deps.jwks();
  const cached = keySets.get(deps);
  if (cached && cached.source === source) return cached;
  // A key that is no longer published no longer verifies anything: the verified tokens go with the old set.
  const state = { source, set: createLocalJWKSet(source), verified: new ExpiringLru<Readonly<JwtAccessTokenClaims>>(VERIFIED_TOKEN_CACHE_SIZE) };
  keySets.set(deps, state);
  return state;
}

/**
 * JWT access tokens whose signature and claims were verified, kept until their `exp`: a resource server introspects
 * one agent's token on every call the agent makes, and the signature check (ES256: ≈ 120 µs of CPU) is the costly
 * part. Keyed by the token's SHA-256 (no token is held), bounded by count (≈ 0.3 KB of heap each, so 4,096 ≈ 1.1 MB),
 * emptied whenever the published keys change. Only what cannot change is cached: revocation, the client and the grant
 * are looked up on every request.
 */
export const VERIFIED_TOKEN_CACHE_SIZE = 4096;
/** Longer strings are verified every time rather than cached (a JWT access token agentauth issues is 0.5–1 KB). */
const CACHEABLE_TOKEN_LENGTH = 8192;

const deepFreeze = <T>(value: T): T => {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value)) deepFreeze(member);
  }
  return value;
};

/**
 * Verifies a JWT access token agentauth issued; undefined if it is not one (bad signature, wrong type, expired). The
 * claims returned are frozen: the same object answers every request for the token until it expires.
 */
export async function verifyAccessToken(token: string, deps: StructuredTokenDeps, opts: { retiredKeyChecks?: boolean } = {}): Promise<Readonly<JwtAccessTokenClaims> | undefined> {
  const state = keySetState(deps);
  // Only what passed every check is cached (and answered from the cache): a check-less verification goes around it.
  const cacheKey = token.length <= CACHEABLE_TOKEN_LENGTH && opts.retiredKeyChecks !== false ? createHash('sha256').update(token).digest('base64url') : undefined;
  const seen = cacheKey === undefined ? undefined : state.verified.get(cacheKey);
  if (seen) return seen;
  try {
    const { payload, protectedHeader } = await jwtVerify<JwtAccessTokenClaims>(token, state.set, {
      issuer: deps.issuer,
      typ: 'at+jwt',
      algorithms: ['ES256', 'EdDSA'],
      requiredClaims: ['jti', 'exp', 'iat', 'client_id'],
    });
    if (typeof payload.jti !== 'string' || typeof payload.client_id !== 'string') return undefined;
    const ours = opts.retiredKeyChecks === false ? undefined : deps.signedByUs;
    const retiredAt = ours && typeof protectedHeader.kid === 'string' ? ours.retiredAt(protectedHeader.kid) : undefined;
    if (ours && retiredAt !== undefined && (payload.iat! > retiredAt + ours.retireSlackSeconds || payload.exp! - payload.iat! > ours.maxLifetime)) {
      return undefined;
    }
    // jose refuses a token once `exp` <= now in whole seconds; the entry expires at exp * 1000 ms, the same instant.
    const now = Date.now();
    if (cacheKey !== undefined) state.verified.set(cacheKey, deepFreeze(payload), payload.exp! - now / 1000, now);
    return payload;
  } catch (err) {
    if (err instanceof joseErrors.JOSEError) return undefined;
    throw err;
  }
}

/** An active JWT access token: its claims, and when its grant expires (epoch s) if it has one. */
export interface ActiveJwt {
  claims: Readonly<JwtAccessTokenClaims>;
  grantExp?: number | undefined;
}

/**
 * The claims of a JWT access token that is active now (signature, exp, client, grant, and one denylist lookup for its
 * jti, its grant's revocation mark and, for an exchanged token, the marks of its lineage); undefined otherwise.
 */
async function activeClaims(provider: Provider, token: string, deps: StructuredTokenDeps): Promise<ActiveJwt | undefined> {
  const claims = await verifyAccessToken(token, deps);
  if (!claims) return undefined;
  const lineage = lineageOf(claims[LINEAGE_CLAIM]);
  if (!lineage) return undefined;
  const marks = [claims.jti!, ...(typeof claims.grant_id === 'string' ? [grantMark(claims.grant_id)] : []), ...lineage];
  if (await failClosedInProvider(() => deps.revoked.anyRevoked(marks), deps.health)) return undefined;
  if (!(await provider.Client.find(claims.client_id))) return undefined;
  const revokedBefore = deps.tokensRevokedBefore && (await failClosedInProvider(() => deps.tokensRevokedBefore!(claims.client_id), deps.health));
  if (revokedByDisable(claims.iat, revokedBefore)) return undefined;
  if (claims.grant_id !== undefined) {
    const grant = await provider.Grant.find(claims.grant_id, { ignoreExpiration: true });
    if (!grant || grant.isExpired || grant.clientId !== claims.client_id || grant.accountId !== claims.sub) return undefined;
    return { claims, grantExp: grant.exp };
  }
  return { claims };
}

/** For the token-exchange grant (server/grants/token-exchange.ts): the same activity checks introspection applies. */
export async function activeJwtAccessToken(provider: Provider, token: string): Promise<ActiveJwt | undefined> {
  const deps = perProvider.get(provider);
  if (!deps) throw new Error('structured-token support is not registered for this provider');
  return activeClaims(provider, token, deps);
}

/**
 * For the userinfo refusals (server/http/userinfo-errors.ts): the claims of `token` if it is a JWT access token that
 * agentauth signed and that has not expired (signature, typ, issuer, exp: what anyone can check against the published
 * JWKS); undefined otherwise. Whether it was revoked is not looked at: this says what kind of token it is, never
 * whether it is still good.
 */
export async function signedJwtAccessToken(provider: Provider, token: unknown): Promise<Readonly<JwtAccessTokenClaims> | undefined> {
  const deps = perProvider.get(provider);
  if (!deps || !isJwt(token)) return undefined;
  return verifyAccessToken(token, deps);
}

async function introspectJwt(ctx: KoaContextWithOIDC, deps: StructuredTokenDeps): Promise<Record<string, unknown>> {
  const inactive = { active: false };
  const { provider, client } = ctx.oidc;
  if (!client) return inactive;
  const active = await activeClaims(provider, String(ctx.oidc.params?.token), deps);
  if (!active) return inactive;
  const { claims } = active;
  // The same rule as for opaque tokens (server/provider.ts mayIntrospect).
  if (!deps.mayIntrospect(client as never, claims.client_id)) return inactive;
  return {
    active: true,
    iss: claims.iss,
    sub: claims.sub,
    client_id: claims.client_id,
    aud: claims.aud,
    scope: claims.scope,
    exp: claims.exp,
    iat: claims.iat,
    jti: claims.jti,
    ...(claims.cnf ? { cnf: claims.cnf } : {}),
    // RFC 8693 §4.1: who acts for the subject, the whole chain (exchanged tokens only).
    ...(claims.act ? { act: claims.act } : {}),
    token_type: claims.cnf?.jkt ? 'DPoP' : 'Bearer',
  };
}

async function revokeJwt(ctx: KoaContextWithOIDC, deps: StructuredTokenDeps): Promise<void> {
  // The signature alone decides what may be revoked: a token forged with a retired key (inactive at introspection)
  // is still put on the denylist, for whoever checks it.
  const claims = await verifyAccessToken(String(ctx.oidc.params?.token), deps, { retiredKeyChecks: false });
  // RFC 7009 §2.2: unknown, invalid or expired tokens answer 200 and change nothing.
  if (!claims) return;
  // RFC 7009 §2.1: a token of another client is refused, with the rule and the answer oidc-provider's revocation
  // policy gives an opaque one (server/provider.ts): a public caller gets 200, a confidential caller is told.
  if (claims.client_id !== ctx.oidc.client?.clientId) {
    if (ctx.oidc.client?.clientAuthMethod === 'none') return;
    throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
  }
  await failClosedInProvider(async () => {
    // The mark first: tokens exchanged from this one (server/revocation-lineage.ts) expire with it at the latest.
    await deps.revoked.revoke(tokenMark(claims.jti!), claims.exp!);
    await deps.revoked.revoke(claims.jti!, claims.exp!);
  }, deps.health);
  ctx.oidc.provider.emit('agentauth.jwt_revoked', ctx, claims);
}

function depsFor(ctx: KoaContextWithOIDC): StructuredTokenDeps {
  const deps = perProvider.get(ctx.oidc.provider);
  if (!deps) throw new Error('structured-token support is not registered for this provider');
  return deps;
}

function replaceStep(list: Array<{ name: string }>, name: string, endpoint: string): number {
  const i = list.findIndex((h) => h.name === name);
  if (i < 0) {
    throw new Error(
      `oidc-provider's ${endpoint} endpoint no longer has a "${name}" step; agentauth's JWT ${endpoint} support must be updated for this oidc-provider version`,
    );
  }
  return i;
}

/** Patches the two endpoint pipelines once per process (idempotent). */
function patchPipelines(): void {
  const marker = introspectionHandlers as unknown as Record<symbol, boolean>;
  if (marker[PATCHED]) return;

  const passThrough = Object.defineProperty(async (_ctx: KoaContextWithOIDC, next: () => Promise<void>) => next(), 'name', {
    value: 'acceptStructuredTokens',
  });

  const ri = replaceStep(introspectionHandlers, 'rejectStructuredTokens', 'introspection');
  const render = replaceStep(introspectionHandlers, 'renderTokenResponse', 'introspection');
  const originalRender = introspectionHandlers[render]!;
  introspectionHandlers[ri] = passThrough;
  introspectionHandlers[render] = Object.defineProperty(
    async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
      if (!isJwt(ctx.oidc.params?.token)) return originalRender(ctx, next);
      ctx.body = await introspectJwt(ctx, depsFor(ctx));
    },
    'name',
    { value: 'renderTokenResponse' },
  );

  const rr = replaceStep(revocationHandlers, 'rejectStructuredTokens', 'revocation');
  const revokeStep = replaceStep(revocationHandlers, 'revokeToken', 'revocation');
  const originalRevoke = revocationHandlers[revokeStep]!;
  revocationHandlers[rr] = passThrough;
  revocationHandlers[revokeStep] = Object.defineProperty(
    async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
      if (!isJwt(ctx.oidc.params?.token)) return originalRevoke(ctx, next);
      await revokeJwt(ctx, depsFor(ctx));
    },
    'name',
    { value: 'revokeToken' },
  );
  marker[PATCHED] = true;
}

/** Call before `new Provider(...)`: the pipelines are copied into the router when the provider is built. */
export function prepareStructuredTokenSupport(): void {
  patchPipelines();
}

export function registerStructuredTokenSupport(provider: Provider, deps: StructuredTokenDeps): void {
  perProvider.set(provider, deps);
}
