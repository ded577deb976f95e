import { createServer } from 'node:http';
import type { Server } from 'node:http';

import { boot } from './boot.js';
import type { Agentauth, BootOptions } from './boot.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import { startAdmin } from './admin/start-admin.js';
import { adminListenerToken } from './admin/token.js';
import { listen } from './http/listen.js';
import type { AdminRoute } from './admin/routes.js';
import { answerExpectations, answerParseErrors } from './http/client-error.js';

export interface Running {
  agentauth: Agentauth;
  server: Server;
  /** Stop accepting, let in-flight requests finish (up to shutdownTimeoutMs), close storage. */
  shutdown(): Promise<void>;
}

export async function start(config: Config, log: Logger, options: BootOptions & { adminRoutes?: AdminRoute[] } = {}): Promise<Running> {
  // Before boot: a bad admin token must not leave a store, a KEK and a first key behind.
  const adminToken = adminListenerToken(config.admin);
  const agentauth = await boot(config, log, options);
  const admin = await startAdmin(agentauth, log, adminToken, options.adminRoutes).catch(async (err: unknown) => {
    await agentauth.close();
    throw err;
  });
  // An HTTP/1.1 request without Host is refused by requestOriginCheck (server/http/request-origin.ts) with a JSON
  // error naming the header, like an empty one; Node's own check answered a bare 400.
  const handler = agentauth.app.callback();
  const server = createServer({ requireHostHeader: false }, handler);
  answerParseErrors(server);
  answerExpectations(server, handler);
  server.keepAliveTimeout = 5000;
  try {
    await listen(server, config.port, config.host, { port: 'PORT', host: 'HOST' });
  } catch (err) {
    await admin?.close();
    await agentauth.close();
    throw err;
  }
  log.info({ issuer: config.issuer, port: config.port, host: config.host ?? '(all interfaces)' }, 'agentauth listening');

  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    stopping ??= (async () => {
      log.info('shutting down: no new connections, finishing in-flight requests');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const adminClosed = admin?.close();
      // Idle keep-alive sockets would hold close() open; in-flight ones are left to finish.
      const sweep = setInterval(() => server.closeIdleConnections(), 50);
      server.closeIdleConnections();
      let forced = false;
      const deadline = new Promise<void>((resolve) =>
        setTimeout(() => {
          forced = true;
          resolve();
        }, config.shutdownTimeoutMs).unref(),
      );
      // Connections closed is not enough: a handler whose client went away still runs (server/http/in-flight.ts).
      await Promise.race([Promise.all([closed, adminClosed, agentauth.inFlight.idle()]), deadline]);
      clearInterval(sweep);
      if (forced) {
        log.warn({ timeoutMs: config.shutdownTimeoutMs }, 'in-flight requests did not finish in time; closing their connections');
        server.closeAllConnections();
        admin?.server.closeAllConnections();
      }
      await adminClosed;
      await agentauth.close();
      log.info('stopped');
    })();
    return stopping;
  };
  return { agentauth, server, shutdown };
}
