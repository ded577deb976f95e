import type { Registry } from 'prom-client';

import type { AdminRoute } from '../admin/routes.js';

/**
 * GET /metrics on the admin listener: the registry in Prometheus text format. Needs the admin credential unless
 * the operator mounts it with `auth: 'none'` (a scraper on a private network).
 */
export function metricsRoute(registry: Registry, options: { auth?: AdminRoute['auth'] } = {}): AdminRoute {
  return {
    method: 'GET',
    path: '/metrics',
    auth: options.auth ?? 'admin',
    async handle(ctx) {
      const text = await registry.metrics();
      ctx.status = 200;
      ctx.set('Content-Type', registry.contentType);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = text;
    },
  };
}
