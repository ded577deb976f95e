import type Koa from 'koa';

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
 * handle a decoding failure.
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
  await next();
};
