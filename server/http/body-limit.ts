import type { IncomingMessage } from 'node:http';
import type Koa from 'koa';

import { CONTENT_TOO_LARGE } from '../request-body.js';

/**
 * The largest request body any endpoint accepts: oidc-provider's own parser takes 56 KiB (token, PAR, introspection,
 * revocation, registration, logout), the interaction pages 64 KiB. Larger declared bodies are refused before any
 * endpoint runs, on every path and spelling alike.
 */
export const MAX_REQUEST_BODY = 64 * 1024;

/** RFC 9110 §15.5.16: content in a coding the server does not decode. */
const UNSUPPORTED_MEDIA_TYPE = 415;
/** The charsets a body is read in: UTF-8, and US-ASCII, which is a subset of it. */
const UTF8_CHARSETS: ReadonlySet<string> = new Set(['utf-8', 'utf8', 'us-ascii']);

/** Whether the request carries a body (RFC 9112 §6.3): a non-zero Content-Length, or a Transfer-Encoding. */
const hasBody = (ctx: Koa.Context): boolean => (ctx.request.length ?? 0) > 0 || ctx.get('transfer-encoding') !== '';

/** RFC 9112 §6.1: a transfer coding the server does not understand. */
const NOT_IMPLEMENTED = 501;

/** Answers the request with `status` and invalid_request: nothing of its body is read. */
function refuse(ctx: Koa.Context, status: number, description: string): void {
  ctx.status = status;
  ctx.body = { error: 'invalid_request', error_description: description };
}

/**
 * What a request's headers say of its body, checked before any endpoint runs: 501 invalid_request for a transfer coding
 * other than chunked (gzip, deflate, ... before it: RFC 9112 §6.1), 415 invalid_request for a charset other than
 * UTF-8 (and US-ASCII), 413 invalid_request when the
 * Content-Length is already too large, and 415 (with `Accept-Encoding: identity`, RFC 7694 §3) when the body is
 * compressed or otherwise encoded: no endpoint decodes it, and oidc-provider read a gzip-labelled body as if it were
 * plain. Nothing of such a body is read.
 */
export const declaredBodyLimit: Koa.Middleware = async (ctx, next) => {
  // Node's parser takes any codings before a final `chunked` and hands on the body with only `chunked` undone.
  const te = ctx.get('transfer-encoding');
  const unknown = te === '' ? undefined : te.split(',').map((c) => c.trim().toLowerCase()).find((c) => c !== '' && c !== 'chunked');
  if (unknown !== undefined) {
    return refuse(ctx, NOT_IMPLEMENTED, `the request body has a transfer coding this server does not decode (Transfer-Encoding: ${JSON.stringify(unknown.slice(0, 50))}); send it with chunked alone or a Content-Length (RFC 9112 section 6.1)`);
  }
  // oidc-provider reads `ctx.charset`, which Koa 3's context does not have: every body was read as UTF-8 whatever its
  // Content-Type said. A body in another charset is refused instead of misread (RFC 6749 Appendix B: UTF-8).
  // Content-Type is parsed only when it names a parameter (most requests send none, or none at all).
  const charset = ctx.get('content-type').includes(';') ? ctx.request.charset.toLowerCase() : '';
  if (charset !== '' && !UTF8_CHARSETS.has(charset) && hasBody(ctx)) {
    return refuse(ctx, UNSUPPORTED_MEDIA_TYPE, `the request body's charset is not supported (charset=${JSON.stringify(charset.slice(0, 50))}): send it as utf-8`);
  }
  const encoding = ctx.get('content-encoding').trim().toLowerCase();
  if (encoding !== '' && encoding !== 'identity') {
    ctx.set('Accept-Encoding', 'identity');
    return refuse(ctx, UNSUPPORTED_MEDIA_TYPE, `the request body is encoded (Content-Encoding: ${JSON.stringify(encoding.slice(0, 50))}); this server accepts unencoded bodies only`);
  }
  const declared = ctx.request.length;
  if (declared !== undefined && declared > MAX_REQUEST_BODY) {
    return refuse(ctx, CONTENT_TOO_LARGE, `the request body (${declared} bytes) exceeds the ${MAX_REQUEST_BODY} bytes any endpoint of this server accepts`);
  }
  await next();
};

/** How much of a refused or unread body is read and dropped after the answer, so the connection stays usable. */
export const MAX_DRAIN_BYTES = 16 * 1024 * 1024;
/** How long that may take before the connection is closed instead. */
export const MAX_DRAIN_MS = 30_000;

/**
 * A response sent while the request body is still arriving (refused for its size, or never read) must not leave the
 * connection in the middle of that body: the next request on it would wait behind the unread bytes until a timeout.
 * The rest of the body is drained (read and dropped) so the next request on the connection is served as soon as it
 * arrives; a body that goes on past MAX_DRAIN_BYTES or MAX_DRAIN_MS gets its connection closed instead. (Closing at
 * once is no option: a close with unread bytes resets the connection, and the client may lose the answer with it.)
 */
export const drainUnreadBody: Koa.Middleware = async (ctx, next) => {
  try {
    await next();
  } finally {
    if (!ctx.req.complete) drain(ctx.req);
  }
};

function drain(req: IncomingMessage): void {
  const { socket } = req;
  let drained = 0;
  const close = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  const timer = setTimeout(close, MAX_DRAIN_MS);
  timer.unref();
  req.on('data', (chunk: Buffer) => {
    drained += chunk.length;
    if (drained > MAX_DRAIN_BYTES) close();
  });
  req.once('end', () => clearTimeout(timer));
  req.once('close', () => clearTimeout(timer));
  req.resume();
}
