import { isIPv6 } from 'node:net';
import type Koa from 'koa';

/** RFC 3986 §3.2.2 reg-name characters (IPv4 addresses are a subset), without percent-encoding. */
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=]{1,253}$/;
const PORT = /^[0-9]{0,5}$/;

/**
 * Whether `value` is a Host header value: uri-host [ ":" port ] (RFC 9110 §7.2), where uri-host is a reg-name, an
 * IPv4 address or a bracketed IPv6 address, and the whole forms an http URL authority a WHATWG URL parser accepts
 * (oidc-provider resolves its endpoint URLs against it).
 */
export function isValidHost(value: string): boolean {
  let host = value;
  let port = '';
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end < 0 || !isIPv6(value.slice(1, end))) return false;
    host = value.slice(0, end + 1);
    const rest = value.slice(end + 1);
    if (rest !== '' && !rest.startsWith(':')) return false;
    port = rest.slice(1);
  } else {
    const colon = value.lastIndexOf(':');
    if (colon >= 0) {
      host = value.slice(0, colon);
      port = value.slice(colon + 1);
    }
    if (!REG_NAME.test(host)) return false;
  }
  if (!PORT.test(port) || (port !== '' && Number(port) > 65535)) return false;
  return URL.canParse(`http://${value}/`);
}

const shown = (value: string) => JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}…` : value);

/**
 * Refuses a request whose Host header (or, behind a trusted proxy, X-Forwarded-Host) is not a valid host[:port],
 * with 400 invalid_request, before anything builds a URL from it. A request without a Host header (HTTP/1.0) is
 * left to Node, which already refuses HTTP/1.1 requests that lack one.
 */
export const hostCheck: Koa.Middleware = async (ctx, next) => {
  const header = ctx.get('host');
  // ctx.host is what Koa and oidc-provider use: the Host header, or X-Forwarded-Host when the proxy is trusted.
  for (const [name, value] of [['Host', header], ['X-Forwarded-Host', ctx.host !== header ? ctx.host : '']] as const) {
    if (value !== '' && !isValidHost(value)) {
      ctx.status = 400;
      ctx.body = {
        error: 'invalid_request',
        error_description: `the ${name} header must be a host name or IP address with an optional port (got ${shown(value)})`,
      };
      return;
    }
  }
  await next();
};
