import type Koa from 'koa';

import { errorPage, prefersPage } from '../../interactions/views.js';

/** Whether every percent-escape in `path` is well formed and the escapes decode to UTF-8 (RFC 3986 §2.1, §2.5). */
export function hasWellFormedEscapes(path: string): boolean {
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Refuses a request whose path holds a malformed percent-escape (`%ZZ`, a lone `%`, or escapes that are not UTF-8)
 * with 400 invalid_request, before any route decodes it. No endpoint has such a path, and no route below has to
 * handle a decoding failure. Refuses too a query string whose escapes do not decode to UTF-8 (queryEscapesDecode).
 */
export const percentEscapeCheck: Koa.Middleware = async (ctx, next) => {
  if (!hasWellFormedEscapes(ctx.path)) {
    ctx.status = 400;
    ctx.body = {
      error: 'invalid_request',
      error_description: 'the request path contains a malformed percent-escape: each % must start an escape of two hex digits, and the escapes must decode to UTF-8',
    };
    return;
  }
  const query = ctx.querystring;
  // A CORS preflight reads no query (oidc-provider answers it from its headers): let it through, so that a page's
  // request is sent and the page can read this refusal of it (server/http/early-refusal-cors.ts).
  if (query.includes('%') && !isPreflight(ctx) && !queryEscapesDecode(query)) {
    ctx.status = 400;
    // A browser (a person sent to /auth, or to a page) gets a page saying so; the error cannot go to the client,
    // whose parameters are what is unreadable.
    if (prefersPage(ctx)) {
      ctx.type = 'html';
      ctx.body = errorPage('Request refused', `The link that brought you here is malformed: ${QUERY_NOT_UTF8}. Go back to the application and start again.`);
    } else ctx.body = { error: 'invalid_request', error_description: QUERY_NOT_UTF8 };
    return;
  }
  await next();
};

/** A CORS preflight (Fetch §3.2.2): OPTIONS with Access-Control-Request-Method. */
const isPreflight = (ctx: Koa.Context) => ctx.method === 'OPTIONS' && ctx.get('Access-Control-Request-Method') !== '';

const QUERY_NOT_UTF8 = 'the query string holds percent-escapes that do not decode to UTF-8: percent-encode the UTF-8 bytes of each character (U+00E9 is %C3%A9)';

/**
 * Whether the escapes of a query string decode to UTF-8 (RFC 3986 §2.5; OpenID Connect and RFC 6749 Appendix B: the
 * parameters are UTF-8). The parsers (URLSearchParams, for Koa and the pages) read escapes of bytes that are not UTF-8
 * as U+FFFD, so `state=ab%FFcd` came back to the client as `ab%EF%BF%BDcd`, not the exact value it sent (RFC 6749
 * §4.1.2), where the same parameter in a form body is refused. A `%` that starts no escape is read as itself, and is
 * left alone here.
 */
function queryEscapesDecode(query: string): boolean {
  try {
    decodeURIComponent(query.replace(/%(?![0-9A-Fa-f]{2})/g, '%25'));
    return true;
  } catch {
    return false;
  }
}
