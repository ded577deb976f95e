import { errors } from 'oidc-provider';
import { describingStep, insertBeforeInAuthorizationActions } from './authorization-steps.js';

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

const ANCHOR = 'checkScope';

/**
 * In front of `checkScope`: gives its refusal the description before the route's error handler reads it, so the
 * description goes wherever the error goes (the redirect to the client, the JSON body, the error page).
 */
const describe = describingStep('describeScopeNotAllowed', (ctx, err) => {
  const e = err as { error_description?: unknown; scope?: unknown };
  if (err instanceof errors.InvalidScope && e.error_description === SCOPE_NOT_ALLOWED && typeof e.scope === 'string') {
    e.error_description = scopeNotAllowed(e.scope, ctx.oidc.client?.scope);
  }
});

/**
 * Puts the step in front of `checkScope` in the authorization and PAR action lists, once per process (throws when an
 * upgrade of oidc-provider removed it). Call before `new Provider(...)`.
 */
export function prepareScopeErrors(): void {
  insertBeforeInAuthorizationActions(ANCHOR, describe, 'server/http/scope-errors.ts');
}
