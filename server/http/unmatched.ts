import type Koa from 'koa';
import type { Provider } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

import { KEY_ARCHIVE_PATH, LIVENESS_PATH, READINESS_PATH } from './probe-paths.js';

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'OPTIONS'] as const;
/** agentauth's own paths that answer GET and HEAD only, exactly as spelled (server/app.ts probes): 405 for the rest. */
const AGENTAUTH_GET_PATHS: ReadonlySet<string> = new Set([LIVENESS_PATH, READINESS_PATH, KEY_ARCHIVE_PATH]);

/**
 * What a request no route answered gets: JSON, not Koa's `404 text/plain "Not Found"`. When oidc-provider's own router
 * resolves the same path for other methods (`GET /token`, any spelling the router accepts), the answer is
 * `405 invalid_request` with `Allow` naming them (RFC 9110 §15.5.6), so a client developer sees what to send;
 * otherwise `404 not_found`, as the admin API answers. Runs around the provider's mount, after every other route.
 */
export function unmatchedRequests(provider: Provider): Koa.Middleware {
  const { router } = instance(provider);
  return async (ctx, next) => {
    // The path as sent, for the answer (the routing below uses ctx.path, which may have been rewritten on the way:
    // /.well-known/oauth-authorization-server is served as the OpenID discovery path).
    const sent = ctx.path;
    await next();
    if (ctx.status !== 404 || ctx.body != null) return;
    const allowed: string[] = AGENTAUTH_GET_PATHS.has(ctx.path)
      ? ['GET']
      : METHODS.filter((m) => m !== ctx.method && router.match(m, ctx.path) !== undefined);
    // oidc-provider's router answers HEAD wherever it answers GET, and so do agentauth's probes and key archive.
    if (allowed.includes('GET') && ctx.method !== 'HEAD') allowed.splice(allowed.indexOf('GET') + 1, 0, 'HEAD');
    if (allowed.length > 0) {
      ctx.status = 405;
      ctx.set('Allow', allowed.join(', '));
      ctx.body = { error: 'invalid_request', error_description: `${ctx.method} is not accepted at ${sent.slice(0, 200)}; use ${allowed.filter((m) => m !== 'OPTIONS' && m !== 'HEAD').join(' or ')}` };
      return;
    }
    ctx.status = 404;
    ctx.body = { error: 'not_found', error_description: `there is no endpoint at ${ctx.method} ${sent.slice(0, 200)}` };
  };
}
