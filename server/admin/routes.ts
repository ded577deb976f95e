import type { Context } from 'koa';

/**
 * A route served on the admin listener (server/admin/listener.ts). `auth: 'admin'` routes need the admin bearer
 * token; `auth: 'none'` ones (health, and /metrics if the operator wants it scraped without one) do not. `path` is
 * matched exactly, segment by segment; a segment written `:name` matches any one non-empty segment and is handed to
 * the handler as `ctx.params.name` (percent-decoded).
 */
export interface AdminRoute {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  auth: 'admin' | 'none';
  /** Path parameters that may carry a secret (an initial access token): logged as `[redacted]`, never as sent. */
  secretParams?: readonly string[];
  handle(ctx: Context): Promise<void> | void;
}

export interface RouteMatch {
  route: AdminRoute;
  params: Record<string, string>;
}

/** The route for a method and path, the routes for the path under other methods (for 405), or nothing (404). */
export function matchRoute(routes: readonly AdminRoute[], method: string, path: string): { match?: RouteMatch; allowed: string[] } {
  const segments = path.split('/');
  const allowed: string[] = [];
  for (const route of routes) {
    const params = matchPath(route.path.split('/'), segments);
    if (!params) continue;
    const m = method === 'HEAD' ? 'GET' : method;
    if (route.method === m) return { match: { route, params }, allowed };
    allowed.push(route.method);
  }
  return { allowed };
}

/**
 * The path as log lines and error answers may show it. Where a route has a secret parameter (an initial access token),
 * any path that begins like that route up to the parameter, in any spelling the caller might use (any case, empty
 * segments, a trailing slash, a malformed escape), shows everything after that beginning as `[redacted]`: a near
 * miss that matches no route is as likely to carry the secret as one that matches. A path that matches a route with
 * no secret parameter is shown as it came. Any other path (one no route answers: dot segments, escaped letters or
 * slashes, `;` parameters, ...) shows only the segments that are words of the routes (`admin`, `iats`, ...), each
 * other segment as `[redacted]`: no spelling the router does not take can carry a secret into the log.
 */
export function loggedPath(routes: readonly AdminRoute[], path: string): string {
  const given = path.split('/').filter((s) => s !== '');
  for (const route of routes) {
    const pattern = route.path.split('/').filter((s) => s !== '');
    const first = pattern.findIndex((p) => p.startsWith(':') && (route.secretParams ?? []).includes(p.slice(1)));
    if (first < 0 || given.length <= first) continue;
    const prefix = pattern.slice(0, first);
    if (prefix.every((p, i) => p.startsWith(':') || p.toLowerCase() === given[i]!.toLowerCase())) {
      return `/${[...given.slice(0, first), '[redacted]'].join('/')}`;
    }
  }
  const segments = path.split('/').slice(1);
  if (routes.some((route) => matchPath(route.path.split('/').slice(1), segments) !== undefined)) return path;
  const words = new Set(routes.flatMap((route) => route.path.split('/').filter((p) => p !== '' && !p.startsWith(':')).map((p) => p.toLowerCase())));
  return `/${segments.map((segment) => (segment === '' || words.has(safeDecode(segment).toLowerCase()) ? segment : '[redacted]')).join('/')}`;
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function matchPath(pattern: string[], segments: string[]): Record<string, string> | undefined {
  if (pattern.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i += 1) {
    const p = pattern[i]!;
    const s = segments[i]!;
    if (p.startsWith(':')) {
      if (s === '') return undefined;
      let decoded: string;
      try {
        decoded = decodeURIComponent(s);
      } catch {
        return undefined;
      }
      params[p.slice(1)] = decoded;
    } else if (p !== s) {
      return undefined;
    }
  }
  return params;
}
