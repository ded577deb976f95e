import cluster from 'node:cluster';

import type { Agentauth } from '../boot.js';
import type { Logger } from '../logger.js';
import { clusterMetricsGatherer } from '../metrics/cluster.js';
import { metricsRoute } from '../metrics/route.js';
import { ClientAdmin } from './client-admin.js';
import { clientAdminRoutes } from './client-routes.js';
import { iatCreateRoute } from './iat-routes.js';
import { subjectAdminRoutes } from './subject-routes.js';
import { adminHealthRoute, createAdminApp, startAdminListener } from './listener.js';
import type { AdminListener } from './listener.js';
import type { AdminRoute } from './routes.js';

/**
 * The admin listener of a server process, when `admin.port` is set: client administration, health, the Prometheus
 * metrics (GET /metrics, admin credential: this process's, or every worker's under `start --workers N`) and any admin
 * routes handed in (`routes`). `token` is what adminListenerToken() returned for this configuration.
 */
export async function startAdmin(agentauth: Agentauth, log: Logger, token: string | undefined, routes: readonly AdminRoute[] = []): Promise<AdminListener | undefined> {
  const { admin } = agentauth.config;
  if (admin.port === undefined || token === undefined) return undefined;
  const clients = new ClientAdmin({
    storage: agentauth.storage,
    hasher: agentauth.hasher,
    staticClients: agentauth.config.clients,
    audit: (event) => agentauth.audit.record(event),
  });
  const app = createAdminApp({
    token,
    routes: [
      adminHealthRoute(agentauth.health),
      ...clientAdminRoutes(clients),
      iatCreateRoute(agentauth),
      ...subjectAdminRoutes({ storage: agentauth.storage, audit: (event) => agentauth.audit.record(event) }),
      // A worker of `start --workers N` serves every worker's metrics, gathered by the primary (server/metrics/cluster.ts).
      metricsRoute(agentauth.metrics.registry, cluster.isWorker ? { gather: clusterMetricsGatherer(agentauth.metrics.registry) } : {}),
      ...routes,
    ],
    health: agentauth.health,
    log,
  });
  return startAdminListener({ ...admin, port: admin.port }, app, log);
}
