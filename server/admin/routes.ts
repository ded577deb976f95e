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

/**
 * The route for a method and path, the routes for the path under other methods (for 405), or nothing (404); and
 * `logged`, the path as the log may show it (a secret path parameter of a route the path matches replaced).
 */
export function matchRoute(routes: readonly AdminRoute[], method: string, path: string): { match?: RouteMatch; allowed: string[]; logged: string } {
  const segments = path.split('/');
  const allowed: string[] = [];
  let logged: string | undefined;
  for (const route of routes) {
    const pattern = route.path.split('/');
    const params = matchPath(pattern, segments);
    if (!params) continue;
    logged ??= loggedPath(route, pattern, segments);
    const m = method === 'HEAD' ? 'GET' : method;
    if (route.method === m) return { match: { route, params }, allowed, logged };
    allowed.push(route.method);
  }
  return { allowed, logged: logged ?? path };
}

function loggedPath(route: AdminRoute, pattern: string[], segments: string[]): string {
  const secret = route.secretParams ?? [];
  if (secret.length === 0) return segments.join('/');
  return segments.map((s, i) => (secret.includes(pattern[i]!.slice(1)) && pattern[i]!.startsWith(':') ? '[redacted]' : s)).join('/');
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
