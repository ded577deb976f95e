import { errors, interactionPolicy, Provider } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

import { isOwnMachineHost } from '../client-metadata/addresses.js';

/**
 * RFC 6749 §3.3: a request whose scope cannot be granted fails "indicating an invalid scope". oidc-provider only finds
 * out once every interaction is done: a grant that ended with no scope at all is `access_denied` ("no scope was
 * granted", lib/actions/authorization/interactions.js), sent back after the person had signed in, and read by the
 * client as the person saying no. A scope that can be granted is an OpenID scope (`oidcScopes`) or a scope of a
 * requested resource server: when the request names none, it is refused with invalid_scope before the sign-in. A
 * scope of another resource server does not count: oidc-provider knows every resource server's scopes as its own
 * `scopes` (requestParamOIDCScopes), so consent would store it on the grant, but no token for the requested resource
 * server can carry it (the token came back with `"scope": ""`), and the person would have been shown it. It runs as
 * the first check of the login prompt, so on every authorization request (and its resumption), after oidc-provider
 * resolved the client, redirect_uri, scope and resources.
 */
export function refuseUngrantableScope(ctx: KoaContextWithOIDC, oidcScopes: readonly string[]): void {
  const { oidc } = ctx;
  if (oidc.params?.authorization_details !== undefined) return;
  const requested = oidc.requestParamScopes;
  if (oidcScopes.some((s) => requested.has(s))) return;
  const servers = Object.entries(oidc.resourceServers ?? {});
  if (servers.some(([, rs]) => [...requested].some((s) => rs.scopes.has(s)))) return;
  const offered = servers.map(([id, rs]) => `${id}: ${[...rs.scopes].join(' ') || '(none)'}`).join('; ');
  throw new errors.InvalidScope(
    `the request names no scope this server can grant: request openid, or a scope of the requested resource server${servers.length === 1 ? '' : 's'}${offered ? ` (${offered})` : ''}`,
    // No `scope` member: oidc-provider would add it to the error redirect, which RFC 6749 §4.1.2.1 does not define.
    undefined as unknown as string,
  );
}

/**
 * RFC 8707 §2 (a resource the server does not find acceptable is invalid_target) and RFC 9700 §2.3 (least privilege):
 * each resource an authorization request names must be one it asks the person to grant a scope of. oidc-provider asks
 * consent for scopes only: a resource named beside another, with none of its own scopes, went into the code all the
 * same, was never shown on the consent page, and gave the client the person's token for it, audience-bound with no
 * scope (which a resource server that checks only the audience accepts); silently too, once the person had consented
 * to the other (prompt=none). Refused before the sign-in, naming the resource and its scopes. An OpenID-only request
 * (userinfo) names no resource.
 */
export function refuseUnscopedResource(ctx: KoaContextWithOIDC): void {
  const { oidc } = ctx;
  if (oidc.params?.authorization_details !== undefined) return;
  const requested = oidc.requestParamScopes;
  for (const [id, rs] of Object.entries(oidc.resourceServers ?? {})) {
    if ([...requested].some((s) => rs.scopes.has(s))) continue;
    throw new errors.InvalidTarget(
      `the request names no scope of ${id.slice(0, 200)} (${[...rs.scopes].join(' ')}): request one of them, or leave that resource out (an OpenID-only request names no resource)`,
    );
  }
}

/** A JWK SHA-256 thumbprint (RFC 7638) in base64url without padding: 43 characters. */
const JWK_THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;

/**
 * RFC 9449 §10: `dpop_jkt` is the JWK SHA-256 thumbprint of the key the code will be redeemed with. oidc-provider
 * takes any value (at /auth and at PAR) and compares it only at the token endpoint, so a malformed one let the person
 * sign in and consent to a code that could never be redeemed ("DPoP proof key thumbprint does not match dpop_jkt").
 * Refused before the sign-in, as the scope check is, for a pushed request too (its parameters are the request's here).
 */
export function refuseMalformedDpopJkt(ctx: KoaContextWithOIDC): void {
  const jkt = ctx.oidc.params?.dpop_jkt;
  if (jkt === undefined || (typeof jkt === 'string' && JWK_THUMBPRINT.test(jkt))) return;
  throw new errors.InvalidRequest('dpop_jkt must be the base64url SHA-256 JWK thumbprint (RFC 7638) of the DPoP key that will redeem the code: 43 characters (RFC 9449 section 10)');
}

/**
 * RFC 8252 §8.6 and RFC 9700 §2.1: a request is not approved automatically, without the person, where the client's
 * identity cannot be assured, "including the case where the user has previously approved an authorization request for
 * a given client id". A public client's code sent to a loopback redirect goes to whatever process listens on that
 * port, and the code is all it needs: oidc-provider asks again each time for `application_type: native` clients only,
 * and a public `web` client with a loopback redirect (the default type; a client ID metadata document's too) was
 * re-authorized silently after its first approval. Consent is asked on every such request (an error for
 * `prompt=none`: `interaction_required`). A confidential client's code is of no use without its credentials.
 */
export function loopbackConsentNeeded(ctx: KoaContextWithOIDC): boolean {
  const { oidc } = ctx;
  if (oidc.client?.clientAuthMethod !== 'none' || oidc.params?.response_type === 'none' || oidc.result?.consent) return false;
  // Any spelling of the person's own machine (127.0.0.0/8, [::1], localhost and .localhost names, ...), over http or https.
  const host = typeof oidc.params?.redirect_uri === 'string' ? URL.parse(oidc.params.redirect_uri)?.hostname : undefined;
  return host !== undefined && isOwnMachineHost(host);
}

/**
 * oidc-provider's interaction policy, with refuseUngrantableScope, refuseUnscopedResource and refuseMalformedDpopJkt
 * first, and loopbackConsentNeeded among the consent checks.
 */
export function interactionPolicyRefusingUngrantableScope(oidcScopes: readonly string[]): interactionPolicy.Prompt[] {
  const policy = interactionPolicy.base();
  const login = policy.get('login');
  if (!login) throw new Error('oidc-provider\'s interaction policy has no login prompt');
  login.checks.add(
    new interactionPolicy.Check('agentauth_dpop_jkt_wellformed', 'dpop_jkt is not a JWK thumbprint', (ctx) => {
      refuseMalformedDpopJkt(ctx);
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
    0,
  );
  login.checks.add(
    new interactionPolicy.Check('agentauth_scope_grantable', 'no requested scope can be granted', (ctx) => {
      refuseUngrantableScope(ctx, oidcScopes);
      refuseUnscopedResource(ctx);
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
    0,
  );
  const consent = policy.get('consent');
  if (!consent) throw new Error('oidc-provider\'s interaction policy has no consent prompt');
  consent.checks.add(
    new interactionPolicy.Check('agentauth_loopback_public_client', 'a public client with a loopback redirect needs the person each time', 'interaction_required', (ctx) =>
      loopbackConsentNeeded(ctx) ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT,
    ),
    0,
  );
  return policy;
}

/**
 * RFC 9126 §2.1: a pushed authorization request is validated as the authorization endpoint would validate it. The two
 * checks above run in oidc-provider's interaction policy, which PAR does not reach: a request naming no grantable scope,
 * or a malformed dpop_jkt, was pushed (201) and refused only when used at /auth, in the browser, where the client that
 * pushed it cannot read the error. They run again when the PAR endpoint saves the request (its last step, after every
 * check of its own, resources resolved), so the client gets the 400. Pinned by test/unit/oidc-provider-internals.test.ts.
 */
export function installPushedRequestChecks(provider: Provider, oidcScopes: readonly string[]): void {
  const proto = provider.PushedAuthorizationRequest.prototype as unknown as { save(...args: unknown[]): Promise<unknown> };
  const save = proto.save;
  proto.save = async function saveAfterChecks(this: unknown, ...args: unknown[]) {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    if (ctx?.oidc?.route === 'pushed_authorization_request') {
      refuseMalformedDpopJkt(ctx);
      refuseUngrantableScope(ctx, oidcScopes);
      refuseUnscopedResource(ctx);
    }
    return save.apply(this, args);
  };
}
