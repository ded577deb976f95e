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

/** Records the end of the body of every request that has one (the listener only watches; it reads nothing). */
export const bodyReceiptClock: Koa.Middleware = (ctx, next) => {
  const { req } = ctx;
  if (!req.complete) req.on('end', bodyEnded);
  return next();
};

/** The time (ms since the epoch) `req`'s body was fully received; now, when no receipt was recorded. */
export function bodyReceivedAt(req: IncomingMessage): number {
  return received.get(req) ?? Date.now();
}
