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
 * koa-mount hands oidc-provider the same context), so defining them there costs nothing per request. `host`,
 * `protocol` and `secure` still describe the request as sent: cookies are marked Secure by the connection, and
 * requestOriginCheck still refuses a malformed Host.
 */
export function bindPublicOrigin(app: Koa, origin: string): void {
  const base = new URL(origin).origin; // scheme://host[:port], as a URL serialises it
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
