import type { KoaContextWithOIDC } from 'oidc-provider';
import authorizationAction from 'oidc-provider/lib/actions/authorization/index.js';

/** A step of an oidc-provider action list (a Koa middleware with the name the lists are searched by). */
export type Step = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };

/** The action lists of oidc-provider's authorization routes that are enabled here: the authorization endpoint and PAR. */
const ENDPOINTS = ['authorization', 'pushed_authorization_request'] as const;

/**
 * A step named `name` that lets `describe` amend what the steps after it throw (its description, say) before the error
 * goes on to the route's error handler, which writes it to the redirect, the JSON body or the page alike.
 */
export function describingStep(name: string, describe: (ctx: KoaContextWithOIDC, err: unknown) => void): Step {
  return Object.defineProperty(
    async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
      try {
        await next();
      } catch (err) {
        describe(ctx, err);
        throw err;
      }
    },
    'name',
    { value: name },
  ) as Step;
}

/**
 * Puts `step` in front of the step named `anchor` in the authorization and PAR action lists, once per process. Throws,
 * naming the list and `owner` (the file to update), when an upgrade of oidc-provider removed the anchor. Call before
 * `new Provider(...)`: the routes are built from these lists then.
 */
export function insertBeforeInAuthorizationActions(anchor: string, step: Step, owner: string): void {
  for (const endpoint of ENDPOINTS) {
    const list = authorizationAction(endpoint) as Step[];
    if (list.some((s) => s.name === step.name)) continue;
    const i = list.findIndex((s) => s.name === anchor);
    if (i < 0) throw new Error(`oidc-provider's ${endpoint} action no longer has a "${anchor}" step; ${owner} must be updated for this oidc-provider version`);
    list.splice(i, 0, step);
  }
}
