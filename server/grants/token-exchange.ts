import { hash } from 'node:crypto';

import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
import { buildTokenResponse, checkDpopReplay, checkDpopRequired, resolveRequestedResources, validateClientScope, validateDpop } from 'oidc-provider/lib/helpers/grants.js';

import { failClosedInProvider } from '../../adapters/oidc-adapter.js';
import type { ModelStore } from '../../adapters/types.js';
import { auditLater } from '../audit/trail.js';
import { TOKEN_EXCHANGE_GRANT_TYPE } from '../config.js';
import type { TokenExchangeConfig } from '../config.js';
import { DelegationRefusal, EXCHANGE_MAX_DEPTH_FIELD, EXCHANGE_RESOURCES_FIELD, checkExchanger, decideExchange } from '../policies/delegation.js';
import type { ActClaim, ExchangerFacts, SubjectFacts } from '../policies/delegation.js';
import { REGISTRATION_FIELD } from '../policies/registration.js';
import { TIER_FIELD } from '../policies/tiers.js';
import { LINEAGE_CLAIM, MAX_LINEAGE, childLineage, clientGeneration, lineageOf } from '../revocation-lineage.js';
import { activeJwtAccessToken, isJwt } from '../structured-tokens.js';
import { newGrant } from './new-grant.js';

export { TOKEN_EXCHANGE_GRANT_TYPE };

export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const SUBJECT_TOKEN_TYPES = new Set([ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE]);

const sha256 = (value: string) => hash('sha256', value, 'hex');

/**
 * The claims an exchanged token carries besides the standard ones, stored with it (opaque) or signed into it (JWT):
 * `act` (RFC 8693 §4.1, the whole chain) and `agentauth_parent`, the SHA-256 of the parent token's `jti`, which links
 * every exchanged token to the token it was derived from (for cascade revocation). Called from `extraTokenClaims`.
 */
export function delegationClaims(
  extra: unknown,
): { act: ActClaim; agentauth_parent: string; agentauth_lineage: readonly string[]; may_act?: { client_id: string } } | undefined {
  if (!extra || typeof extra !== 'object') return undefined;
  const { act, agentauth_parent: parent, may_act: mayAct, [LINEAGE_CLAIM]: lineageClaim } = extra as Record<string, unknown>;
  const lineage = lineageOf(lineageClaim);
  if (!act || typeof act !== 'object' || typeof parent !== 'string' || !lineage) return undefined;
  return {
    act: act as ActClaim,
    agentauth_parent: parent,
    agentauth_lineage: lineage,
    ...(objectClaim(mayAct) ? { may_act: mayAct as { client_id: string } } : {}),
  };
}

export interface TokenExchangeDeps {
  policy: TokenExchangeConfig;
  /** Stored client records: the generation a subject token's client is in (server/revocation-lineage.ts). */
  clients: Pick<ModelStore, 'find'>;
  health?: { markDown(err: unknown): void };
}

interface OpaqueAccessToken {
  jti: string;
  iat: number;
  exp: number;
  accountId?: string;
  clientId: string;
  aud?: string | string[];
  scope?: string;
  jkt?: string;
  grantId?: string;
  extra?: Record<string, unknown>;
  isValid?: boolean;
}

interface ActiveSubject extends SubjectFacts {
  jti: string;
  sub: string;
  iat: number;
  exp: number;
  grantId?: string | undefined;
  /** When the subject token's grant expires (epoch s); the token is inactive from then on, whatever its `exp`. */
  grantExp?: number | undefined;
  lineage: readonly string[];
}

/** How much longer an exchanged token's grant lives than the token (the token's `iat` can be a second later). */
const EXCHANGE_GRANT_MARGIN_SECONDS = 5;

interface TokenModel {
  grantId?: string;
  save(): Promise<string>;
  setThumbprint(kind: 'jkt', value: string): void;
  resourceServer?: unknown;
  scope?: string;
  extra?: Record<string, unknown>;
  expiration: number;
  expiresIn: number;
  iat?: number;
  exp?: number;
  tokenType: string;
}

/**
 * When an exchanged token is issued and when it ends (epoch s): `lifetime` from `issuedAt`, but never after any of
 * `ceilings` (the subject token's end, its grant's, the new token's own grant's). Absolute, so however late the
 * token is dated it cannot outlive what it came from; undefined when nothing of the lifetime is left.
 */
export function exchangedTokenDates(issuedAt: number, lifetime: number, ceilings: ReadonlyArray<number | undefined>): { iat: number; exp: number } | undefined {
  let exp = issuedAt + lifetime;
  for (const ceiling of ceilings) if (typeof ceiling === 'number' && ceiling < exp) exp = ceiling;
  return exp > issuedAt ? { iat: issuedAt, exp } : undefined;
}

function singleAudience(aud: unknown): string | undefined {
  if (typeof aud === 'string') return aud;
  if (Array.isArray(aud) && aud.length === 1 && typeof aud[0] === 'string') return aud[0];
  return undefined;
}

function objectClaim(value: unknown): Record<string, unknown> | undefined {
  return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/** What both token formats say about an active subject token, before it is read as delegation facts. */
interface SubjectView {
  jti: string;
  iat: number;
  exp: number;
  grantId?: string | undefined;
  grantExp?: number | undefined;
  sub: string;
  clientId: string;
  aud: unknown;
  scope?: string | undefined;
  jkt?: string | undefined;
  /** The JWT's claims, or the opaque token's stored `extra`: `act`, `may_act` and the lineage. */
  delegation: Record<string, unknown>;
}

/** The facts the delegation policy needs; undefined when the token is not for exactly one audience or its lineage is malformed. */
function subjectFacts(view: SubjectView): ActiveSubject | undefined {
  const audience = singleAudience(view.aud);
  const lineage = lineageOf(view.delegation[LINEAGE_CLAIM]);
  if (!audience || !lineage) return undefined;
  const { act, may_act: mayAct } = view.delegation;
  return {
    jti: view.jti,
    iat: view.iat,
    exp: view.exp,
    grantId: view.grantId,
    grantExp: view.grantExp,
    lineage,
    sub: view.sub,
    audience,
    clientId: view.clientId,
    scope: view.scope ? view.scope.split(' ') : [],
    ...(objectClaim(act) ? { act: act as ActClaim } : {}),
    ...(objectClaim(mayAct) ? { mayAct: mayAct as SubjectFacts['mayAct'] } : {}),
    ...(view.jkt ? { jkt: view.jkt } : {}),
  };
}

/** An agentauth access token (JWT or opaque) that is active now, as the facts the delegation policy needs. */
async function activeSubject(provider: Provider, token: string, deps: TokenExchangeDeps): Promise<ActiveSubject | undefined> {
  if (isJwt(token)) {
    const active = await activeJwtAccessToken(provider, token);
    if (!active) return undefined;
    const { claims, grantExp } = active;
    if (typeof claims.iat !== 'number' || typeof claims.exp !== 'number') return undefined;
    return subjectFacts({
      jti: claims.jti!, iat: claims.iat, exp: claims.exp, grantId: claims.grant_id, grantExp, sub: claims.sub ?? claims.client_id,
      clientId: claims.client_id, aud: claims.aud, scope: claims.scope, jkt: claims.cnf?.jkt, delegation: claims,
    });
  }
  const find = async (model: unknown) => (model as { find(v: string): Promise<OpaqueAccessToken | undefined> }).find(token);
  const at = (await failClosedInProvider(() => find(provider.AccessToken), deps.health)) ?? (await failClosedInProvider(() => find(provider.ClientCredentials), deps.health));
  // Cheap checks first: a token for several audiences is refused before the client and grant are read.
  if (!at || at.isValid === false || !singleAudience(at.aud)) return undefined;
  if (!(await provider.Client.find(at.clientId))) return undefined;
  let grantExp: number | undefined;
  if (at.grantId) {
    const grant = await provider.Grant.find(at.grantId, { ignoreExpiration: true });
    if (!grant || grant.isExpired || grant.clientId !== at.clientId) return undefined;
    grantExp = grant.exp;
  }
  // The adapter hands out no token whose lineage is revoked; a malformed one is not active either (subjectFacts).
  return subjectFacts({
    jti: at.jti, iat: at.iat, exp: at.exp, grantId: at.grantId, grantExp, sub: at.accountId ?? at.clientId,
    clientId: at.clientId, aud: at.aud, scope: at.scope, jkt: at.jkt, delegation: at.extra ?? {},
  });
}

function oauthError(refusal: DelegationRefusal, scope: string): Error {
  switch (refusal.code) {
    case 'invalid_target':
      return new errors.InvalidTarget(refusal.message);
    case 'invalid_scope':
      return new errors.InvalidScope(refusal.message, scope);
    case 'unauthorized_client':
      return new errors.UnauthorizedClient(refusal.message);
    case 'invalid_request':
      return new errors.InvalidRequest(refusal.message);
  }
}

/**
 * RFC 8693 token exchange. A client that received an agentauth access token (the subject token) trades it for one for
 * the next resource: the same subject, the exchanging client as the current actor (`act`, nesting the earlier ones),
 * scopes no wider than the subject token's and the hop's policy, DPoP-bound to the exchanging client's key when it
 * sends a proof. Who may exchange what is the operator's `tokenExchange` policy (server/policies/delegation.ts).
 * Public clients may exchange only with a DPoP proof, so the new token is never a bearer token held by nobody, and only
 * a DPoP-bound subject token whose key that proof is of: nothing else tells them from whoever copied the token.
 */
export function registerTokenExchangeGrant(provider: Provider, deps: TokenExchangeDeps): void {
  async function handler(ctx: KoaContextWithOIDC): Promise<void> {
    const client = ctx.oidc.client!;
    const params = ctx.oidc.params as Record<string, unknown>;
    const dPoP = await validateDpop(provider, ctx);
    checkDpopRequired(provider, ctx, dPoP);
    if (client.clientAuthMethod === 'none' && !dPoP) {
      throw new errors.InvalidRequest('a public client may exchange tokens only with a DPoP proof (the new token is bound to its key)');
    }

    // §2.1: the request.
    const subjectToken = params.subject_token;
    const subjectTokenType = params.subject_token_type;
    if (typeof subjectToken !== 'string' || !subjectToken) throw new errors.InvalidRequest('missing required parameter "subject_token" (an access token this server issued)');
    if (typeof subjectTokenType !== 'string' || !SUBJECT_TOKEN_TYPES.has(subjectTokenType)) {
      throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE} or ${JWT_TOKEN_TYPE}`);
    }
    // RFC 8693 §3: the jwt type says the token is a JWT. An opaque token is sent with the access_token type.
    if (subjectTokenType === JWT_TOKEN_TYPE && !isJwt(subjectToken)) {
      throw new errors.InvalidRequest(`subject_token_type ${JWT_TOKEN_TYPE} names a JWT, and subject_token is not one; send an opaque access token with ${ACCESS_TOKEN_TYPE}`);
    }
    if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest(`requested_token_type: only ${ACCESS_TOKEN_TYPE} is issued`);
    }
    if (params.actor_token !== undefined && params.actor_token_type === undefined) throw new errors.InvalidRequest('actor_token_type is required with actor_token');
    if (params.actor_token === undefined && params.actor_token_type !== undefined) throw new errors.InvalidRequest('actor_token_type given without actor_token');
    // RFC 8693 §2.1 and RFC 8707 allow several `resource` and `audience` parameters; this grant issues a token for one.
    if (Array.isArray(params.resource)) throw new errors.InvalidTarget('name exactly one resource: this grant issues a token for one resource server');
    const { audience } = params;
    const viaAudience = audience !== undefined && params.resource === undefined;
    if (audience !== undefined) {
      if (typeof audience !== 'string') throw new errors.InvalidTarget('name exactly one audience: this grant issues a token for one resource server');
      if (params.resource !== undefined && params.resource !== audience) throw new errors.InvalidTarget('resource and audience name different targets; name exactly one');
      params.resource = audience;
    }
    if (params.resource === undefined) throw new errors.InvalidTarget('name the next resource with "resource" (or "audience")');
    const resourceServers = await resolveRequestedResources(provider, ctx).catch((err: unknown) => {
      // The target came as `audience`: oidc-provider's refusal names the resource indicator the client never sent.
      if (viaAudience && err instanceof errors.InvalidTarget && typeof err.error_description === 'string') {
        throw new errors.InvalidTarget(`audience: ${err.error_description.replace(/^resource indicator /, 'the audience ')}`);
      }
      throw err;
    });
    if (resourceServers.length !== 1) throw new errors.InvalidTarget('exactly one resource must be requested with this grant');
    const resourceServer = resourceServers[0]!;
    const resource = resourceServer.identifier();
    // A scope named twice is one scope (RFC 6749 §3.3: the scope is a set).
    const requestedScope = typeof params.scope === 'string' && params.scope ? [...new Set(params.scope.split(' '))] : undefined;
    // The client's own registered scope (if any) caps what it may carry, as for every other grant.
    if (requestedScope) validateClientScope(provider, ctx);
    const clientScope = client.scope ? new Set(client.scope.split(' ')) : undefined;

    // Who may exchange at all is decided before the subject token is read, so that a client that may not learns
    // nothing about the tokens it presents.
    const metadata = client.metadata() as Record<string, unknown>;
    const exchanger: ExchangerFacts = {
      clientId: client.clientId,
      ...(typeof metadata[TIER_FIELD] === 'string' ? { tier: metadata[TIER_FIELD] } : {}),
      ...(typeof metadata[REGISTRATION_FIELD] === 'string' ? { registration: metadata[REGISTRATION_FIELD] } : {}),
      ...(Array.isArray(metadata[EXCHANGE_RESOURCES_FIELD]) ? { resources: metadata[EXCHANGE_RESOURCES_FIELD] as string[] } : {}),
      ...(typeof metadata[EXCHANGE_MAX_DEPTH_FIELD] === 'number' ? { maxDepth: metadata[EXCHANGE_MAX_DEPTH_FIELD] } : {}),
      ...(dPoP ? { jkt: dPoP.thumbprint } : {}),
      ...(client.clientAuthMethod === 'none' ? { public: true } : {}),
    };
    try {
      checkExchanger(deps.policy, exchanger);
    } catch (err) {
      if (err instanceof DelegationRefusal) throw oauthError(err, requestedScope?.join(' ') ?? '');
      throw err;
    }

    // §2.1: the subject and actor tokens.
    const subject = await activeSubject(provider, subjectToken, deps);
    if (!subject) throw new errors.InvalidRequest('subject_token is not an active access token of this server (expired, revoked, or not one)');
    // Read after the checks above: a disable of the subject's client from now on marks this generation (and revokes
    // what is issued below); one that happened before shows here as a generation at or after the token's issue.
    const generation = clientGeneration(await failClosedInProvider(() => deps.clients.find(subject.clientId), deps.health));
    if (generation > 0 && subject.iat <= generation) throw new errors.InvalidRequest('subject_token was revoked (its client was disabled)');
    if (params.actor_token !== undefined) {
      if (!SUBJECT_TOKEN_TYPES.has(String(params.actor_token_type))) throw new errors.InvalidRequest(`actor_token_type must be ${ACCESS_TOKEN_TYPE} or ${JWT_TOKEN_TYPE}`);
      if (params.actor_token_type === JWT_TOKEN_TYPE && !isJwt(params.actor_token)) {
        throw new errors.InvalidRequest(`actor_token_type ${JWT_TOKEN_TYPE} names a JWT, and actor_token is not one; send an opaque access token with ${ACCESS_TOKEN_TYPE}`);
      }
      const actor = await activeSubject(provider, String(params.actor_token), deps);
      if (!actor || actor.clientId !== client.clientId) throw new errors.InvalidRequest('actor_token is not an active access token issued to the exchanging client');
    }

    // Policy: what may be issued for this hop.
    let decision;
    try {
      decision = decideExchange(
        deps.policy,
        subject,
        exchanger,
        { resource, scopes: resourceServer.scope.split(' ').filter((sc) => !clientScope || clientScope.has(sc)) },
        requestedScope,
      );
    } catch (err) {
      if (err instanceof DelegationRefusal) throw oauthError(err, requestedScope?.join(' ') ?? '');
      throw err;
    }
    const scope = decision.scope.join(' ');

    // The last refusals come before anything is stored, so that a refused request leaves no grant behind: a chain
    // too deep, then a replayed proof (whose check records the proof, the one write a refusal may leave).
    const lineage = childLineage({ ...subject, clientGeneration: generation });
    if (lineage.length > MAX_LINEAGE) throw new errors.InvalidRequest('subject_token is too deep in its delegation chain to be exchanged again');
    if (dPoP) await checkDpopReplay(provider, ctx, dPoP, client.clientId);

    // Issue: the access token, and a grant of exactly this hop for the exchanging client that lives as long as it.
    const parent = sha256(subject.jti);
    const AccessToken = provider.AccessToken as unknown as new (init: Record<string, unknown>) => TokenModel;
    const at = new AccessToken({ accountId: subject.sub, client, gty: TOKEN_EXCHANGE_GRANT_TYPE, scope });
    at.resourceServer = resourceServer;
    at.scope = scope;
    at.extra = {
      act: decision.act,
      agentauth_parent: parent,
      [LINEAGE_CLAIM]: lineage,
      ...(decision.mayAct ? { may_act: decision.mayAct } : {}),
    };
    if (dPoP) at.setThumbprint('jkt', dPoP.thumbprint);
    // Never outlives the token it was exchanged from, nor that token's grant (so a revocation mark outlives every
    // descendant, and a chain ends where any of its grants ends).
    const now = Math.floor(Date.now() / 1000);
    at.expiresIn = Math.max(1, Math.min(at.expiration, subject.exp - now, (subject.grantExp ?? Infinity) - now));
    // The grant exists for this token alone (no refresh token comes from it): it expires a little after the token,
    // which is dated once more when saved, rather than after the tier's refresh lifetime.
    const grant = newGrant(provider, { accountId: subject.sub, client, expiresIn: at.expiresIn + EXCHANGE_GRANT_MARGIN_SECONDS });
    grant.addResourceScope(resource, scope);
    at.grantId = await grant.save();
    // Dated absolutely, not as a lifetime counted from when the token is saved: a second that ticks between the
    // sums above and the save would otherwise end the token a second after its subject. Never past the subject, its
    // grant, or this token's own grant (dated when its write began; introspection ends the token with it).
    const dates = exchangedTokenDates(Math.floor(Date.now() / 1000), at.expiresIn, [subject.exp, subject.grantExp, (grant as unknown as { exp?: number }).exp]);
    if (!dates) {
      await grant.destroy(); // it exists for this token alone
      throw new errors.InvalidRequest('subject_token expired while the exchange was being processed');
    }
    at.iat = dates.iat;
    at.exp = dates.exp;
    at.expiresIn = dates.exp - dates.iat;
    ctx.oidc.entity('AccessToken', at as never);
    const accessToken = await at.save();

    auditLater(ctx as never, {
      type: 'token.exchanged',
      sub: subject.sub,
      client_id: client.clientId,
      details: { sha256: sha256(accessToken), parent_jti_sha256: parent, parent_client_id: subject.clientId, from: subject.audience, to: resource, scope, depth: decision.depth },
    });
    ctx.body = { ...buildTokenResponse(provider, { accessToken, expiresIn: at.expiration, scope, tokenType: at.tokenType }), issued_token_type: ACCESS_TOKEN_TYPE };
  }

  provider.registerGrantType(
    TOKEN_EXCHANGE_GRANT_TYPE,
    handler as never,
    ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'resource', 'audience', 'scope'],
    // Accepted more than once so that several get RFC 8693 §2.2.2's invalid_target, not "must not be provided twice".
    ['resource', 'audience'],
  );
}
