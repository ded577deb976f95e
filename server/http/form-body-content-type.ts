import type Koa from 'koa';
import type { Provider } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

/**
 * oidc-provider's POST routes that read a form body (lib/shared/selective_body.js `urlencoded`): the token endpoint,
 * introspection, revocation, PAR, userinfo, the logout confirmation (POST /session/end itself is not routed here:
 * enableHttpPostMethods is off). test/unit/oidc-provider-internals.test.ts pins these names to the router.
 */
export const FORM_BODY_ROUTES: ReadonlySet<string> = new Set([
  'token',
  'introspection',
  'revocation',
  'pushed_authorization_request',
  'userinfo',
  'end_session_confirm',
]);

/**
 * A body sent with no Content-Type to a route that reads a form: oidc-provider reads a body only of the type it
 * expects, and one without a type it treats as no body at all, so the refusal named a parameter the client had sent
 * (`missing required parameter 'grant_type'`, or at PAR `the request does not authenticate the client` though
 * `client_id` was in it). Refused with what to send, before the route. Bound to the route the router resolves (every
 * spelling it takes); the header test comes first, so a request with a Content-Type (every client's) costs two header
 * reads. A request with no body (or a chunked one) and no Content-Type goes on: the route's own answer is then its own.
 */
export function formBodyContentType(provider: Provider): Koa.Middleware {
  const { router } = instance(provider);
  return (ctx, next) => {
    // An empty Content-Type is none (oidc-provider's ctx.get('content-type') reads it so).
    if (ctx.method !== 'POST' || ctx.req.headers['content-type']) return next();
    // A body known to hold something: a chunked one may be empty (a POST to userinfo with its token in the header and
    // an empty stream), which oidc-provider serves, so it is left to the route.
    if (!(Number(ctx.req.headers['content-length'] ?? 0) > 0)) return next();
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
