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
