import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type Koa from 'koa';

/** What every log line and audit record written while a request is handled says about that request. */
export interface RequestContext {
  /** The request id: echoed in the X-Request-Id response header. */
  readonly requestId: string;
  /** Where the id came from. */
  readonly source: 'x-request-id' | 'traceparent' | 'generated';
  /** The client address as Koa sees it: X-Forwarded-For's first address when TRUST_PROXY=true (app.proxy), else the peer. */
  readonly ip: string;
}

const context = new AsyncLocalStorage<RequestContext>();

/** The request being handled by the current async call chain, if any (undefined at start-up, in timers, in the CLI). */
export function currentRequest(): RequestContext | undefined {
  return context.getStore();
}

/** Longest incoming X-Request-Id taken as is. */
export const MAX_REQUEST_ID_LENGTH = 128;
/**
 * An incoming X-Request-Id is honoured only when it is 1-128 characters of letters, digits and `. _ ~ : / + = -`:
 * enough for UUIDs, ULIDs, hex and base64 ids from proxies and gateways, and nothing that could break a log line or
 * a header (no spaces, quotes, commas, control characters). Two X-Request-Id headers arrive joined by ", " and are
 * therefore not honoured either.
 */
const REQUEST_ID = new RegExp(`^[A-Za-z0-9._~:/+=-]{1,${MAX_REQUEST_ID_LENGTH}}$`);
/**
 * W3C Trace Context `traceparent`: version-trace_id-parent_id-flags in lower-case hex. Version ff is invalid;
 * version 00 has exactly these four fields; a later version may append fields after a dash (§3.2.4).
 */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZEROS = /^0+$/;

/** The trace id of a valid W3C `traceparent` header value, else undefined. */
export function traceIdOf(traceparent: string): string | undefined {
  const m = TRACEPARENT.exec(traceparent.trim());
  if (!m) return undefined;
  const [, version, traceId, parentId, , rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (ZEROS.test(traceId) || ZEROS.test(parentId)) return undefined;
  return traceId;
}

/** The request id for a request with these headers: a valid X-Request-Id, else a valid traceparent's trace id, else a new UUID. */
export function requestIdFrom(headers: Readonly<Record<string, string | string[] | undefined>>): Pick<RequestContext, 'requestId' | 'source'> {
  const incoming = headers['x-request-id'];
  if (typeof incoming === 'string' && REQUEST_ID.test(incoming)) return { requestId: incoming, source: 'x-request-id' };
  const traceparent = headers.traceparent;
  const traceId = typeof traceparent === 'string' ? traceIdOf(traceparent) : undefined;
  if (traceId) return { requestId: traceId, source: 'traceparent' };
  return { requestId: randomUUID(), source: 'generated' };
}

/**
 * Gives the request its id (see {@link requestIdFrom}), echoes it in the X-Request-Id response header, and runs the
 * rest of the request inside its {@link RequestContext}: the logger (server/logger.ts) adds `request_id` and `ip` to
 * every line written meanwhile, and the audit log (server/audit/log.ts) `request_id` to every record. Mount it first.
 */
export const requestId: Koa.Middleware = (ctx, next) => {
  const { requestId: id, source } = requestIdFrom(ctx.headers);
  ctx.set('X-Request-Id', id);
  ctx.state.requestId = id;
  return context.run({ requestId: id, source, ip: ctx.ip }, next);
};
