import { isIPv6 } from 'node:net';
import type Koa from 'koa';

import { isProbeRequest } from './probe-paths.js';

/** RFC 3986 §3.2.2 reg-name characters (IPv4 addresses are a subset), without percent-encoding. */
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=]{1,253}$/;
const PORT = /^[0-9]{0,5}$/;

/**
 * Whether `value` is a Host header value: uri-host [ ":" port ] (RFC 9110 §7.2), where uri-host is a reg-name, an
 * IPv4 address or a bracketed IPv6 address, and the whole forms an http URL authority a WHATWG URL parser accepts
 * (oidc-provider resolves its endpoint URLs against it).
 */
export function isValidHost(value: string): boolean {
  let port = '';
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0 || !isIPv6(value.slice(1, end))) return false;
    const rest = value.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) return false;
    port = rest.slice(1);
  } else {
    const colon = value.lastIndexOf(':');
    if (!REG_NAME.test(colon >= 0 ? value.slice(0, colon) : value)) return false;
    if (colon >= 0) port = value.slice(colon + 1);
  }
  if (!PORT.test(port) || (port !== '' && Number(port) > 65535)) return false;
  return URL.canParse(`http://${value}/`);
}

/**
 * RFC 9112 §3.2: a request with more than one Host field is answered 400; Node keeps the first. Node keeps the first
 * Authorization field as well and drops the others, so which credentials count was the order they came in (a good
 * one first and a bad one after was a token, the other way round a 401). Both are refused, naming the field: one
 * pass over the raw fields, comparing lengths first.
 */
function repeatedSingleField(raw: readonly string[]): string | undefined {
  let hosts = 0;
  let authorizations = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') hosts += 1;
    else if (name.length === 13 && name.toLowerCase() === 'authorization') authorizations += 1;
  }
  if (hosts > 1) return `the request has ${hosts} Host header fields: send exactly one (RFC 9112 section 3.2)`;
  if (authorizations > 1) return `the request has ${authorizations} Authorization header fields: send the credentials once, in one field`;
  return undefined;
}

/** Why requests' targets were refused by requestTarget (request-target.ts), answered by requestOriginCheck. */
const REFUSED_TARGETS = new WeakMap<object, string>();

/**
 * Records that `req`'s absolute-form target names no acceptable origin; requestOriginCheck answers it, after the
 * layers that log, count and set the security headers.
 */
export function markRefusedTarget(req: object, reason: string): void {
  REFUSED_TARGETS.set(req, reason);
}

const shown = (value: string) => JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}...` : value);

function refuse(ctx: Koa.Context, description: string): void {
  ctx.status = 400;
  ctx.body = { error: 'invalid_request', error_description: description };
}

/**
 * Refuses, with 400 invalid_request, a request whose origin (the scheme and host Koa and oidc-provider build URLs
 * from: ctx.protocol and ctx.host) is malformed, before anything builds a URL from it:
 *   - a Host header that is not a valid host[:port];
 *   - behind a trusted proxy (TRUST_PROXY=true), an X-Forwarded-Host that is not one, or an X-Forwarded-Proto other
 *     than http or https (which would otherwise be advertised in discovery, or make URL building throw);
 *   - an absolute-form request target that requestTarget refused (its authority replaces the Host header);
 *   - an empty Host header, or none (HTTP/1.0, or HTTP/1.1, which server/start.ts lets past Node's own bare 400 so
 *     that it is answered here): there is no host to build URLs from, and discovery advertised
 *     `http://.well-known/token` and the like. The liveness and readiness probes, which build no URL, still answer
 *     such a request.
 */
export const requestOriginCheck: Koa.Middleware = async (ctx, next) => {
  const target = REFUSED_TARGETS.get(ctx.req); // an absolute-form target that names no acceptable origin (request-target.ts)
  if (target) return refuse(ctx, target);
  const repeated = repeatedSingleField(ctx.req.rawHeaders);
  if (repeated !== undefined) return refuse(ctx, repeated);
  const header = ctx.get('host');
  // ctx.host: the Host header, or behind a trusted proxy X-Forwarded-Host (its first value), as URLs are built from it.
  if (ctx.host === '' && !isProbeRequest(ctx)) {
    return refuse(ctx, 'the Host header must name this server (RFC 9112 section 3.2): the request has none, or an empty one (or, behind a trusted proxy, an X-Forwarded-Host whose first value is empty)');
  }
  for (const [name, value] of [['Host', header], ['X-Forwarded-Host', ctx.host !== header ? ctx.host : '']] as const) {
    if (value !== '' && !isValidHost(value)) {
      return refuse(ctx, `the ${name} header must be a host name or IP address with an optional port (got ${shown(value)})`);
    }
  }
  if (!/^https?$/i.test(ctx.protocol)) {
    return refuse(ctx, `the X-Forwarded-Proto header must be http or https (got ${shown(ctx.protocol)})`);
  }
  await next();
};
