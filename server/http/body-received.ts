import type { IncomingMessage } from 'node:http';
import type Koa from 'koa';

/**
 * When each request arrived, and when its body was fully received.
 *
 * Receipt is the moment the client finished presenting what the body carries (a refresh token, a code), as opposed to
 * the moment the server got round to it. Under load a request can wait on storage for seconds after it arrived; a time
 * window the client must meet (the refresh grace, server/grants/refresh-grace.ts) is measured at receipt, so that the
 * server's own queue never moves a request out of its window. Receipt is the end of the body, not the start of the
 * request: a client that trickles its body in cannot make an old start time stand for a token it presents later.
 *
 * Arrival is when the request's head was read: what a request reads before its body (the sign-in session, read by
 * oidc-provider before it parses a body) is as old as its arrival, however slowly the body follows. A check of what
 * happened while such a request was served (a subject revocation, server/subject-revocation.ts) starts there.
 *
 * Both are kept on the request object under symbols (one hidden-class transition shared by every request), not in a
 * WeakMap, which costs a hash-table insert per request.
 */
const ARRIVED = Symbol('agentauth.arrivedAt');
const RECEIVED = Symbol('agentauth.receivedAt');
type Dated = IncomingMessage & { [ARRIVED]?: number; [RECEIVED]?: number };

/** The 'end' listener: one function for every request, no closure or once() wrapper allocated per request. */
function bodyEnded(this: Dated): void {
  this[RECEIVED] = Date.now();
}

/** Whether more of `req` is to come after its head: a body declared by Transfer-Encoding or a non-zero Content-Length. */
function bodyToCome(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Records every request's arrival, and the end of its body (the listener only watches; it reads nothing); a request
 * without a body (a GET, an empty form post) was all received when its head was.
 */
export const bodyReceiptClock: Koa.Middleware = (ctx, next) => {
  const req = ctx.req as Dated;
  const now = Date.now();
  req[ARRIVED] = now;
  if (bodyToCome(req)) req.on('end', bodyEnded);
  else req[RECEIVED] = now;
  return next();
};

/** The time (ms since the epoch) `req` was fully received; now, when no receipt was recorded (a body not read yet). */
export function bodyReceivedAt(req: IncomingMessage): number {
  return (req as Dated)[RECEIVED] ?? Date.now();
}

/** The time (ms since the epoch) `req` arrived; now, for a request the clock never saw (in-process callers). */
export function requestArrivedAt(req: IncomingMessage): number {
  return (req as Dated)[ARRIVED] ?? Date.now();
}
