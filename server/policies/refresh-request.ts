import { errors } from 'oidc-provider';

/** What a refresh request asks for, and what its refresh token was granted. */
export interface RefreshTarget {
  /** The request's `resource` parameter(s) (RFC 8707 §2.2), as oidc-provider parsed them. */
  requested: string | readonly string[] | undefined;
  /** The resource(s) the refresh token was granted for. */
  granted: string | readonly string[] | undefined;
  /** Whether the request asks only for OpenID scopes (userinfo), which names no resource. */
  oidcScopesOnly: boolean;
}

const list = (v: string | readonly string[] | undefined): string[] => (v === undefined ? [] : typeof v === 'string' ? [v] : [...v]);

/** What a refusal says of the credential a target is checked against. */
interface Wording {
  /** "refresh request", "token request" */
  request: string;
  /** "this refresh token", "this authorization code" */
  holder: string;
  /** Of a resource it does not cover: "was not granted to this refresh token; it covers" ... */
  notCovered: string;
}

/**
 * The resource asked for, if it is one the credential covers; refused with invalid_target (naming what it covers) when
 * several are asked for or one it does not cover. Undefined when none is asked for.
 */
function coveredResource(requested: RefreshTarget['requested'], covered: string[], words: Wording): string | undefined {
  const asked = list(requested);
  const coveredText = covered.length ? covered.join(', ') : 'no resource';
  if (asked.length > 1) throw new errors.InvalidTarget(`name one resource per ${words.request} (got ${asked.length}); ${words.holder} covers ${coveredText}`);
  const [resource] = asked;
  if (resource !== undefined && !covered.includes(resource)) throw new errors.InvalidTarget(`resource ${resource.slice(0, 200)} ${words.notCovered} ${coveredText}`);
  return resource;
}

/**
 * Refuses, with invalid_target, a refresh request whose resource the refresh token cannot serve (RFC 8707 §2.2: the
 * requested resource must be one the grant covers; one access token is for one resource). Pure; it is called before
 * the refresh token is used up, so a refused request leaves the token usable and its retry is not a reuse.
 */
export function checkRefreshTarget({ requested, granted, oidcScopesOnly }: RefreshTarget): void {
  const covered = list(granted);
  const words = { request: 'refresh request', holder: 'this refresh token', notCovered: 'was not granted to this refresh token; it covers' };
  if (coveredResource(requested, covered, words) === undefined && covered.length > 1 && !oidcScopesOnly) {
    throw new errors.InvalidTarget(`this refresh token covers several resources (${covered.join(', ')}): name one with the resource parameter`);
  }
}

/**
 * The same for an authorization code at the token endpoint, before the code is used up (server/grants/code-checks.ts):
 * several resources, or one the code was not issued for, are refused naming what the code covers. oidc-provider said
 * "resource indicator is missing, or unknown" for a resource it knows, and "the resource parameter is required" for
 * two that were sent. A request naming none is left to oidc-provider (it picks the code's own).
 */
export function checkCodeTarget({ requested, granted }: Omit<RefreshTarget, 'oidcScopesOnly'>): void {
  coveredResource(requested, list(granted), {
    request: 'token request',
    holder: 'this authorization code',
    notCovered: 'was not part of the authorization request; this authorization code covers',
  });
}

/** What a refresh would carry to its resource: the scopes it asks for, the resource server's, and the grant's there. */
export interface RefreshScope {
  resource: string;
  /** The request's `scope`, or the refresh token's when it names none (what oidc-provider narrows the token to). */
  requested: Iterable<string>;
  /** The resource server's scopes. */
  resourceScopes: readonly string[];
  /** The scopes of `resource` the person granted (the grant's, less any it rejected). */
  granted: readonly string[];
}

/**
 * Refuses, with invalid_scope, a refresh whose access token for `resource` would carry no scope: oidc-provider issues
 * it with the requested scopes the resource server defines and the grant holds there, and with none of those it was
 * issued all the same, audience-bound and scopeless (a resource server that checks only the audience accepts it). A
 * refresh asking for another resource server's scopes, or a grant for OpenID alone that named a resource. Pure; called
 * with checkRefreshTarget, before the refresh token is used up.
 */
export function checkRefreshScope({ resource, requested, resourceScopes, granted }: RefreshScope): void {
  const asked = [...requested];
  const carried = asked.filter((s) => resourceScopes.includes(s) && granted.includes(s));
  if (carried.length > 0) return;
  const heldThere = granted.filter((s) => resourceScopes.includes(s));
  throw new errors.InvalidScope(
    `an access token for ${resource.slice(0, 200)} from this refresh would carry no scope: the request asks for ${asked.join(' ').slice(0, 200) || '(none)'}, ` +
      `and the person granted ${heldThere.length > 0 ? heldThere.join(' ') : 'none of its scopes'} there`,
    undefined as unknown as string,
  );
}
