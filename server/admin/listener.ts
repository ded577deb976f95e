import { createServer } from 'node:http';
import type { Server } from 'node:http';
import Koa from 'koa';

import type { StorageHealth } from '../../adapters/health.js';
import { StorageUnavailableError, UnreadableRecordError } from '../../adapters/errors.js';
import { answersUnavailable } from '../../adapters/oidc-adapter.js';
import { requestId } from '../http/request-id.js';
import type { Logger } from '../logger.js';
import type { AdminConfig } from './config.js';
import { AdminError } from './errors.js';
import { loggedPath, matchRoute } from './routes.js';
import type { AdminRoute } from './routes.js';
import { AdminTokenCheck, bearerCredential } from './token.js';
import { listen } from '../http/listen.js';
import { answerParseErrors } from '../http/client-error.js';
import { answerUnavailable } from '../http/unavailable.js';

const REALM = 'Bearer realm="agentauth-admin"';

function isDecodable(path: string): boolean {
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

export interface AdminAppDeps {
  token: string;
  routes: readonly AdminRoute[];
  health: Pick<StorageHealth, 'markDown' | 'up'>;
  log: Logger;
}

/**
 * `GET /admin/health`: whether the server can serve, as the storage gate sees it (no credential needed; says nothing
 * but whether storage is up). While storage is down it is a 503 with Retry-After, as every request that needs storage
 * is then: a monitor that checks only the status code sees the outage. It reads the health monitor's state (pinged
 * every second), never storage itself, so an open route costs storage nothing however often it is asked.
 */
export function adminHealthRoute(health: Pick<StorageHealth, 'up'>): AdminRoute {
  return {
    method: 'GET',
    path: '/admin/health',
    auth: 'none',
    handle(ctx) {
      if (health.up) {
        ctx.body = { status: 'ok', storage: 'ok' };
        return;
      }
      answerUnavailable(ctx, { status: 'unavailable', storage: 'unreachable' });
    },
  };
}

/**
 * The admin API: a Koa app of its own, never mounted on the public listener. Every `auth: 'admin'` route needs
 * `Authorization: Bearer <admin token>` (compared in constant time); a missing or wrong one is 401 with
 * WWW-Authenticate (RFC 6750 §3), before the route runs or its path parameters are looked at.
 */
export function createAdminApp({ token, routes, health, log }: AdminAppDeps): Koa {
  const check = new AdminTokenCheck(token);
  const app = new Koa();
  // The same request id as the public listener: on the log lines and the audit records of every admin action.
  app.use(requestId);
  app.use(async (ctx) => {
    const started = process.hrtime.bigint();
    // What the log lines and error answers show of the path: a secret path parameter (an initial access token) never.
    const logged = loggedPath(routes, ctx.path);
    // A request with a path parameter that was not answered 2xx (no such client or key, a malformed one, no admin
    // token) is logged with the route's pattern: what was sent there may be a credential pasted into the wrong place.
    let withParams: string | undefined;
    try {
      ctx.set('Cache-Control', 'no-store');
      const decodable = isDecodable(ctx.path);
      const { match, allowed } = decodable ? matchRoute(routes, ctx.method, ctx.path) : { match: undefined, allowed: [] };
      if (match && Object.keys(match.params).length > 0) withParams = match.route.path;
      // The token first, for every request but the open routes' (/admin/health): without it, a caller learns nothing,
      // not even which paths and methods exist (a 404 or a 405 with Allow answered before would tell).
      if (!match || match.route.auth !== 'none') {
        const presented = bearerCredential(ctx.get('Authorization'));
        if (presented === undefined || !check.matches(presented)) {
          ctx.status = 401;
          ctx.set('WWW-Authenticate', presented === undefined ? REALM : `${REALM}, error="invalid_token"`);
          ctx.body = {
            error: presented === undefined ? 'invalid_request' : 'invalid_token',
            error_description: presented === undefined ? 'the admin API needs Authorization: Bearer <admin token>' : 'the admin token is not valid',
          };
          log.warn({ event: 'admin.refused', method: ctx.method, path: withParams ?? logged, remote_address: ctx.ip }, 'admin request refused: no valid admin token');
          return;
        }
      }
      if (!decodable) {
        ctx.status = 400;
        ctx.body = { error: 'invalid_request', error_description: 'the path has a malformed percent-encoding' };
        return;
      }
      if (!match) {
        ctx.status = allowed.length > 0 ? 405 : 404;
        if (allowed.length > 0) ctx.set('Allow', allowed.join(', '));
        ctx.body = allowed.length > 0
          ? { error: 'invalid_request', error_description: `${ctx.method} is not allowed on ${logged} (allowed: ${allowed.join(', ')})` }
          : { error: 'not_found', error_description: `no admin route ${logged}` };
        return;
      }
      ctx.params = match.params;
      await match.route.handle(ctx);
    } catch (err) {
      if (err instanceof AdminError) {
        ctx.status = err.status;
        ctx.body = { error: err.code, error_description: err.message };
      } else if (answersUnavailable(err)) {
        // StorageUnavailableError from a store call, or the 503 oidc-provider's adapter raised for one (an initial
        // access token saved through the provider, POST /admin/iats), which marked storage down itself.
        if (err instanceof StorageUnavailableError) health.markDown(err);
        answerUnavailable(ctx, { error: 'temporarily_unavailable', error_description: 'the authorization server cannot reach its storage; retry shortly' });
      } else if (err instanceof UnreadableRecordError) {
        // Damage an operator has to repair (docs/operations.md, "A stored record that is not readable"): named, not hidden.
        // The model only, as on the public side: a record stored before ids were sealed has the credential as its id.
        log.error({ event: 'storage.unreadable', model: err.model }, 'admin API: a stored record is not readable');
        ctx.status = 500;
        ctx.body = { error: 'server_error', error_description: err.message };
      } else {
        log.error({ err }, 'admin API: unhandled error');
        ctx.status = 500;
        ctx.body = { error: 'server_error', error_description: 'an unexpected error occurred' };
      }
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const shown = (ctx.status < 200 || ctx.status >= 300) && withParams !== undefined ? withParams : logged;
      log.info({ listener: 'admin', method: ctx.method, path: shown, status: ctx.status, ms: Math.round(ms * 100) / 100 }, 'admin request');
    }
  });
  return app;
}

export interface AdminListener {
  server: Server;
  close(): Promise<void>;
}

/** Starts the admin listener on `admin.host:admin.port` (loopback by default). */
export async function startAdminListener(admin: AdminConfig & { port: number }, app: Koa, log: Logger): Promise<AdminListener> {
  const server = createServer(app.callback());
  answerParseErrors(server);
  server.keepAliveTimeout = 5000;
  await listen(server, admin.port, admin.host, { port: 'AGENTAUTH_CONFIG admin.port', host: 'AGENTAUTH_CONFIG admin.host' });
  log.info({ host: admin.host, port: admin.port }, 'admin API listening');
  return {
    server,
    // Like the public listener: in-flight requests finish, idle keep-alive connections are closed as they go idle.
    close: () =>
      new Promise<void>((resolve) => {
        const sweep = setInterval(() => server.closeIdleConnections(), 50).unref();
        server.close(() => {
          clearInterval(sweep);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
