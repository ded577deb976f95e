import type Koa from 'koa';

import { keepDescriptionInRfc6749Characters } from './error-description.js';

/**
 * Headers every response carries, so that every HTML page agentauth serves (login, consent, logout, error pages,
 * and any page oidc-provider renders) has them whichever route, spelling or error path produced it:
 *   - a CSP that allows only agentauth's own scripts, styles and images, no framing, no <base>, no plugins;
 *     oidc-provider adds the hash of its one inline script (the auto-submitting form_post page) to script-src;
 *   - X-Frame-Options for browsers without frame-ancestors; no Referer leaking codes or URLs to another origin (a
 *     page's own submissions carry its origin, which the interaction routes check); no MIME sniffing.
 * On JSON responses they are inert (and keep a JSON answer from being rendered or framed as a page).
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
});

/**
 * Sets SECURITY_HEADERS before anything runs (oidc-provider reads the CSP to extend it). On an error answer, whichever
 * layer made it (the refusals made before any route runs included: a body too large, a malformed path or Host):
 * `Cache-Control: no-store` if it set no caching rule of its own, its description in RFC 6749's characters
 * (server/http/error-description.ts), then `onErrorAnswer` (server/app.ts: CORS on refusals made before oidc-provider's
 * route, server/http/early-refusal-cors.ts).
 */
export function securityHeaders(onErrorAnswer?: (ctx: Koa.Context) => void): Koa.Middleware {
  return async (ctx, next) => {
    ctx.set(SECURITY_HEADERS);
    await next();
    if (ctx.status >= 400) {
      if (ctx.res.getHeader('Cache-Control') === undefined) ctx.set('Cache-Control', 'no-store');
      keepDescriptionInRfc6749Characters(ctx);
      onErrorAnswer?.(ctx);
    }
  };
}
