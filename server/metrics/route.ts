import type { Registry } from 'prom-client';

import type { AdminRoute } from '../admin/routes.js';
import { MetricsGatherError } from './cluster.js';
import { answerUnavailable } from '../http/unavailable.js';

/**
 * GET /metrics on the admin listener: the registry in Prometheus text format. Needs the admin credential unless
 * the operator mounts it with `auth: 'none'` (a scraper on a private network). With `gather` (a worker of
 * `start --workers N`, server/metrics/cluster.ts) it serves every worker's metrics gathered by the primary instead of
 * this process's alone, and 503 temporarily_unavailable when they cannot be gathered.
 */
export function metricsRoute(registry: Registry, options: { auth?: AdminRoute['auth']; gather?: () => Promise<string> } = {}): AdminRoute {
  return {
    method: 'GET',
    path: '/metrics',
    auth: options.auth ?? 'admin',
    async handle(ctx) {
      let text: string;
      try {
        text = options.gather ? await options.gather() : await registry.metrics();
      } catch (err) {
        if (!(err instanceof MetricsGatherError)) throw err;
        answerUnavailable(ctx, { error: err.code, error_description: err.message });
        return;
      }
      ctx.status = 200;
      ctx.set('Content-Type', registry.contentType);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = text;
    },
  };
}
