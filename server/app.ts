import Koa from 'koa';
import mount from 'koa-mount';
import type { Provider } from 'oidc-provider';

import type { StorageHealth } from '../adapters/health.js';
import { StorageUnavailableError } from '../adapters/errors.js';
import { answersUnavailable } from '../adapters/oidc-adapter.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';
import type { Keyring } from '../keys/keyring.js';
import type { Logger } from './logger.js';
import { auditTrail } from './audit/trail.js';
import type { AuditRecorder } from './audit/trail.js';
import { ASSET_PATH, interactionRoutes } from '../interactions/routes.js';
import { errorPage, prefersPage, unavailablePage } from '../interactions/views.js';
import type { InteractionDeps } from '../interactions/routes.js';
import { declaredBodyLimit, drainUnreadBody } from './http/body-limit.js';
import { bodyReceiptClock } from './http/body-received.js';
import { bindPublicOrigin } from './http/public-origin.js';
import { requestOriginCheck } from './http/request-origin.js';
import { requestTarget } from './http/request-target.js';
import { dpopHeaderCheck } from './http/dpop-header.js';
import { formBodyContentType } from './http/form-body-content-type.js';
import { earlyRefusalCors } from './http/early-refusal-cors.js';
import { unmatchedRequests } from './http/unmatched.js';
import { isProbeRequest, KEY_ARCHIVE_PATH, LIVENESS_PATH, READINESS_PATH } from './http/probe-paths.js';
import { requestId } from './http/request-id.js';
import type { HandlersInFlight } from './http/in-flight.js';
import { percentEscapeCheck } from './http/path-escapes.js';
import { securityHeaders } from './http/security-headers.js';
import { RETRY_AFTER_SECONDS } from './http/unavailable.js';
import { requestMetrics } from './metrics/http.js';
import type { Metrics } from './metrics/registry.js';

export interface AppDeps {
  provider: Provider;
  health: StorageHealth;
  keyring: Keyring;
  cookieKeys: string[];
  log: Logger;
  interactions: InteractionDeps;
  audit: AuditRecorder;
  /** Requests, refusals and tokens issued are counted here (server/metrics/). */
  metrics?: Metrics;
  /** Handlers still running, for shutdown to wait for (server/http/in-flight.ts). */
  inFlight?: HandlersInFlight;
  /**
   * ISSUER's origin when ISSUER is set: every URL built from a request starts with it (server/http/public-origin.ts).
   * Unset, URLs follow each request's Host (a development server reached as localhost or 127.0.0.1).
   */
  publicOrigin?: string;
}

export { KEY_ARCHIVE_PATH };

/** Paths that never need storage: served even while storage is down, so resource servers can still verify tokens. */
const STORAGE_FREE = new Set([LIVENESS_PATH, READINESS_PATH, '/jwks', KEY_ARCHIVE_PATH, '/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']);

/**
 * Answers a request agentauth cannot serve now (503) or could not serve (500): the RFC 6749 JSON error body, or, for a
 * browser that asks for a page (a person on the authorization endpoint, the login or consent page, or the logout
 * page), a page saying the same in words. The authorization endpoint cannot send `temporarily_unavailable` back to
 * the client while the store that knows the client's redirect URIs is unreachable, so a person is told here instead.
 */
function failed(ctx: Koa.Context, status: 500 | 503): void {
  ctx.status = status;
  const body = status === 503
    ? { error: 'temporarily_unavailable', error_description: 'the authorization server cannot reach its storage; retry shortly' }
    : { error: 'server_error', error_description: 'an unexpected error occurred' };
  if (!prefersPage(ctx)) {
    ctx.body = body;
    return;
  }
  ctx.type = 'html';
  ctx.body = status === 503 ? unavailablePage() : errorPage('Something went wrong', 'This sign-in service could not finish your request. Go back to the application and start again.');
}

/** One JSON log line per request: method, path (never the query string), status, latency (request_id and ip: see requestId). */
function requestLog(log: Logger): Koa.Middleware {
  return async (ctx, next) => {
    const started = process.hrtime.bigint();
    const { method, path } = ctx;
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log.info({ method, path, status: ctx.status, ms: Math.round(ms * 100) / 100 }, 'request');
    }
  };
}

/** Last line of defence for agentauth's own routes: RFC-shaped JSON errors, never a stack trace. */
function errorShield(log: Logger, health: StorageHealth): Koa.Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (err) {
      if (answersUnavailable(err)) {
        if (err instanceof StorageUnavailableError) health.markDown(err);
        failed(ctx, 503);
      } else {
        log.error({ err }, 'unhandled error');
        failed(ctx, 500);
      }
    }
    if (ctx.status === 503) ctx.set('Retry-After', String(RETRY_AFTER_SECONDS));
  };
}

function probes(health: StorageHealth, keyring: Keyring): Koa.Middleware {
  return async (ctx, next) => {
    if (isProbeRequest(ctx) && ctx.path === LIVENESS_PATH) {
      ctx.body = { status: 'ok' };
      return;
    }
    if (ctx.path === KEY_ARCHIVE_PATH && (ctx.method === 'GET' || ctx.method === 'HEAD')) {
      // Every key agentauth ever signed with, with the window it signed in and was published: for auditors.
      ctx.set('Cache-Control', 'public, max-age=60');
      ctx.body = { keys: keyring.archive() };
      return;
    }
    if (isProbeRequest(ctx) && ctx.path === READINESS_PATH) {
      const storage = await health.check();
      // Ready only with a key that signs now (not merely published ones).
      const keys = keyring.view().signer !== undefined && keyring.keys.length > 0;
      ctx.status = storage && keys ? 200 : 503;
      ctx.body = {
        status: storage && keys ? 'ready' : 'unavailable',
        storage: storage ? 'ok' : 'unreachable',
        keys: keys ? 'loaded' : 'missing',
      };
      return;
    }
    await next();
  };
}

/** oidc-provider's routes that need no storage: discovery (both well-known paths) and the JWKS. */
const STORAGE_FREE_ROUTES = new Set(['discovery', 'jwks']);

/**
 * Whether a route is a CORS preflight (`cors.token`, `cors.introspection`, ...): oidc-provider answers it from the
 * request's headers alone, so a browser-based client can still send the request and read its 503 while storage is down.
 */
const isPreflightRoute = (name: string) => name.startsWith('cors.');

/**
 * Fail closed: while storage is down, nothing that issues or accepts a credential runs. What is served anyway is
 * decided by the route oidc-provider's router resolves (`/JWKS`, `/jwks/` and `/.well-known/openid-configuration/`
 * are the JWKS and discovery too), and by agentauth's own storage-free paths.
 */
function storageGate(health: StorageHealth, provider: Provider): Koa.Middleware {
  const { router } = instance(provider);
  const storageFree = (ctx: Koa.Context) => {
    if (STORAGE_FREE.has(ctx.path)) return true;
    // The pages' stylesheet and scripts, so that the page saying storage is down (and any page already open) is styled.
    if ((ctx.method === 'GET' || ctx.method === 'HEAD') && ASSET_PATH.test(ctx.path)) return true;
    const name = router.match(ctx.method === 'HEAD' ? 'GET' : ctx.method, ctx.path)?.route.name;
    return name !== undefined && (STORAGE_FREE_ROUTES.has(name) || isPreflightRoute(name));
  };
  return async (ctx, next) => {
    if (!health.up && !storageFree(ctx)) {
      failed(ctx, 503);
      return;
    }
    await next();
  };
}

/** RFC 8414 metadata at its own well-known path: the same document as OIDC discovery (same issuer). */
const authorizationServerMetadata: Koa.Middleware = async (ctx, next) => {
  if (ctx.path === '/.well-known/oauth-authorization-server') ctx.path = '/.well-known/openid-configuration';
  await next();
};

export function createApp({ provider, health, keyring, cookieKeys, log, interactions, audit, metrics, inFlight, publicOrigin }: AppDeps): Koa {
  const app = new Koa();
  if (publicOrigin !== undefined) bindPublicOrigin(app, publicOrigin);
  // Same keys as the provider's cookies: required when the provider is mounted (see shared notes).
  app.keys = cookieKeys;
  // First: an absolute-form request target becomes the origin-form every layer reads (server/http/request-target.ts).
  app.use(requestTarget);
  if (inFlight) app.use(inFlight.middleware);
  // Then: every log line and audit record of the request carries its id (server/http/request-id.ts).
  app.use(requestId);
  app.use(requestLog(log));
  if (metrics) app.use(requestMetrics(metrics));
  app.use(drainUnreadBody);
  // The time each body was fully received, for windows measured at receipt (server/http/body-received.ts).
  app.use(bodyReceiptClock);
  // A refusal made before oidc-provider's route, on a route it serves cross-origin, is readable cross-origin too.
  app.use(securityHeaders(earlyRefusalCors(provider)));
  // Malformed requests end here, before any route or oidc-provider sees them (4xx, never a 500).
  app.use(requestOriginCheck);
  app.use(percentEscapeCheck);
  app.use(dpopHeaderCheck);
  app.use(declaredBodyLimit);
  app.use(formBodyContentType(provider));
  app.use(errorShield(log, health));
  app.use(auditTrail(audit, log));
  app.use(probes(health, keyring));
  app.use(storageGate(health, provider));
  // A request nothing answered: JSON, and 405 with Allow where oidc-provider routes the path for other methods.
  app.use(unmatchedRequests(provider));
  app.use(authorizationServerMetadata);
  app.use(interactionRoutes(interactions));
  app.use(mount(provider));
  return app;
}
