import type Koa from 'koa';
import type { Provider } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

/**
 * Headers a cross-origin caller needs to read an early refusal: the challenge of a 401 and when to retry a 503. Neither
 * is CORS-safelisted (Fetch §3.2.3), so without this a browser-based client sees a 503 with no Retry-After.
 */
const EXPOSED = 'Retry-After, WWW-Authenticate';

/**
 * CORS on the refusals agentauth's own layers answer before oidc-provider's route runs: a storage outage's 503, a
 * malformed request's 400 (two Host fields, escapes that are not UTF-8, a malformed DPoP header), a body too large's
 * 413. oidc-provider sets CORS inside each route it serves cross-origin (the token, introspection, revocation,
 * userinfo and discovery endpoints, the JWKS), so an answer made before the route ran had none, and a browser-based
 * client saw only a network error where it should have read `temporarily_unavailable` and `Retry-After`.
 *
 * Bound to what oidc-provider resolves, not to strings: a route is served cross-origin when its router has a `cors.`
 * preflight route for the same path (every spelling the router accepts: any case, one trailing slash). The refusal
 * gets what oidc-provider gives an error made before the client is known: `Access-Control-Allow-Origin` echoing the
 * request's Origin. An answer made by oidc-provider's route (it defines `ctx.oidc` on every request it routes) is left
 * as the route made it: where `clientBasedCORS` removed the header for a client's disallowed origin, it stays removed.
 * Only error answers (4xx, 5xx) to requests with an Origin are looked at: securityHeaders calls it on every error
 * answer once the layers inside it are done, so a successful request pays nothing, not even a layer.
 */
export function earlyRefusalCors(provider: Provider): (ctx: Koa.Context) => void {
  const { router } = instance(provider);
  return (ctx) => {
    if (ctx.status < 400 || ctx.method === 'OPTIONS') return;
    const origin = ctx.get('Origin');
    if (origin === '' || ctx.res.hasHeader('Access-Control-Allow-Origin')) return;
    if (Object.prototype.hasOwnProperty.call(ctx, 'oidc')) return;
    const route = router.match(ctx.method === 'HEAD' ? 'GET' : ctx.method, ctx.path)?.route.name;
    if (route === undefined || router.match('OPTIONS', ctx.path)?.route.name !== `cors.${route}`) return;
    ctx.vary('Origin');
    ctx.set('Access-Control-Allow-Origin', origin);
    ctx.set('Access-Control-Expose-Headers', EXPOSED);
  };
}
