import { errors, interactionPolicy } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

/**
 * RFC 6749 §3.3: a request whose scope cannot be granted fails "indicating an invalid scope". oidc-provider only finds
 * out once every interaction is done: a grant that ended with no scope at all is `access_denied` ("no scope was
 * granted", lib/actions/authorization/interactions.js), sent back after the person had signed in, and read by the
 * client as the person saying no. The scopes consent can grant are exactly those the request names that are in this
 * server's `scopes` (requestParamOIDCScopes: the OpenID scopes and every resource server's) or scopes of a requested
 * resource server (the consent prompt's op_scopes_missing and rs_scopes_missing checks): when there are none, the
 * request is refused with invalid_scope before the sign-in, on oidc-provider's own condition. It runs as the first check of the login prompt, so on every authorization request (and its
 * resumption), after oidc-provider resolved the client, redirect_uri, scope and resources.
 */
export function refuseUngrantableScope(ctx: KoaContextWithOIDC): void {
  const { oidc } = ctx;
  if (oidc.params?.authorization_details !== undefined) return;
  if (oidc.requestParamOIDCScopes.size > 0) return;
  const requested = oidc.requestParamScopes;
  const servers = Object.entries(oidc.resourceServers ?? {});
  if (servers.some(([, rs]) => [...requested].some((s) => rs.scopes.has(s)))) return;
  const offered = servers.map(([id, rs]) => `${id}: ${[...rs.scopes].join(' ') || '(none)'}`).join('; ');
  throw new errors.InvalidScope(
    `the request names no scope this server can grant: request openid, or a scope of the requested resource server${servers.length === 1 ? '' : 's'}${offered ? ` (${offered})` : ''}`,
    // No `scope` member: oidc-provider would add it to the error redirect, which RFC 6749 §4.1.2.1 does not define.
    undefined as unknown as string,
  );
}

/** oidc-provider's interaction policy, with refuseUngrantableScope first. */
export function interactionPolicyRefusingUngrantableScope(): interactionPolicy.Prompt[] {
  const policy = interactionPolicy.base();
  const login = policy.get('login');
  if (!login) throw new Error('oidc-provider\'s interaction policy has no login prompt');
  login.checks.add(
    new interactionPolicy.Check('agentauth_scope_grantable', 'no requested scope can be granted', (ctx) => {
      refuseUngrantableScope(ctx);
      return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
    0,
  );
  return policy;
}
