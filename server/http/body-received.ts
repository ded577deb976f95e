import type { IncomingMessage } from 'node:http';
import type Koa from 'koa';

/**
 * When each request's body was fully received: the moment its client finished presenting what the body carries (a
 * refresh token, a code), as opposed to the moment the server got round to it. Under load a request can wait on
 * storage for seconds after it arrived; a time window the client must meet (the refresh grace,
 * server/grants/refresh-grace.ts) is measured at receipt, so that the server's own queue never moves a request out
 * of its window. Receipt is the end of the body, not the start of the request: a client that trickles its body in
 * cannot make an old start time stand for a token it presents later.
 */
const received = new WeakMap<IncomingMessage, number>();

/** The 'end' listener: one function for every request, no closure or once() wrapper allocated per request. */
function bodyEnded(this: IncomingMessage): void {
  received.set(this, Date.now());
}

/** Whether more of `req` is to come after its head: a body declared by Transfer-Encoding or a non-zero Content-Length. */
function bodyToCome(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Records the end of the body of every request that has one (the listener only watches; it reads nothing), and the
 * arrival of one without a body (a GET, an empty form post): it was all received when its head was.
 */
export const bodyReceiptClock: Koa.Middleware = (ctx, next) => {
  const { req } = ctx;
  if (bodyToCome(req)) req.on('end', bodyEnded);
  else received.set(req, Date.now());
  return next();
};

/** The time (ms since the epoch) `req` was fully received; now, when no receipt was recorded (a body not read yet). */
export function bodyReceivedAt(req: IncomingMessage): number {
  return received.get(req) ?? Date.now();
}
