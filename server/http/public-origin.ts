import type Koa from 'koa';

/** Koa's own test for an absolute-form target (koa/lib/request.js); requestTarget turns those into paths first. */
const HTTP_URL_PREFIX = /^https?:\/\//i;

/**
 * Makes every URL built from a request of `app` start with `origin` (ISSUER's scheme and host) instead of the scheme
 * and host the request names (its Host header, or behind a trusted proxy X-Forwarded-Proto and -Host).
 *
 * oidc-provider builds each URL it advertises or compares from `ctx.href` (`OIDCContext#urlFor`): discovery's
 * endpoints, the URL a DPoP proof's `htu` must match (RFC 9449 §4.3), the token endpoint a client assertion's `aud`
 * may name (RFC 7523 §3), redirects back to `/auth/<uid>`. Following the request let whoever sends it choose them: a
 * DPoP proof or client assertion made for another server, `https://evil.example/token`, was accepted here when sent
 * with `Host: evil.example`, so a server that receives a client's assertions could obtain tokens as that client.
 *
 * Koa reads `href` and `URL` from the request prototype of `app` (every context's request is created from it, and
 * koa-mount hands oidc-provider the same context), so defining them there costs nothing per request. `host` and
 * `protocol` still describe the request as sent (requestOriginCheck still refuses a malformed Host).
 *
 * `secure` follows the origin when it is https: the cookies Koa and oidc-provider set (the session, the interaction
 * cookies, the sign-in cookie) are then always marked Secure. Following the connection, they were not whenever TLS
 * ended at a proxy that agentauth does not trust for X-Forwarded-Proto (TRUST_PROXY unset), so a browser sent the
 * 30-day session cookie to whoever answered a plain-http request for the issuer's host.
 */
export function bindPublicOrigin(app: Koa, origin: string): void {
  const base = new URL(origin).origin; // scheme://host[:port], as a URL serialises it
  if (base.startsWith('https:')) Object.defineProperty(app.request, 'secure', { configurable: true, get: () => true });
  Object.defineProperties(app.request, {
    href: {
      configurable: true,
      get(this: Koa.Request): string {
        return HTTP_URL_PREFIX.test(this.originalUrl) ? this.originalUrl : base + this.originalUrl;
      },
    },
    URL: {
      configurable: true,
      get(this: Koa.Request & { memoizedURL?: URL }): URL {
        if (!this.memoizedURL) this.memoizedURL = new URL(this.href);
        return this.memoizedURL;
      },
    },
  });
}
