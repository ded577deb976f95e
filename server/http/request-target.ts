import type Koa from 'koa';

import { isValidHost, markRefusedTarget } from './request-origin.js';

/** scheme "://" authority, then the path and query as sent (RFC 9112 §3.2.2 absolute-form). */
const ABSOLUTE_FORM = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)$/;

/** Makes the request's target `path` as every layer sees it (Koa copies the target into originalUrl before any runs). */
function retarget(ctx: Koa.Context, path: string): void {
  ctx.url = path;
  ctx.originalUrl = path;
  ctx.request.originalUrl = path;
}

/**
 * Turns an absolute-form request target (`POST http://host/token HTTP/1.1`, RFC 9112 §3.2.2) into the origin-form
 * every layer expects, before any of them reads it. Koa and oidc-provider otherwise build URLs from the target as
 * sent (`ctx.href`), where the Host header's checks (requestOriginCheck) never look: a target naming an unparsable
 * authority answered 500 from URL building, once the registration had been stored or the registration access token
 * used up, and discovery advertised whatever origin the target named.
 *
 * As RFC 9112 §3.2.2 requires, the target's authority replaces the Host header; it is held to the same rules as a
 * Host header (requestOriginCheck). The scheme must be the connection's (a server on http does not answer for an
 * https URL, which would otherwise be the URL a DPoP proof's `htu` is checked against), and user information is
 * refused (RFC 9110 section 4.2.4). The path and query are kept as sent, so that every check on them sees the same spelling
 * as in origin-form. A target that is neither origin-form nor such a URL (other than OPTIONS `*`) is refused.
 *
 * Refusals are recorded with markRefusedTarget and answered 400 by requestOriginCheck, so that they are logged,
 * counted and carry the security headers like any other refused request; until then the target reads as `/`.
 */
export const requestTarget: Koa.Middleware = async (ctx, next) => {
  const target = ctx.req.url ?? '';
  if (target.startsWith('/') || (target === '*' && ctx.method === 'OPTIONS')) return next();
  const refuse = (reason: string) => {
    markRefusedTarget(ctx.req, reason);
    retarget(ctx, '/');
    return next();
  };
  const parts = ABSOLUTE_FORM.exec(target);
  if (!parts) return refuse('the request target must be a path, or an absolute http(s) URL of this server (RFC 9112 section 3.2)');
  const [, scheme, authority, rest] = parts as unknown as [string, string, string, string];
  const connection = ctx.protocol; // the socket's, or X-Forwarded-Proto's behind a trusted proxy
  if (scheme.toLowerCase() !== connection.toLowerCase()) {
    return refuse(`the request target's scheme must be this connection's (${connection}), got ${JSON.stringify(scheme.slice(0, 20))}`);
  }
  if (authority.includes('@')) return refuse('the request target must not carry user information (RFC 9110 section 4.2.4)');
  if (!isValidHost(authority)) return refuse('the request target must name a host name or IP address with an optional port');
  ctx.req.headers.host = authority;
  retarget(ctx, rest.startsWith('/') ? rest : `/${rest}`);
  return next();
};
