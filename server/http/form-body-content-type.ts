import type Koa from 'koa';
import type { Provider } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

/**
 * oidc-provider's POST routes that read a form body (lib/shared/selective_body.js `urlencoded`): the token endpoint,
 * introspection, revocation, PAR, userinfo, the logout confirmation. test/unit/oidc-provider-internals.test.ts pins
 * these names to the router.
 */
export const FORM_BODY_ROUTES: ReadonlySet<string> = new Set([
  'token',
  'introspection',
  'revocation',
  'pushed_authorization_request',
  'userinfo',
  'end_session',
  'end_session_confirm',
]);

/**
 * A body sent with no Content-Type to a route that reads a form: oidc-provider reads a body only of the type it
 * expects, and one without a type it treats as no body at all, so the refusal named a parameter the client had sent
 * (`missing required parameter 'grant_type'`, or at PAR `the request does not authenticate the client` though
 * `client_id` was in it). Refused with what to send, before the route. Bound to the route the router resolves (every
 * spelling it takes); the header test comes first, so a request with a Content-Type (every client's) costs two header
 * reads. A request with no body and no Content-Type goes on: the route's own "missing parameter" is then right.
 */
export function formBodyContentType(provider: Provider): Koa.Middleware {
  const { router } = instance(provider);
  return (ctx, next) => {
    if (ctx.method !== 'POST' || ctx.req.headers['content-type'] !== undefined) return next();
    const hasBody = ctx.req.headers['transfer-encoding'] !== undefined || Number(ctx.req.headers['content-length'] ?? 0) > 0;
    if (!hasBody) return next();
    const route = router.match('POST', ctx.path)?.route.name;
    if (route === undefined || !FORM_BODY_ROUTES.has(route)) return next();
    ctx.status = 400;
    ctx.body = {
      error: 'invalid_request',
      error_description: 'the request body has no Content-Type header: send it as application/x-www-form-urlencoded (Content-Type: application/x-www-form-urlencoded)',
    };
    return undefined;
  };
}
