import { errors } from 'oidc-provider';

import { TOKEN_EXCHANGE_GRANT_TYPE, WALLET_GRANT_TYPE } from '../config.js';
import type { RegistrationConfig, TierConfig } from '../config.js';
import { canonicalJson } from '../audit/chain.js';
import { TIER_FIELD } from './tiers.js';
import { LIMITS_FIELD, limitsOfClient, refreshTokenAlone } from './registration-limits.js';
import type { RegistrationLimits } from './registration-limits.js';
import { algsFor, clientJwksProblem } from './client-keys.js';
import { displayTextProblem } from './display-text.js';
import { jsonDepthExceeds, MAX_METADATA_DEPTH } from './json-depth.js';
import { EXCHANGE_MAX_DEPTH_FIELD, EXCHANGE_RESOURCES_FIELD } from './delegation.js';

/**
 * Client metadata agentauth accepts at registration (RFC 7591 §2, RFC 9449 §5.2, OIDC registration fields that
 * matter to agents). Anything else is refused by name rather than silently dropped.
 */
const SUPPORTED = new Set([
  'redirect_uris', 'token_endpoint_auth_method', 'grant_types', 'response_types', 'client_name', 'client_uri', 'logo_uri',
  'scope', 'contacts', 'tos_uri', 'policy_uri', 'jwks', 'software_id', 'software_version', 'dpop_bound_access_tokens',
  'token_endpoint_auth_signing_alg', 'post_logout_redirect_uris', 'application_type', 'id_token_signed_response_alg',
  // agentauth's extension (RFC 7591 §2): the only resources the client may exchange tokens into (RFC 8693).
  'token_exchange_resources', 'token_exchange_max_depth',
]);
// The registration-origin field is in a module of its own, which the CLI uses without loading oidc-provider.
export { REGISTRATION_FIELD, REGISTRATION_ORIGINS, registrationOrigin } from './registration-origin.js';
export type { RegistrationOrigin } from './registration-origin.js';
import { REGISTRATION_FIELD, registrationOrigin } from './registration-origin.js';
import type { RegistrationOrigin } from './registration-origin.js';

/**
 * RFC 7592 §2.2: an update carries every field the server returned. These the server sets itself; the client may
 * echo them unchanged (they are then left as they are) but never change them.
 */
const SERVER_ASSIGNED = new Set([TIER_FIELD, REGISTRATION_FIELD, LIMITS_FIELD]);
/** RFC 7592 §2.2 says the client MUST NOT send these; an unchanged echo of the read response is tolerated and dropped. */
const ECHO_ONLY = new Set(['registration_access_token', 'registration_client_uri', 'client_secret_expires_at', 'client_id_issued_at']);
const WHY_NOT: Record<string, string> = {
  jwks_uri: 'is not supported: send the public keys inline as "jwks" (agentauth does not fetch client-supplied URLs)',
  software_statement: 'is not supported: this server approves no software statements; send the client metadata itself',
  sector_identifier_uri: 'is not supported (agentauth does not fetch client-supplied URLs)',
  request_uris: 'is not supported',
  [TIER_FIELD]: 'is assigned by the authorization server (registration policy or initial access token), not chosen by the client',
  [REGISTRATION_FIELD]: 'is recorded by the authorization server, not chosen by the client',
  [LIMITS_FIELD]: 'is set by the authorization server from the initial access token, not chosen by the client',
};

/** contacts: e-mail addresses (RFC 7591 §2), at most 320 characters each (RFC 3696 errata's 64 + 1 + 255). */
const MAX_CONTACTS = 20;
const MAX_CONTACT = 320;
/** redirect_uris and post_logout_redirect_uris: at most this many each (a native app registers a few loopback ports). */
export const MAX_REDIRECT_URIS = 20;
/** client_uri, logo_uri, tos_uri, policy_uri: at most this many characters (what browsers and link previews handle). */
const MAX_INFO_URI = 2000;
/** A redirect or post-logout redirect URI: at most this many characters, as the other URIs (browsers follow it). */
const MAX_REDIRECT_URI = 2000;
/** The client-assertion algorithms the token endpoint accepts (enabledJWA.clientAuthSigningAlgValues, server/provider.ts). */
export const CLIENT_AUTH_SIGNING_ALGS = ['ES256', 'ES384', 'EdDSA', 'PS256', 'RS256'] as const;
/** The algorithms agentauth signs ID tokens with (enabledJWA.idTokenSigningAlgValues, server/provider.ts). */
export const ID_TOKEN_SIGNING_ALGS = ['ES256', 'EdDSA'] as const;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const OIDC_ONLY = new Set(['openid']);

export interface RegistrationPolicy {
  allowedAuthMethods: RegistrationConfig['allowedAuthMethods'];
  allowedGrantTypes: RegistrationConfig['allowedGrantTypes'];
  /** Every scope a client may register: all resource-server scopes plus the OpenID ones agentauth serves. */
  knownScopes: ReadonlySet<string>;
  /** What anonymously registered clients may do without a person's consent (registration.anonymous). */
  anonymous: RegistrationConfig['anonymous'];
  /**
   * Whether anonymously registered clients may exchange tokens (tokenExchange.allowAnonymous): where they may not, the
   * token-exchange grant type is refused at their registration rather than registered and refused at every exchange.
   */
  anonymousTokenExchange?: boolean;
  /**
   * The algorithms of the published signing keys (what discovery advertises): an `id_token_signed_response_alg` must
   * be one of them. Absent: any of ID_TOKEN_SIGNING_ALGS.
   */
  signingAlgs?: () => readonly string[];
}

/**
 * Registration: how the client is being registered, and the limits of its initial access token if it has any.
 * Update: the client's current metadata (its read response), which carries the limits it registered under.
 */
export type RegistrationRequestContext =
  | { update: false; origin: RegistrationOrigin; limits?: RegistrationLimits | undefined }
  | { update: true; current: Record<string, unknown>; presentedToken?: string; clientUri?: string };

/**
 * Scopes a client may receive without a person's consent (client_credentials): for anonymous registrations only the
 * operator's allowlist, and only if the operator enabled the grant for them; `'any'` for clients the operator vouched
 * for (initial access token, configuration file). `undefined`: client_credentials is not available at all.
 */
export function unattendedScopes(origin: RegistrationOrigin, anonymous: RegistrationConfig['anonymous']): ReadonlySet<string> | 'any' | undefined {
  // Anyone can publish a metadata document: such a client never gets machine access nobody consented to.
  if (origin === 'client_id_metadata_document') return undefined;
  if (origin !== 'anonymous') return 'any';
  return anonymous.clientCredentials ? new Set(anonymous.clientCredentialsScopes) : undefined;
}

/**
 * The same JSON data, whatever the order of object members (the audit log's canonical form): an echo whose library
 * reordered them still matches. Values that are not JSON data (never in a parsed body or stored metadata) differ.
 */
function sameJson(a: unknown, b: unknown): boolean {
  try {
    return canonicalJson(a) === canonicalJson(b);
  } catch {
    return false;
  }
}

const metadataError = (field: string, problem: string) => new errors.InvalidClientMetadata(`${field} ${problem}`);
// RFC 7591 §3.2.2 invalid_redirect_uri (oidc-provider's InvalidRedirectUri is the authorization-endpoint variant with a fixed text).
const redirectError = (field: string, problem: string) => new errors.CustomOIDCProviderError('invalid_redirect_uri', `${field} ${problem}`);

function stringArray(body: Record<string, unknown>, field: string): string[] | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw metadataError(field, 'must be an array of strings');
  const twice = (v as string[]).find((x, i) => v.indexOf(x) !== i);
  if (twice !== undefined) throw metadataError(field, `lists ${JSON.stringify(twice.slice(0, 200))} twice`);
  return v as string[];
}

/** The first character of `uri` outside printable ASCII (U+0021 to U+007E), described by its code point. */
function firstNonAscii(uri: string): string | undefined {
  const bad = /[^\x21-\x7e]/u.exec(uri)?.[0];
  return bad === undefined ? undefined : `${JSON.stringify(bad)} (U+${bad.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')})`;
}

/**
 * Exact redirect URIs only, https or loopback http (RFC 8252 §7.3), no fragment, no credentials, no wildcard; written
 * in printable ASCII and in the normalised form a WHATWG URL parser gives (so the URI stored is the one a browser
 * comes back with, and nothing the parser would strip, such as a trailing newline, hides in it).
 */
export function checkRedirectUri(field: string, uri: string): void {
  if (uri.length > MAX_REDIRECT_URI) throw redirectError(field, `must contain URIs of at most ${MAX_REDIRECT_URI} characters (one has ${uri.length})`);
  const bad = firstNonAscii(uri);
  if (bad) {
    throw redirectError(field, `must be printable ASCII without spaces (URIs are; internationalised host names go in their xn-- form); ${JSON.stringify(uri)} contains ${bad}`);
  }
  const escape = /%(?![0-9A-Fa-f]{2})/.exec(uri);
  if (escape) throw redirectError(field, `contains a malformed percent-escape at ${JSON.stringify(uri.slice(escape.index, escape.index + 3))}: % must start an escape of two hex digits`);
  const u = URL.parse(uri);
  if (!u) throw redirectError(field, `must contain absolute URIs (got ${JSON.stringify(uri)})`);
  if (u.href !== uri) throw redirectError(field, `must be in normalised form: register ${JSON.stringify(u.href)} instead of ${JSON.stringify(uri)}`);
  if (uri.includes('#')) throw redirectError(field, 'must not contain a fragment');
  if (u.username || u.password) throw redirectError(field, 'must not contain user credentials');
  if (uri.includes('*')) throw redirectError(field, 'must be exact URIs; wildcards are not allowed');
  if (u.protocol === 'https:') return;
  if (u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname)) return;
  throw redirectError(field, `must use https, or http on a loopback host (127.0.0.1, [::1], localhost); got ${JSON.stringify(uri.slice(0, 200))}`);
}

/** The value the server returned for `field` in the client's read response, if it returns that field at all. */
function echoedValue(context: Extract<RegistrationRequestContext, { update: true }>, field: string): { known: boolean; value?: unknown } {
  if (field === 'registration_access_token') return { known: context.presentedToken !== undefined, value: context.presentedToken };
  if (field === 'registration_client_uri') return { known: context.clientUri !== undefined, value: context.clientUri };
  if (Object.hasOwn(context.current, field)) return { known: true, value: context.current[field] };
  return { known: false };
}

/**
 * client_uri, logo_uri, tos_uri, policy_uri: an absolute https URL as written (`https://` first: the WHATWG parser
 * would also read `https:host` and strip spaces, tabs and newlines), in printable ASCII (no control, bidi or invisible
 * characters hide in it), without user credentials, at most MAX_INFO_URI characters. Not normalised: the client's
 * spelling is kept (`https://agent.example.com` without its slash).
 */
function checkHttpsUri(field: string, value: unknown): void {
  if (typeof value !== 'string' || !/^https:\/\//i.test(value) || URL.parse(value)?.protocol !== 'https:') throw metadataError(field, 'must be an https URL');
  if (value.length > MAX_INFO_URI) throw metadataError(field, `must be at most ${MAX_INFO_URI} characters (it has ${value.length})`);
  const bad = firstNonAscii(value);
  if (bad) throw metadataError(field, `must be printable ASCII without spaces (internationalised host names go in their xn-- form; other characters percent-encoded); it contains ${bad}`);
  const url = URL.parse(value)!;
  if (url.username || url.password) throw metadataError(field, 'must not contain user credentials');
}

/**
 * The signing algorithms a client names: strings the server offers, and for private_key_jwt one that a registered key
 * can sign with (otherwise the client registers and then never authenticates: oidc-provider picks verification keys by
 * the assertion's alg).
 */
function checkAlgorithms(body: Record<string, unknown>, method: string, policy: RegistrationPolicy, context: RegistrationRequestContext): void {
  const idTokenAlg = body.id_token_signed_response_alg;
  if (idTokenAlg !== undefined && (typeof idTokenAlg !== 'string' || !(ID_TOKEN_SIGNING_ALGS as readonly string[]).includes(idTokenAlg))) {
    throw metadataError('id_token_signed_response_alg', `must be one of ${ID_TOKEN_SIGNING_ALGS.join(', ')} (got ${JSON.stringify(idTokenAlg)?.slice(0, 100)})`);
  }
  // One no published key has: refused, unless an update echoes what the client already has (registered before the
  // operator rotated to another algorithm; its ID tokens then come with the active key's, server/signing-alg.ts).
  const published = policy.signingAlgs?.();
  if (typeof idTokenAlg === 'string' && published && !published.includes(idTokenAlg) && !(context.update && context.current.id_token_signed_response_alg === idTokenAlg)) {
    throw metadataError('id_token_signed_response_alg', `is ${idTokenAlg}, which none of this server's signing keys uses; use ${[...new Set(published)].join(' or ')} (id_token_signing_alg_values_supported)`);
  }
  const authAlg = body.token_endpoint_auth_signing_alg;
  if (authAlg === undefined) return;
  if (typeof authAlg !== 'string' || !(CLIENT_AUTH_SIGNING_ALGS as readonly string[]).includes(authAlg)) {
    throw metadataError('token_endpoint_auth_signing_alg', `must be one of ${CLIENT_AUTH_SIGNING_ALGS.join(', ')} (got ${JSON.stringify(authAlg)?.slice(0, 100)})`);
  }
  if (method !== 'private_key_jwt') throw metadataError('token_endpoint_auth_signing_alg', 'is only used with private_key_jwt');
  const keys = (body.jwks as { keys?: unknown[] } | undefined)?.keys ?? [];
  if (!keys.some((key) => algsFor(key as Record<string, unknown>).includes(authAlg) && ((key as { alg?: unknown }).alg ?? authAlg) === authAlg)) {
    throw metadataError('token_endpoint_auth_signing_alg', `is ${authAlg}, which none of the keys in jwks can sign with: the client could never authenticate`);
  }
}

/**
 * What a client declared about token exchange only narrows with an update: token_exchange_resources may lose entries
 * but not gain any or be left out, and token_exchange_max_depth may go down but not up or be left out. Whoever holds a
 * registration access token (a leaked one too) cannot widen what a stolen secret of the client could reach; a client
 * that needs more registers again.
 */
function checkExchangeNarrowing(body: Record<string, unknown>, current: Record<string, unknown>): void {
  const resources = current[EXCHANGE_RESOURCES_FIELD];
  if (Array.isArray(resources)) {
    const next = body[EXCHANGE_RESOURCES_FIELD];
    if (next === undefined) {
      throw metadataError(EXCHANGE_RESOURCES_FIELD, `cannot be removed by an update: it can only be narrowed (send a subset of ${JSON.stringify(resources)}); register a new client to exchange into more resources`);
    }
    const added = Array.isArray(next) ? next.filter((r) => !resources.includes(r)) : [];
    if (added.length > 0) {
      throw metadataError(EXCHANGE_RESOURCES_FIELD, `can only be narrowed by an update: ${JSON.stringify(added).slice(0, 300)} ${added.length === 1 ? 'is' : 'are'} not in ${JSON.stringify(resources)}; register a new client to exchange into more resources`);
    }
  }
  const depth = current[EXCHANGE_MAX_DEPTH_FIELD];
  if (typeof depth === 'number') {
    const next = body[EXCHANGE_MAX_DEPTH_FIELD];
    if (next === undefined) throw metadataError(EXCHANGE_MAX_DEPTH_FIELD, `cannot be removed by an update: it can only be lowered (from ${depth}); register a new client for longer chains`);
    if (typeof next === 'number' && next > depth) throw metadataError(EXCHANGE_MAX_DEPTH_FIELD, `can only be lowered by an update (from ${depth}, not raised to ${next}); register a new client for longer chains`);
  }
}

/**
 * Validates a registration (or RFC 7592 update) request body against agentauth's policy and the client's tier.
 * Pure: no I/O. Throws invalid_client_metadata / invalid_redirect_uri naming the field. Returns the body with the
 * tier's defaults applied (e.g. dpop_bound_access_tokens for tiers that require DPoP).
 */
export function checkRegistrationRequest(
  input: unknown,
  policy: RegistrationPolicy,
  tier: TierConfig,
  context: RegistrationRequestContext,
): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new errors.InvalidClientMetadata('the request body must be a JSON object of client metadata');
  }
  if (jsonDepthExceeds(input, MAX_METADATA_DEPTH)) {
    throw new errors.InvalidClientMetadata(`the request body nests more than ${MAX_METADATA_DEPTH} levels deep; client metadata nests 4 at most`);
  }
  const body = { ...(input as Record<string, unknown>) };
  const origin = context.update ? registrationOrigin(context.current) : context.origin;

  for (const field of Object.keys(body)) {
    if (SUPPORTED.has(field)) continue;
    if (context.update) {
      if (field === 'client_id' || field === 'client_secret') continue; // checked against the client by the caller
      const echoed = echoedValue(context, field);
      if (echoed.known) {
        if (!sameJson(body[field], echoed.value)) {
          throw metadataError(field, SERVER_ASSIGNED.has(field) || ECHO_ONLY.has(field)
            ? 'is assigned by the authorization server and cannot be changed by the client'
            : 'cannot be changed: agentauth does not support setting it (send back the value the server returned, or leave it out)');
        }
        // Returned by the server, sent back unchanged (RFC 7592 §2.2): the server's value stands.
        delete body[field];
        continue;
      }
    }
    // RFC 7591 §3.2.2: a software statement this server does not approve (it approves none) has its own code.
    if (field === 'software_statement') throw new errors.UnapprovedSoftwareStatement(`software_statement ${WHY_NOT[field]}`);
    throw metadataError(field, (Object.hasOwn(WHY_NOT, field) ? WHY_NOT[field] : undefined) ?? 'is not a supported client metadata field');
  }

  const method = body.token_endpoint_auth_method ?? 'client_secret_basic';
  if (typeof method !== 'string' || !(policy.allowedAuthMethods as readonly string[]).includes(method)) {
    throw metadataError('token_endpoint_auth_method', `must be one of ${policy.allowedAuthMethods.join(', ')} (got ${JSON.stringify(method)})`);
  }

  const grantTypes = stringArray(body, 'grant_types') ?? ['authorization_code'];
  if (grantTypes.length === 0) throw metadataError('grant_types', 'must contain at least one grant type (leave it out for ["authorization_code"])');
  for (const g of grantTypes) {
    if (!(policy.allowedGrantTypes as readonly string[]).includes(g)) {
      throw metadataError('grant_types', `may only contain ${policy.allowedGrantTypes.join(', ')} (got ${JSON.stringify(g)})`);
    }
  }
  const limits = context.update ? limitsOfClient(context.current) : context.limits;
  // (A client loaded with damaged limits is refused by the metadata validator first, server/provider.ts: this is for
  // a caller that hands in metadata it did not load through oidc-provider.)
  if (limits === 'damaged') throw metadataError(LIMITS_FIELD, 'stored for this client cannot be read, so its metadata cannot change: ask the operator of this server');
  const tokenSays = `the initial access token this client ${context.update ? 'registered' : 'registers'} with allows only`;
  if (limits?.grant_types !== undefined) {
    const outside = grantTypes.find((g) => !limits.grant_types!.includes(g));
    if (outside !== undefined) {
      const defaulted = body.grant_types === undefined ? ', the default when grant_types is left out' : '';
      throw metadataError('grant_types', `may only contain ${limits.grant_types.join(', ')}: ${tokenSays} those (got ${JSON.stringify(outside)}${defaulted})`);
    }
  }
  if (grantTypes.includes('client_credentials') && method === 'none') {
    throw metadataError('grant_types', 'client_credentials needs an authenticated client: a token_endpoint_auth_method other than none');
  }
  if (grantTypes.includes('client_credentials') && unattendedScopes(origin, policy.anonymous) === undefined) {
    throw metadataError('grant_types', 'client_credentials is not available to clients registered without an initial access token on this server (the operator enables it with registration.anonymous.clientCredentials); use authorization_code, or ask the operator for an initial access token');
  }
  // An update keeps what the client already has (it must send its whole metadata, RFC 7592 §2.2): only adding the grant is refused.
  const hadExchange = context.update && Array.isArray(context.current.grant_types) && context.current.grant_types.includes(TOKEN_EXCHANGE_GRANT_TYPE);
  if (grantTypes.includes(TOKEN_EXCHANGE_GRANT_TYPE) && origin === 'anonymous' && policy.anonymousTokenExchange !== true && !hadExchange) {
    throw metadataError('grant_types', `${TOKEN_EXCHANGE_GRANT_TYPE} is not available to clients registered without an initial access token on this server (the operator enables it with tokenExchange.allowAnonymous); leave it out, or ask the operator for an initial access token`);
  }
  if (refreshTokenAlone(grantTypes)) {
    throw metadataError('grant_types', `refresh_token is only issued with authorization_code or ${WALLET_GRANT_TYPE}`);
  }

  const responseTypes = stringArray(body, 'response_types') ?? (grantTypes.includes('authorization_code') ? ['code'] : []);
  if (responseTypes.some((r) => r !== 'code')) throw metadataError('response_types', 'may only contain "code"');
  if (grantTypes.includes('authorization_code') !== responseTypes.includes('code')) {
    throw metadataError('response_types', 'must be ["code"] exactly when grant_types contains authorization_code');
  }

  const redirectUris = stringArray(body, 'redirect_uris') ?? [];
  if (grantTypes.includes('authorization_code') && redirectUris.length === 0) {
    throw redirectError('redirect_uris', 'are required for the authorization_code grant');
  }
  const postLogoutUris = stringArray(body, 'post_logout_redirect_uris') ?? [];
  for (const [field, uris] of [['redirect_uris', redirectUris], ['post_logout_redirect_uris', postLogoutUris]] as const) {
    if (uris.length > MAX_REDIRECT_URIS) throw redirectError(field, `may list at most ${MAX_REDIRECT_URIS} URIs (got ${uris.length})`);
    for (const uri of uris) checkRedirectUri(field, uri);
  }

  if (limits?.scope !== undefined) {
    const allowed = limits.scope.split(' ');
    if (body.scope === undefined) {
      // A client without scope may request any scope this server defines: it gets the ones it is allowed (those still defined).
      const defined = allowed.filter((s) => policy.knownScopes.has(s));
      if (defined.length === 0) throw metadataError('scope', `cannot be given: ${tokenSays} ${limits.scope}, and no resource server of this authorization server defines any of those any more`);
      body.scope = defined.join(' ');
    } else if (typeof body.scope === 'string') {
      const outside = [...new Set(body.scope.split(' ').filter((s) => !allowed.includes(s)))];
      if (outside.length > 0) {
        throw metadataError('scope', `contains ${outside.slice(0, 10).map((s) => JSON.stringify(s.slice(0, 100))).join(', ')}: ${tokenSays} ${limits.scope} (leave scope out to get all of those)`);
      }
    }
  }
  if (body.scope !== undefined) {
    if (typeof body.scope !== 'string') throw metadataError('scope', 'must be a space-separated string');
    for (const s of body.scope.split(' ')) {
      if (!policy.knownScopes.has(s)) throw metadataError('scope', `contains ${JSON.stringify(s)}, which no resource server of this authorization server defines`);
    }
    const unattended = unattendedScopes(origin, policy.anonymous);
    if (grantTypes.includes('client_credentials') && unattended !== 'any' && unattended !== undefined && !grantTypes.includes('authorization_code')) {
      const extra = body.scope.split(' ').filter((s) => !unattended.has(s) && !OIDC_ONLY.has(s));
      if (extra.length > 0) {
        throw metadataError('scope', `contains ${extra.map((s) => JSON.stringify(s)).join(', ')}, which clients registered without an initial access token may not receive through client_credentials (allowed: ${[...unattended].join(' ') || 'none'})`);
      }
    }
  }

  for (const field of ['client_uri', 'logo_uri', 'tos_uri', 'policy_uri']) if (body[field] !== undefined) checkHttpsUri(field, body[field]);
  for (const field of ['client_name', 'software_id', 'software_version']) {
    const problem = body[field] === undefined ? undefined : displayTextProblem(body[field]);
    if (problem) throw metadataError(field, problem);
  }
  const contacts = stringArray(body, 'contacts') ?? [];
  if (contacts.length > MAX_CONTACTS) throw metadataError('contacts', `may list at most ${MAX_CONTACTS} addresses`);
  for (const contact of contacts) {
    const problem = displayTextProblem(contact, MAX_CONTACT);
    if (problem) throw metadataError('contacts', `entries ${problem}`);
  }
  if (body.application_type !== undefined && body.application_type !== 'web' && body.application_type !== 'native') {
    throw metadataError('application_type', 'must be web or native');
  }
  if (method === 'private_key_jwt' && body.jwks === undefined) throw metadataError('jwks', 'is required for private_key_jwt');
  if (body.jwks !== undefined && method !== 'private_key_jwt') throw metadataError('jwks', 'is only used with private_key_jwt');
  if (body.jwks !== undefined) {
    const problem = clientJwksProblem(body.jwks);
    if (problem) throw metadataError('jwks', problem);
  }
  checkAlgorithms(body, method, policy, context);

  // Write the defaults back: oidc-provider's own defaults differ (response_types ["code"]).
  body.grant_types = grantTypes;
  body.response_types = responseTypes;
  body.redirect_uris = redirectUris;

  if (context.update) {
    // Unsupported and server-assigned fields were checked above; those are kept as stored.
    for (const field of SERVER_ASSIGNED) delete body[field];
    checkExchangeNarrowing(body, context.current);
  }

  const bound = body.dpop_bound_access_tokens;
  if (bound !== undefined && typeof bound !== 'boolean') throw metadataError('dpop_bound_access_tokens', 'must be a boolean');
  if (tier.dpop === 'required') {
    if (bound === false) throw metadataError('dpop_bound_access_tokens', 'must be true: this client\'s tier requires DPoP-bound tokens');
    body.dpop_bound_access_tokens = true;
  }
  return body;
}
