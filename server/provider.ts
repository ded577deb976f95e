import { errors, Provider } from 'oidc-provider';
import type { ClientMetadata, Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { getDpopJwt } from 'oidc-provider/lib/helpers/validate_dpop.js';

import { StorageUnavailableError } from '../adapters/errors.js';
import type { StorageHealth } from '../adapters/health.js';
import { oidcAdapterFactory, temporarilyUnavailable } from '../adapters/oidc-adapter.js';
import type { Storage } from '../adapters/types.js';
import type { Keyring } from '../keys/keyring.js';
import { ClientSecretHasher } from './client-secrets.js';
import { MAX_EXCHANGE_RESOURCES, OIDC_SCOPES, knownScopes, longestSignedTokenLifetime } from './config.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import { withoutUserinfo } from './logger.js';
import { prepareClientAuthErrors } from './http/client-auth-errors.js';
import { prepareRequestObjectErrors } from './http/request-object-errors.js';
import { prepareScopeErrors, SCOPE_NOT_ALLOWED, scopeNotAllowed } from './http/scope-errors.js';
import { prepareUserinfoErrors } from './http/userinfo-errors.js';
import { installPushedRequestChecks, interactionPolicyRefusingUngrantableScope } from './policies/authorization-scope.js';
import { installUntrustedErrorPages, installUntrustedLogoutRedirects } from './http/untrusted-redirects.js';
import { shouldIssueRefreshToken } from './policies/refresh.js';
import { installRefreshGrace, isGraceReissue, pendingRotation } from './grants/refresh-grace.js';
import { bindRotatedRefreshTokens } from './grants/refresh-binding.js';
import { checkRefreshScope, checkRefreshTarget } from './policies/refresh-request.js';
import { LIMITS_FIELD, registrationLimitsProblem, requestLimits } from './policies/registration-limits.js';
import { TIER_FIELD, accessTokenLifetime, refreshTokenLifetime, tierOf } from './policies/tiers.js';
import type { TierLimits } from './policies/tiers.js';
import { pendingRegistrationAccessTokenRotation, prepareRegistrationSteps, registerRegistrationSteps } from './http/registration-steps.js';
import { prepareTokenLimitStep, registerTokenLimit } from './limits/token-steps.js';
import { installCodeChecks } from './grants/code-checks.js';
import { replayedProof, replayId } from './dpop-replay.js';
import { SharedWindowLimit } from './limits/window.js';
import { markClientRevoked, removeClientRecords } from './client-revocation.js';
import { tokensRevokedBefore } from './admin/disabled-clients.js';
import { CLIENT_AUTH_SIGNING_ALGS, ID_TOKEN_SIGNING_ALGS, REGISTRATION_FIELD, registrationOrigin, unattendedScopes } from './policies/registration.js';
import type { RegistrationPolicy } from './policies/registration.js';
import { tierFromPolicies, tierPolicyName } from './policies/tiers.js';
import { ResourceServerRegistry } from './resource-servers.js';
import { installClientMetadataDocuments } from './client-metadata/resolver.js';
import type { FetchTestOverrides } from './client-metadata/fetch.js';
import { prepareStructuredTokenSupport, registerStructuredTokenSupport } from './structured-tokens.js';
import { delegationClaims } from './grants/token-exchange.js';
import { EXCHANGE_MAX_DEPTH_FIELD, EXCHANGE_RESOURCES_FIELD, exchangeMaxDepthProblem, exchangeResourcesProblem } from './policies/delegation.js';
import { revocationHooks } from './revocation-lineage.js';
import { logoutSource, markClientSignOut, postLogoutSuccessSource, renderError } from '../interactions/provider-pages.js';
import { NONCE_PATH } from '../interactions/routes.js';
import { explainBodyParseErrors } from './http/body-parse-errors.js';
import { refuseReplacedFormValues } from './http/form-body-utf8.js';
import { refuseTruncatedForms } from './http/form-parameter-count.js';
import { whenRecorded } from './audit/trail.js';
import { dpopHeaderProblem, dpopProofAlg } from './http/dpop-header.js';
import { replaceDescription } from './http/error-description.js';
import { publishedAlgsOf } from './signing-alg.js';
import { secretRehasher } from './client-secret-rehash.js';
import { requestArrivedAt } from './http/body-received.js';
import { revokedWhileServed } from './subject-revocation.js';

/** How clients may authenticate, at the token, introspection and revocation endpoints alike. */
const CLIENT_AUTH_METHODS = ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'] as const;

export interface ProviderDeps {
  config: Config;
  storage: Storage;
  health: StorageHealth;
  keyring: Keyring;
  cookieKeys: string[];
  hasher: ClientSecretHasher;
  dpopNonceSecret: Buffer;
  log: Logger;
  /** Test-only fetch overrides for client ID metadata documents (server/client-metadata/fetch.ts); never from configuration. */
  clientMetadataTest?: FetchTestOverrides | undefined;
}

/**
 * A request that names scopes, none of them a resource server's (`openid`, and the OpenID scopes a library sends by
 * default, `profile email`, which this server grants nothing for): it is for the person's sign-in and userinfo, and
 * names no resource. Otherwise the only resource server would be taken for it (defaultResource) and the person's
 * token for it would carry none of its scopes.
 */
function asksOidcScopesOnly(ctx: KoaContextWithOIDC, resourceScopes: ReadonlySet<string>): boolean {
  const scope = String(ctx.oidc.params?.scope ?? '');
  return Boolean(scope) && scope.split(' ').every((s) => !resourceScopes.has(s));
}

interface TokenLike {
  resourceServer?: { accessTokenTTL?: number };
  isSenderConstrained?: () => boolean;
  iiat?: number;
  grantId?: string;
}

interface ClientLike {
  metadata(): Record<string, unknown>;
  clientAuthMethod?: string;
  grantTypeAllowed(type: string): boolean;
}

export function tierLimits(config: Config): TierLimits {
  return { tiers: config.tiers, defaultTier: config.registration.defaultTier, maxBearerTokenTTL: config.maxBearerTokenTTL };
}

function staticClients(config: Config, hasher: ClientSecretHasher): ClientMetadata[] {
  return config.clients.map((c) => ({
    client_id: c.client_id,
    ...(c.client_name ? { client_name: c.client_name } : {}),
    // Even secrets from the config file are held only as hashes in memory and compared in constant time.
    ...(c.client_secret ? { client_secret: hasher.hash(c.client_secret) } : {}),
    ...(c.jwks ? { jwks: c.jwks as unknown as ClientMetadata['jwks'] } : {}),
    ...(c.scope ? { scope: c.scope } : {}),
    ...(c.dpop_bound_access_tokens !== undefined ? { dpop_bound_access_tokens: c.dpop_bound_access_tokens } : {}),
    token_endpoint_auth_method: c.token_endpoint_auth_method,
    [REGISTRATION_FIELD]: 'operator',
    grant_types: c.grant_types,
    response_types: c.grant_types.includes('authorization_code') ? ['code'] : [],
    redirect_uris: c.redirect_uris,
    [TIER_FIELD]: c.tier ?? config.registration.defaultTier,
    ...(c.token_exchange_resources ? { [EXCHANGE_RESOURCES_FIELD]: c.token_exchange_resources } : {}),
    ...(c.token_exchange_max_depth !== undefined ? { [EXCHANGE_MAX_DEPTH_FIELD]: c.token_exchange_max_depth } : {}),
  }));
}

/** The registration policy's inputs, from configuration, and the algorithms of the published keys when given. */
export function registrationPolicy(config: Config, signingAlgs?: () => readonly string[]): RegistrationPolicy {
  return {
    allowedAuthMethods: config.registration.allowedAuthMethods,
    allowedGrantTypes: config.registration.allowedGrantTypes,
    knownScopes: knownScopes(config),
    anonymous: config.registration.anonymous,
    anonymousTokenExchange: config.tokenExchange.allowAnonymous,
    ...(signingAlgs ? { signingAlgs } : {}),
  };
}

/** How each client instance was registered (oidc-provider builds a new instance when metadata changes). */
const origins = new WeakMap<object, ReturnType<typeof registrationOrigin>>();
function originOf(client: { metadata(): unknown }): ReturnType<typeof registrationOrigin> {
  let origin = origins.get(client);
  if (origin === undefined) origins.set(client, (origin = registrationOrigin(client.metadata() as Record<string, unknown>)));
  return origin;
}

/**
 * client_credentials is machine access that no person consented to: an anonymously registered client gets it only
 * if the operator enabled it, and only with the allowlisted scopes (RFC 6749 §5.2 unauthorized_client / invalid_scope).
 * Called from the two resource hooks oidc-provider runs for every client_credentials request: the resource-server
 * lookup when a resource is named, the default resource when none is.
 */
function checkUnattendedAccess(ctx: KoaContextWithOIDC, anonymous: Config['registration']['anonymous']): void {
  const { client, params, route } = ctx.oidc;
  if (route !== 'token' || params?.grant_type !== 'client_credentials' || !client) return;
  const allowed = unattendedScopes(originOf(client), anonymous);
  if (allowed === 'any') return;
  if (allowed === undefined) {
    throw new errors.UnauthorizedClient('client_credentials is not available to clients registered without an initial access token on this server');
  }
  const requested = String(params.scope ?? '').split(' ').filter(Boolean);
  const refused = requested.filter((s) => !allowed.has(s));
  if (refused.length > 0) {
    throw new errors.InvalidScope(`clients registered without an initial access token may not receive ${refused.join(' ').slice(0, 200)} through client_credentials`, refused.join(' '));
  }
}

/**
 * RFC 8707 §2: a resource is refused (invalid_target) when the server does not consider it acceptable for the client.
 * For client_credentials, a resource server is acceptable only if the client may receive at least one of its scopes:
 * a client limited to scopes (its registered `scope`, or the anonymous allowlist) was otherwise handed a token for
 * any resource server, carrying no scope, which a resource server that checks only the audience accepts. A client
 * limited by neither (static, or registered with an initial access token and no `scope`) may name any.
 */
function checkMachineAudience(ctx: KoaContextWithOIDC, identifier: string, rsScopes: string, anonymous: Config['registration']['anonymous']): void {
  const { client, params, route } = ctx.oidc;
  if (route !== 'token' || params?.grant_type !== 'client_credentials' || !client) return;
  const registered = typeof client.scope === 'string' ? new Set(client.scope.split(' ')) : undefined;
  const unattended = unattendedScopes(originOf(client), anonymous);
  if (registered === undefined && unattended === 'any') return;
  const scopes = rsScopes.split(' ');
  if (scopes.some((s) => (registered === undefined || registered.has(s)) && (unattended === 'any' || unattended?.has(s) === true))) return;
  throw new errors.InvalidTarget(`this client may receive none of the scopes of ${identifier} (${scopes.join(' ')}), so it gets no token for it`);
}

export function providerConfiguration(deps: ProviderDeps): Configuration {
  const { config, storage, health, keyring, cookieKeys, hasher } = deps;
  const limits = tierLimits(config);
  const resources = new ResourceServerRegistry(config.resourceServers, () => keyring.active);
  const allScopes = [...knownScopes(config)];
  const resourceIdentifiers = new Set(config.resourceServers.map((rs) => rs.identifier));
  const resourceScopesById = new Map(config.resourceServers.map((rs) => [rs.identifier, rs.scopes]));
  const resourceScopes: ReadonlySet<string> = new Set(config.resourceServers.flatMap((rs) => rs.scopes));
  const alg = keyring.active.alg;
  const tierFor = (client: unknown) => tierOf(limits, client as ClientLike | undefined);

  const accessTtl = (_ctx: KoaContextWithOIDC, token: TokenLike, client: ClientLike) =>
    accessTokenLifetime(limits, tierFor(client), token.resourceServer?.accessTokenTTL, token.isSenderConstrained?.() === true);

  const registrationOn = config.registration.mode !== 'off';
  // Initial access tokens (token mode) carry a policy that assigns their client's tier.
  const tierPolicies = Object.fromEntries(
    Object.keys(config.tiers).map((name) => [
      tierPolicyName(name),
      (_ctx: KoaContextWithOIDC, properties: ClientMetadata) => {
        properties[TIER_FIELD] = name;
      },
    ]),
  );
  return {
    adapter: oidcAdapterFactory(storage, health, {
      clientSecrets: hasher,
      deferRefreshTokenReuse: true,
      refreshTokenRotation: pendingRotation,
      registrationAccessTokenRotation: pendingRegistrationAccessTokenRotation,
      // The request being handled (oidc-provider's async context) gets the same grant.revoked event a sequential
      // reuse emits, so the audit trail records the revocation either way.
      onGrantRevoked: (grantId) => {
        const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
        if (ctx?.oidc) ctx.oidc.provider.emit('grant.revoked', ctx, grantId);
      },
      revocation: revocationHooks(storage.revokedTokens, storage.model('Client'), new Set(config.clients.map((c) => c.client_id))),
      // A session written back by a request served while its person was revoked is deleted instead. The request read
      // the session when it arrived, before any body: the check starts at its arrival, however slowly a body follows.
      sessionRevoked: (accountId) => {
        const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
        return revokedWhileServed(storage.revokedTokens, accountId, ctx ? requestArrivedAt(ctx.req) : Date.now());
      },
      registrationPolicies: new Set(config.registration.mode === 'token' ? Object.keys(tierPolicies) : []),
      onUnconfiguredPolicy: (policy) =>
        deps.log.warn({ policy }, `an initial access token names ${policy}, which this configuration does not have (registration.mode ${config.registration.mode}, tiers ${Object.keys(config.tiers).join(', ')}): refused`),
    }),
    clients: staticClients(config, hasher),
    jwks: keyring.providerJwks() as Configuration['jwks'],
    cookies: { keys: cookieKeys },
    scopes: allScopes,
    claims: { openid: ['sub'] },
    responseTypes: ['code'],
    clientAuthMethods: [...CLIENT_AUTH_METHODS],
    // RFC 8414 metadata oidc-provider does not write itself. The introspection and revocation endpoints take the same
    // client authentication as the token endpoint (one clientAuthMethods for all three); without these keys a client
    // would have to assume client_secret_basic only (RFC 8414 §2). Since they list private_key_jwt, RFC 8414 §2 makes
    // their signing algorithms required too: the token endpoint's (one clientAuthSigningAlgValues for all three). The
    // wallet nonce endpoint is agentauth's own: the wallet-signature grant needs a nonce from it (docs/agents.md).
    discovery: {
      introspection_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS],
      introspection_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
      revocation_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS],
      revocation_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
      agentauth_wallet_nonce_endpoint: new URL(NONCE_PATH, `${config.issuer}/`).href,
    },
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: alg,
      introspection_signed_response_alg: alg,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    enabledJWA: {
      idTokenSigningAlgValues: [...ID_TOKEN_SIGNING_ALGS],
      userinfoSigningAlgValues: ['ES256', 'EdDSA'],
      introspectionSigningAlgValues: ['ES256', 'EdDSA'],
      authorizationSigningAlgValues: ['ES256', 'EdDSA'],
      // Asymmetric only: client_secret_jwt would need the secret in plaintext, and secrets are stored hashed.
      clientAuthSigningAlgValues: [...CLIENT_AUTH_SIGNING_ALGS],
      // Ed25519 is the fully-specified name for EdDSA over Ed25519 (RFC 9864); openid-client v6 uses it.
      dPoPSigningAlgValues: [...DPOP_SIGNING_ALGS],
    },
    extraClientMetadata: {
      // software_id and software_version (RFC 7591 §2) are not oidc-provider's own: listed here, or it drops them.
      properties: [TIER_FIELD, REGISTRATION_FIELD, LIMITS_FIELD, EXCHANGE_RESOURCES_FIELD, EXCHANGE_MAX_DEPTH_FIELD, 'software_id', 'software_version'],
      // Runs whenever client metadata is built: at registration, on update, and on every load from storage.
      validator(ctx, key, value, metadata) {
        if (key === EXCHANGE_RESOURCES_FIELD) {
          if (value === undefined) return;
          const problem = exchangeResourcesProblem(value, resourceIdentifiers, MAX_EXCHANGE_RESOURCES);
          if (problem) throw new errors.InvalidClientMetadata(`${EXCHANGE_RESOURCES_FIELD} ${problem}`);
          return;
        }
        if (key === EXCHANGE_MAX_DEPTH_FIELD) {
          const problem = value === undefined ? undefined : exchangeMaxDepthProblem(value);
          if (problem) throw new errors.InvalidClientMetadata(`${EXCHANGE_MAX_DEPTH_FIELD} ${problem}`);
          return;
        }
        if (key === REGISTRATION_FIELD) {
          // Recorded from what oidc-provider resolved, never from what the client sent.
          const oidc = (ctx as KoaContextWithOIDC | undefined)?.oidc;
          const m = metadata as unknown as Record<string, unknown>;
          if (oidc?.route === 'registration') m[REGISTRATION_FIELD] = oidc.entities.InitialAccessToken ? 'initial_access_token' : 'anonymous';
          else if (oidc?.route === 'client_update') m[REGISTRATION_FIELD] = registrationOrigin((oidc.client?.metadata() ?? {}) as Record<string, unknown>);
          else m[REGISTRATION_FIELD] = registrationOrigin({ [REGISTRATION_FIELD]: value });
          return;
        }
        if (key === LIMITS_FIELD) {
          // Recorded from the initial access token the registration presented (as the registration step read its limits
          // from the store), kept as it was by an update, never taken from what the client sent.
          const oidc = (ctx as KoaContextWithOIDC | undefined)?.oidc;
          const m = metadata as unknown as Record<string, unknown>;
          const limits = oidc?.route === 'registration' ? requestLimits(ctx as object) : oidc?.route === 'client_update' ? oidc.client?.metadata()[LIMITS_FIELD] : value;
          if (limits === undefined) {
            delete m[LIMITS_FIELD];
            return;
          }
          const problem = registrationLimitsProblem(limits);
          if (problem) throw new errors.InvalidClientMetadata(`${LIMITS_FIELD} ${problem}`);
          m[LIMITS_FIELD] = limits;
          return;
        }
        if (key !== TIER_FIELD) return;
        const route = (ctx as KoaContextWithOIDC | undefined)?.oidc?.route;
        let tier: string;
        if (route === 'registration') {
          tier = tierFromPolicies((ctx as KoaContextWithOIDC).oidc.entities.InitialAccessToken?.policies) ?? limits.defaultTier;
        } else if (route === 'client_update') {
          tier = ((ctx as KoaContextWithOIDC).oidc.client?.metadata()[TIER_FIELD] as string | undefined) ?? limits.defaultTier;
        } else {
          tier = typeof value === 'string' ? value : limits.defaultTier;
        }
        const settings = limits.tiers[tier];
        if (!settings) throw new errors.InvalidClientMetadata(`${TIER_FIELD} ${tier} is not a configured tier`);
        const m = metadata as unknown as Record<string, unknown>;
        m[TIER_FIELD] = tier;
        if (settings.dpop === 'required') m.dpop_bound_access_tokens = true;
      },
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => {
          const { clientId: owner, accountId } = token as { clientId?: string; accountId?: string };
          if (!mayIntrospect(client, owner)) return false;
          // Next, for a person's token introspected by another client, oidc-provider reads the token's client (for a
          // pairwise sub) and takes it as found: a client that is no longer one (a metadata document that can no
          // longer be used; a client removed while its tokens remain) would be a 500. Its tokens are not active.
          if (accountId !== undefined && owner !== undefined && owner !== client.clientId) return (await ctx.oidc.provider.Client.find(owner)) !== undefined;
          return true;
        },
      },
      // RFC 7009 §2.1: only the client a token was issued to may revoke it. oidc-provider's default rule, stated here
      // (the default prints a "you SHOULD change it" line at the first revocation): a public caller's request is
      // answered 200 and changes nothing, a confidential caller is told; JWT access tokens alike (revokeJwt in
      // server/structured-tokens.ts).
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => {
          if ((token as { clientId?: string }).clientId === client.clientId) return true;
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        },
      },
      jwtIntrospection: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      registration: {
        enabled: registrationOn,
        initialAccessToken: config.registration.mode === 'token',
        issueRegistrationAccessToken: true,
        ...(config.registration.mode === 'token' ? { policies: tierPolicies } : {}),
      },
      // Registration access tokens rotate on every read and update, by agentauth's own steps (one store call, a retry
      // after a 503 gets the successor: server/http/registration-steps.ts); oidc-provider's rotation on update
      // (destroy, then save) would lose the token when an outage cut between the two.
      registrationManagement: { enabled: registrationOn, rotateRegistrationAccessToken: false },
      // Advertised in discovery; resolution is agentauth's own (server/client-metadata/resolver.ts), so the built-in fetch is refused.
      clientIdMetadataDocument: { enabled: config.clientIdMetadataDocuments.enabled, ack: 'draft-02', allowFetch: async () => false },
      dPoP: {
        enabled: true,
        nonceSecret: deps.dpopNonceSecret,
        requireNonce: (ctx: KoaContextWithOIDC) => {
          const { client } = ctx.oidc;
          return client ? tierFor(client).dpopNonce : false;
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx) => {
          checkUnattendedAccess(ctx, config.registration.anonymous);
          // A request for OpenID scopes only (userinfo, a person's) names no resource; any other request needs exactly
          // one. client_credentials has no person for userinfo to describe: its token is always for a resource server
          // (an `openid`-only request took an opaque token with no audience that any resource server would accept).
          if (asksOidcScopesOnly(ctx, resourceScopes) && ctx.oidc.params?.grant_type !== 'client_credentials') return undefined;
          return resources.defaultResource();
        },
        getResourceServerInfo: async (ctx, identifier) => {
          checkUnattendedAccess(ctx, config.registration.anonymous);
          const info = resources.info(identifier);
          checkMachineAudience(ctx, identifier, info.scope ?? '', config.registration.anonymous);
          return info;
        },
        // The resource a code or refresh token was granted is the token's, unless the request asks for OpenID scopes
        // only (a refresh with scope=openid): that is a userinfo token, not a token for the resource with no scope.
        useGrantedResource: async (ctx) => !asksOidcScopesOnly(ctx, resourceScopes),
      },
    },
    // Whenever oidc-provider revokes the tokens of a grant (a refresh token or an opaque access token revoked, reuse,
    // logout), the grant goes too. Its default keeps the grant when an access token is revoked; the grant's
    // revocation mark (server/revocation-lineage.ts) is written all the same, and the person's next authorization of
    // the client reused the kept grant, so the JWT access tokens issued from it then were born revoked (70 minutes).
    revokeGrantPolicy: () => true,
    pkce: { required: () => true },
    // RFC 6749 §4.1.3: redirect_uri at the token endpoint is required when the authorization request had it, and must
    // match. oidc-provider's default fills it in from a client's only registered URI, at /auth and at /token, so a code
    // was redeemed without it; a client always names its redirect URI, as every OAuth library does.
    allowOmittingSingleRegisteredRedirectUri: false,
    // (The grant handler has already verified the proof, so its presence means the refresh token gets bound.)
    issueRefreshToken: async (ctx, client) => shouldIssueRefreshToken(client, Boolean(ctx.get('DPoP')), tierFor(client).publicClientRefresh),
    // Called by the refresh grant just before it uses up the refresh token: a target the token cannot serve is refused
    // here, leaving the token usable (its retry is then not a reuse that revokes the grant).
    rotateRefreshToken: (ctx) => {
      const token = ctx.oidc.entities.RefreshToken as { resource?: string | string[]; scopes?: Set<string> } | undefined;
      const requestedResource = ctx.oidc.params?.resource as string | string[] | undefined;
      const oidcScopesOnly = asksOidcScopesOnly(ctx, resourceScopes);
      checkRefreshTarget({ requested: requestedResource, granted: token?.resource, oidcScopesOnly });
      // The resource the token will be for (the one named; else, unless it asks for OpenID scopes only, the refresh
      // token's only one), and what it would carry: a resource named with OpenID scopes alone is refused too.
      const granted = oidcScopesOnly ? undefined : typeof token?.resource === 'string' ? token.resource : token?.resource?.length === 1 ? token.resource[0] : undefined;
      const resource = typeof requestedResource === 'string' ? requestedResource : granted;
      const grant = ctx.oidc.entities.Grant as { getResourceScope(resource: string): string } | undefined;
      const serverScopes = resource === undefined ? undefined : resourceScopesById.get(resource);
      if (resource !== undefined && grant && serverScopes) {
        const requested = ctx.oidc.params?.scope ? ctx.oidc.requestParamScopes : (token?.scopes ?? new Set<string>());
        checkRefreshScope({ resource, requested, resourceScopes: serverScopes, granted: grant.getResourceScope(resource).split(' ').filter(Boolean) });
      }
      // A grace re-issue hands back the existing successor as it is: the caller that rotated holds it too, and rotating
      // it here would turn that caller's next use into a reuse.
      return !isGraceReissue(ctx);
    },
    extraTokenClaims: async (_ctx, token) => {
      const { grantId } = token as unknown as TokenLike;
      // Set by the token-exchange grant (server/grants/token-exchange.ts) before the token is saved.
      const delegation = delegationClaims((token as { extra?: unknown }).extra);
      return grantId || delegation ? { ...(grantId ? { grant_id: grantId } : {}), ...delegation } : undefined;
    },
    ttl: {
      AccessToken: accessTtl as never,
      ClientCredentials: accessTtl as never,
      RefreshToken: ((_ctx: KoaContextWithOIDC, token: TokenLike, client: ClientLike) => refreshTokenLifetime(tierFor(client), token.iiat)) as never,
      // The client a grant was built with (server/grants/new-grant.ts). oidc-provider's own code builds grants from a
      // client id only, where the request's client is the grant's.
      Grant: ((ctx: KoaContextWithOIDC | undefined, grant: { clientId?: string }, client: ClientLike | undefined) =>
        tierFor(client ?? (ctx?.oidc?.client?.clientId === grant.clientId ? ctx?.oidc?.client : undefined)).refreshTokenAbsoluteTTL) as never,
      AuthorizationCode: AUTHORIZATION_CODE_TTL_SECONDS,
      Interaction: 600,
      // Code-flow tokens end with their sign-in session (so RP-initiated logout revokes them); the session record
      // therefore lives as long as the longest refresh lifetime any tier allows. The tier still caps each token.
      Session: Math.max(...Object.values(config.tiers).map((t) => t.refreshTokenAbsoluteTTL)),
      // ID tokens never outlive the longest access token, so key archival math holds. (Signed introspection responses
      // carry no exp: oidc-provider dates them with iat only.)
      IdToken: Math.min(300, longestSignedTokenLifetime(config)),
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
      policy: interactionPolicyRefusingUngrantableScope(OIDC_SCOPES),
    },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    renderError,
  };
}

/**
 * Who may introspect a token: the client it was issued to, or a confidential client declared in the configuration
 * file (resource servers are configured by the operator). Agents that registered themselves cannot read each
 * other's tokens.
 */
export function mayIntrospect(caller: { clientId: string; clientAuthMethod?: string; noManage?: boolean }, tokenClientId: string | undefined): boolean {
  if (caller.clientId === tokenClientId) return true;
  return caller.noManage === true && caller.clientAuthMethod !== 'none';
}

/**
 * oidc-provider accepts a DPoP proof without a nonce while its `iat` is within this many seconds of now, either way
 * (CHALLENGE_OK_WINDOW in lib/helpers/challenge.js), and keeps its replay record for as long after its use.
 */
const DPOP_IAT_WINDOW_SECONDS = 300;

/**
 * Until when (epoch s, exclusive) the DPoP proof on the request being handled would still be accepted, when `jti` is
 * its jti and it carries no nonce: oidc-provider compares whole seconds (|floor(now) - iat| <= the window), so it takes
 * the proof until the second `iat` + the window + 1 begins. (A record ending at `iat` + the window, a fraction of a
 * second after that second began, left up to a second in which the proof was accepted again.) oidc-provider keeps a
 * proof's replay record until use + the window, so a proof dated up to the window ahead would outlive its record and
 * could be used again once it expired (RFC 9449 §11.1 wants it refused for as long as it is accepted). A proof with a nonce is bounded by the nonce's shorter life. "No
 * nonce" as oidc-provider reads it (lib/helpers/validate_dpop.js, `if (!payload.nonce)`): an empty nonce is none.
 */
function dpopProofAcceptedUntil(payload: Record<string, unknown>): number | undefined {
  return !payload.nonce && typeof payload.iat === 'number' ? payload.iat + DPOP_IAT_WINDOW_SECONDS + 1 : undefined;
}

/** How long an authorization code lives (RFC 6749 §4.1.2: a maximum of 10 minutes is recommended; one is plenty). */
const AUTHORIZATION_CODE_TTL_SECONDS = 60;

/** What a reused refresh token is told (the grant.error listener below). */
export const REFRESH_TOKEN_REUSED = 'refresh token already used: it was rotated by an earlier refresh, and presenting it again is treated as token theft (refresh token reuse detection, RFC 9700 section 4.14.2), so its grant is revoked with every access and refresh token issued from it; obtain a new authorization (the user signs in again for a new authorization code, or a new wallet-signature grant)';

/** What an authorization code that is unknown or expired is told (the grant.error listener below). */
export const CODE_NOT_FOUND = `authorization code not found: it is not a code this server issued, or it has expired (codes live ${AUTHORIZATION_CODE_TTL_SECONDS} s); exchange a code as soon as the redirect brings it, or start a new authorization request`;

/** The algorithms a DPoP proof may be signed with (enabledJWA.dPoPSigningAlgValues; discovery's dpop_signing_alg_values_supported). */
export const DPOP_SIGNING_ALGS = ['ES256', 'EdDSA', 'Ed25519'] as const;

/**
 * The URL oidc-provider compares a DPoP proof's `htu` with on this request (lib/helpers/validate_dpop.js: the URL of
 * the route it resolved, `new URL(ctx.oidc.urlFor(ctx.oidc.route)).href`), or undefined if it cannot be said.
 */
function dpopExpectedHtu(ctx: KoaContextWithOIDC): string | undefined {
  try {
    const route = ctx.oidc?.route;
    return typeof route === 'string' ? new URL(ctx.oidc.urlFor(route)).href : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The DPoP proof oidc-provider verified on the request being handled, when `jti` is its jti (not a client
 * assertion's), and the route it was sent to.
 */
function requestDpopProof(provider: Provider, jti: string): { payload: Record<string, unknown>; route: string | undefined } | undefined {
  const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
  if (!ctx?.oidc) return undefined;
  const payload = getDpopJwt(provider, ctx)?.payload;
  return payload?.jti === jti ? { payload, route: ctx.oidc.route } : undefined;
}

/** oidc-provider configured for agentauth, with its events logged (reasons included, credentials never). */
export function createProvider(deps: ProviderDeps): Provider {
  prepareStructuredTokenSupport();
  prepareRegistrationSteps();
  prepareTokenLimitStep();
  prepareClientAuthErrors();
  prepareRequestObjectErrors();
  prepareScopeErrors();
  prepareUserinfoErrors();
  const provider = new Provider(deps.config.issuer, providerConfiguration(deps));
  const publishedAlgs = publishedAlgsOf(deps.keyring);
  installCodeChecks(provider);
  installPushedRequestChecks(provider, OIDC_SCOPES);
  installUntrustedErrorPages(provider);
  installUntrustedLogoutRedirects(provider);
  explainBodyParseErrors(provider);
  refuseReplacedFormValues(provider);
  refuseTruncatedForms();
  registerTokenLimit(provider, { limit: new SharedWindowLimit(deps.storage.nonces, 'token', deps.config.limits.tokenRequestsPerClient, deps.config.limits.ipv6PrefixLength), health: deps.health });
  registerRegistrationSteps(provider, {
    registration: deps.config.registration,
    policy: registrationPolicy(deps.config, publishedAlgs),
    limits: tierLimits(deps.config),
    hasher: deps.hasher,
    registrationAccessTokens: deps.storage.model('RegistrationAccessToken'),
    markClientRevoked: (clientId, record) => markClientRevoked(deps.storage, clientId, record),
    removeClientRecords: (clientId) => removeClientRecords(deps.storage, clientId),
    undelivered: deps.storage.nonces,
    health: deps.health,
    log: deps.log,
    quota: new SharedWindowLimit(deps.storage.nonces, 'registration', deps.config.registration.quota, deps.config.limits.ipv6PrefixLength),
    nonces: deps.storage.nonces,
  });
  if (deps.config.clientIdMetadataDocuments.enabled) {
    const tierName = deps.config.registration.defaultTier;
    installClientMetadataDocuments(provider, {
      settings: deps.config.clientIdMetadataDocuments,
      policy: registrationPolicy(deps.config, publishedAlgs),
      tier: { name: tierName, settings: deps.config.tiers[tierName]! },
      staticClientIds: new Set(deps.config.clients.map((c) => c.client_id)),
      log: deps.log,
      test: deps.clientMetadataTest,
    });
  }
  registerStructuredTokenSupport(provider, {
    issuer: deps.config.issuer,
    jwks: () => deps.keyring.publicJwks() as never,
    revoked: deps.storage.revokedTokens,
    health: deps.health,
    mayIntrospect,
    tokensRevokedBefore: tokensRevokedBefore(deps.storage.model('Client')),
    signedByUs: {
      maxLifetime: longestSignedTokenLifetime(deps.config),
      retiredAt: (kid) => {
        const at = deps.keyring.view().timelines.find((t) => t.kid === kid)?.retiredAt;
        return at && at.getTime() <= Date.now() ? Math.floor(at.getTime() / 1000) : undefined;
      },
      // Another instance signs with a retired key until its next key refresh, by its own clock (keys.clockSkewSeconds).
      retireSlackSeconds: deps.config.keys.refreshIntervalSeconds + deps.config.keys.clockSkewSeconds,
    },
  });

  const { hasher, health, storage, log } = deps;
  // Reuse of a just-rotated refresh token within the tier's grace gets its successor (server/grants/refresh-grace.ts).
  const graceLimits = tierLimits(deps.config);
  // A public client's bearer refresh token is bound at the first refresh that carries a DPoP proof (RFC 9449 §5).
  bindRotatedRefreshTokens(provider);
  installRefreshGrace(provider, {
    refreshTokens: storage.model('RefreshToken'),
    graceSeconds: (client) => tierOf(graceLimits, client as unknown as ClientLike).refreshGraceSeconds,
    health,
    undelivered: storage.nonces,
  });
  // Secrets are stored as keyed hashes; compare the presented secret's hash in constant time. During a rotation of the
  // KEK, a secret that matched a hash not (known to be) under the KEK's pepper is stored again under it (a client of
  // the configuration file is hashed at every start under the KEK, so never is).
  const rehash = hasher.rotating ? secretRehasher({ clients: storage.model('Client'), nonces: storage.nonces, hasher, log }) : undefined;
  provider.Client.prototype.compareClientSecret = function compareClientSecret(this: { clientId: string; clientSecret?: string }, actual: string) {
    const matched = hasher.match(actual, this.clientSecret);
    if (matched !== undefined && rehash && !hasher.isCurrent(this.clientSecret)) rehash(this.clientId, this.clientSecret!, actual);
    return matched !== undefined;
  } as never;

  // oidc-provider's replay check is find-then-save; make it one atomic insert so two concurrent uses of a DPoP
  // proof or client assertion jti (on any instance sharing the store) give exactly one success.
  const replay = storage.model('ReplayDetection');
  (provider.ReplayDetection as unknown as { unique: (iss: string, jti: string, exp: number) => Promise<boolean> }).unique = async (iss, jti, exp) => {
    const id = replayId(iss, jti);
    try {
      const proof = requestDpopProof(provider, jti);
      const until = Math.max(exp, (proof && dpopProofAcceptedUntil(proof.payload)) ?? 0);
      const unique = await replay.insertOnce(id, { kind: 'ReplayDetection', jti: id, iss }, Math.max(1, until - Math.floor(Date.now() / 1000)));
      // oidc-provider reports this as invalid_grant at the token endpoint and invalid_token at userinfo; RFC 9449 §5
      // and §7.1 make a replayed proof an invalid DPoP proof at both.
      if (!unique && (proof?.route === 'token' || proof?.route === 'userinfo')) throw replayedProof();
      return unique;
    } catch (err) {
      if (err instanceof StorageUnavailableError) {
        health.markDown(err);
        throw temporarilyUnavailable();
      }
      throw err;
    }
  };

  const detail = (err: unknown) => {
    const e = err as { error?: string; error_description?: string; error_detail?: string; status?: number };
    // A description may quote what the client sent (a resource URL): a password in a URL's userinfo is not logged.
    return { error: e.error, error_description: withoutUserinfo(e.error_description), error_detail: withoutUserinfo(e.error_detail), status: e.status };
  };
  for (const event of ['grant.error', 'registration_create.error', 'registration_update.error', 'introspection.error', 'revocation.error', 'userinfo.error', 'authorization.error']) {
    (provider as unknown as NodeJS.EventEmitter).on(event, (_ctx: unknown, err: unknown) => log.info({ event, ...detail(err) }, 'request refused'));
  }
  // Token-endpoint errors carry their reason only in error_detail ("grant request is invalid" otherwise);
  // client developers need it to act ("PKCE verification failed", "DPoP proof JWT not provided", ...).
  (provider as unknown as NodeJS.EventEmitter).on('grant.error', (ctx: KoaContextWithOIDC, err: { error_detail?: unknown; scope?: unknown }) => {
    const body = ctx.body as Record<string, unknown> | undefined;
    if (body && typeof body === 'object' && typeof err.error_detail === 'string' && body.error_description === 'grant request is invalid') {
      body.error_description = err.error_detail;
      // A DPoP-bound refresh token (RFC 9449 §5) used without a proof, or with another key's: said which.
      if (err.error_detail === 'failed jkt verification' && ctx.oidc.params?.grant_type === 'refresh_token') {
        body.error_description = ctx.get('DPoP')
          ? "the refresh token is bound to another DPoP key: send a DPoP proof made with the key it was issued to (RFC 9449 section 5)"
          : 'the refresh token is bound to a DPoP key: send a DPoP proof made with that key (RFC 9449 section 5)';
      }
      // A rotated refresh token presented again outside the refresh grace (server/grants/refresh-grace.ts lets one
      // within it through): oidc-provider has revoked the grant, as reuse of a possibly stolen token; said so, and what
      // the client must do, since every token it holds from that grant is now refused.
      if (err.error_detail === 'refresh token already used' && ctx.oidc.params?.grant_type === 'refresh_token') {
        body.error_description = REFRESH_TOKEN_REUSED;
      }
      // Not found is unknown or expired (an expired code is never read back from the store): both, and what to do.
      if (err.error_detail === 'authorization code not found' && ctx.oidc.params?.grant_type === 'authorization_code') {
        body.error_description = CODE_NOT_FOUND;
      }
    }
    // oidc-provider names the refused scope only in a member of its own (`scope`); the description says which, and what
    // the client may ask for (its own registered scope: it has authenticated).
    if (body && typeof body === 'object' && body.error === 'invalid_scope' && body.error_description === SCOPE_NOT_ALLOWED && typeof err.scope === 'string') {
      replaceDescription(ctx, body, scopeNotAllowed(err.scope, ctx.oidc.client?.scope));
    }
  });
  // A DPoP proof that fails jose's checks (its typ, alg, embedded key, signature) is answered "invalid DPoP key
  // binding" whatever failed; the check that failed (jose's message, about the proof only) is what a developer needs.
  // The description is said twice where oidc-provider sent a challenge (userinfo: RFC 9449 §7.1): in the body and in
  // WWW-Authenticate, which oidc-provider wrote first. Both are rewritten (replaceDescription), so they never disagree.
  for (const event of ['grant.error', 'userinfo.error', 'pushed_authorization_request.error']) {
    (provider as unknown as NodeJS.EventEmitter).on(event, (ctx: KoaContextWithOIDC, err: { cause?: unknown }) => {
      const body = ctx.body as Record<string, unknown> | undefined;
      // An empty DPoP header, or several (server/http/dpop-header.ts): what is wrong is the header, not a proof.
      const header = dpopHeaderProblem(ctx.req);
      if (header !== undefined && body && typeof body === 'object' && body.error === 'invalid_dpop_proof') {
        replaceDescription(ctx, body, header);
        return;
      }
      // oidc-provider says only "htu mismatch": the URL it compared the proof's htu with (lib/helpers/validate_dpop.js,
      // the endpoint URL it resolved for this request, query and fragment ignored) is what the client must send.
      if (body && typeof body === 'object' && body.error === 'invalid_dpop_proof' && body.error_description === 'DPoP proof htu mismatch') {
        const expected = dpopExpectedHtu(ctx);
        if (expected !== undefined) replaceDescription(ctx, body, `DPoP proof htu mismatch: the proof's htu must be ${expected} (RFC 9449 section 4.3)`);
        return;
      }
      const cause = err.cause as { code?: unknown; message?: unknown } | undefined;
      if (!body || typeof body !== 'object' || body.error !== 'invalid_dpop_proof' || body.error_description !== 'invalid DPoP key binding') return;
      // An alg outside the list: the list (discovery's dpop_signing_alg_values_supported) is what the client can use.
      if (cause?.code === 'ERR_JOSE_ALG_NOT_ALLOWED') {
        const alg = dpopProofAlg(ctx.req);
        replaceDescription(ctx, body, `invalid DPoP proof: 'alg' (Algorithm) Header Parameter value not allowed${alg ? ` (${alg})` : ''}: sign the proof with one of ${DPOP_SIGNING_ALGS.join(', ')} (dpop_signing_alg_values_supported, RFC 9449 section 5.1)`);
        return;
      }
      if (typeof cause?.code === 'string' && cause.code.startsWith('ERR_J') && typeof cause.message === 'string') {
        replaceDescription(ctx, body, `invalid DPoP proof: ${cause.message.slice(0, 200)}`);
        return;
      }
      // WebCrypto refused to import the embedded key (jose's EmbeddedJWK: a point off the curve, a member missing,
      // another curve than the alg's): a DOMException, whose message ("Invalid keyData") names no JWT member.
      if (cause instanceof DOMException && (cause.name === 'DataError' || cause.name === 'NotSupportedError')) {
        const alg = dpopProofAlg(ctx.req);
        replaceDescription(ctx, body, `invalid DPoP proof: the 'jwk' header is not a public key usable with the proof's alg${alg ? ` (${alg})` : ''}`);
      }
    });
  }
  provider.on('server_error', (_ctx, err) => log.error({ event: 'server_error', err }, 'server error'));
  (provider as unknown as NodeJS.EventEmitter).on('end_session.success', (ctx: KoaContextWithOIDC) => markClientSignOut(ctx));
  // RFC 6749 §3.3 and agents.md: a token with no scope has no `scope` member. oidc-provider answers `"scope": ""` when
  // the grant has scopes and none of them is the token's resource server's (an authorization for openid alone, then a
  // token for a resource server; a refresh of such a grant).
  provider.on('grant.success', (ctx) => {
    const body = ctx.body as Record<string, unknown> | undefined;
    if (body && typeof body === 'object' && body.scope === '') delete body.scope;
  });
  // Logged once the token's audit record is durable: a token whose record could not be written is answered 503, not issued.
  provider.on('grant.success', (ctx) => {
    const fields = { event: 'grant.success', client_id: ctx.oidc.client?.clientId, grant_type: ctx.oidc.params?.grant_type };
    whenRecorded(ctx as unknown as { state: Record<string, unknown> }, () => log.info(fields, 'token issued'));
  });
  (provider as unknown as NodeJS.EventEmitter).on('agentauth.jwt_revoked', (_ctx: unknown, claims: { jti?: string; client_id?: string }) =>
    log.info({ event: 'token.revoked', jti: claims.jti, client_id: claims.client_id }, 'JWT access token revoked'),
  );
  provider.on('grant.revoked', (_ctx, grantId) => log.info({ event: 'grant.revoked', grant_id: grantId }, 'grant revoked'));
  provider.on('registration_create.success', (_ctx, client) => log.info({ event: 'client.registered', client_id: client.clientId }, 'client registered'));
  return provider;
}
