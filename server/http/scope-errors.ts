import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import authorizationAction from 'oidc-provider/lib/actions/authorization/index.js';

/**
 * oidc-provider refuses a scope outside the client's registered `scope` with invalid_scope "requested scope is not
 * allowed", naming the scope only in a member of its own (`scope`), at the token endpoint (lib/helpers/
 * grant_authorization.js) and at the authorization and PAR endpoints (`checkScope`, lib/actions/authorization/scopes.js).
 * The description says which scope, and what the client may ask for: its own registered scope.
 */
export const SCOPE_NOT_ALLOWED = 'requested scope is not allowed';

/** The description of a refused `scope` for a client registered with `allowed` (its `scope` metadata). */
export function scopeNotAllowed(scope: string, allowed: string | undefined): string {
  return `requested scope ${scope.slice(0, 100)} is not allowed for this client${allowed ? ` (it may ask for: ${allowed.slice(0, 300)})` : ''}`;
}

type Step = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };

const ANCHOR = 'checkScope';
const STEP = 'describeScopeNotAllowed';
/** The action lists of oidc-provider's authorization routes that run `checkScope` and are enabled here. */
const ENDPOINTS = ['authorization', 'pushed_authorization_request'] as const;

/**
 * In front of `checkScope`: gives its refusal the description before the route's error handler reads it, so the
 * description goes wherever the error goes (the redirect to the client, the JSON body, the error page).
 */
const describe = Object.defineProperty(
  async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
    try {
      await next();
    } catch (err) {
      const e = err as { error_description?: unknown; scope?: unknown };
      if (err instanceof errors.InvalidScope && e.error_description === SCOPE_NOT_ALLOWED && typeof e.scope === 'string') {
        e.error_description = scopeNotAllowed(e.scope, ctx.oidc.client?.scope);
      }
      throw err;
    }
  },
  'name',
  { value: STEP },
) as Step;

/**
 * Puts the step in front of `checkScope` in the authorization and PAR action lists, once per process. Throws, naming
 * the list, when an upgrade of oidc-provider removed the anchor. Call before `new Provider(...)`.
 */
export function prepareScopeErrors(): void {
  for (const endpoint of ENDPOINTS) {
    const list = authorizationAction(endpoint) as Step[];
    if (list.some((s) => s.name === STEP)) continue;
    const i = list.findIndex((s) => s.name === ANCHOR);
    if (i < 0) throw new Error(`oidc-provider's ${endpoint} action no longer has a "${ANCHOR}" step; server/http/scope-errors.ts must be updated for this oidc-provider version`);
    list.splice(i, 0, describe);
  }
}
