import type Koa from 'koa';

import { NONCE_PATH } from '../../interactions/routes.js';
import type { Metrics } from './registry.js';

/** Per-request state the provider-event listeners (provider-events.ts) leave for this middleware. */
export const PENDING_TOKENS = 'metricsPendingTokens';
export const PROVIDER_REFUSAL = 'metricsProviderRefusal';

export interface PendingToken {
  grant_type: string;
  tier: string;
  binding: 'dpop' | 'bearer';
  token_type: 'access_token' | 'refresh_token';
}

/**
 * agentauth's own routes, matched exactly as the middleware that serves them matches (server/app.ts probes,
 * interactions/routes.ts). Matched on the path as it arrived, before the RFC 8414 alias is rewritten.
 */
const EXACT_ROUTES = new Map<string, string>([
  ['/healthz', 'healthz'],
  ['/readyz', 'readyz'],
  ['/keys', 'key_archive'],
  [NONCE_PATH, 'wallet_nonce'],
  ['/.well-known/oauth-authorization-server', 'oauth_authorization_server_metadata'],
]);
const INTERACTION = /^\/interaction\/[A-Za-z0-9_-]+(?:\/(login|confirm|abort|nonce))?$/;
const INTERACTION_ASSET = /^\/interaction-assets\/[a-z0-9.-]+$/;

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']);
/** An OAuth error code as agentauth and oidc-provider write them; anything else is counted as "other". */
const ERROR_CODE = /^[a-z][a-z0-9_]{0,63}$/;

interface OidcView {
  route?: unknown;
}

/**
 * The route label: agentauth's own route name, else the route oidc-provider resolved (`token`, `introspection`,
 * `registration`, ... the same for every spelling of a path it accepts), else `other`. Never the raw path: the
 * number of series stays bounded whatever paths clients send.
 */
export function routeLabel(arrivedPath: string, oidc: OidcView | undefined): string {
  const own = EXACT_ROUTES.get(arrivedPath);
  if (own) return own;
  const interaction = INTERACTION.exec(arrivedPath);
  if (interaction) return interaction[1] ? `interaction_${interaction[1]}` : 'interaction';
  if (INTERACTION_ASSET.test(arrivedPath)) return 'interaction_asset';
  if (typeof oidc?.route === 'string' && ERROR_CODE.test(oidc.route)) return oidc.route;
  return 'other';
}

export const errorCodeLabel = (code: unknown): string => (typeof code === 'string' && ERROR_CODE.test(code) ? code : 'other');

/**
 * The OAuth error a refused request answered with: the JSON body's `error`, else what oidc-provider reported. A
 * response with no OAuth error (the 404 `not_found` for a path nothing serves, server/http/unmatched.ts) is not a
 * refusal; it is counted by status only.
 */
function refusalCode(ctx: Koa.Context): string | undefined {
  const body: unknown = ctx.body;
  if (ctx.status === 404 && (body as { error?: unknown } | undefined)?.error === 'not_found') return undefined;
  if (ctx.status >= 400 && body && typeof body === 'object' && !Buffer.isBuffer(body) && 'error' in body) {
    return errorCodeLabel((body as { error: unknown }).error);
  }
  // An error oidc-provider rendered as a page or sent back in a redirect (the authorization endpoint).
  const reported = ctx.state[PROVIDER_REFUSAL];
  return reported === undefined ? undefined : errorCodeLabel(reported);
}

/**
 * Counts every request by route, method and status, times it, counts refusals by error code, and counts the tokens
 * oidc-provider minted for it once the response is a success (a token whose audit record failed, answered 503, was
 * never handed out and is not counted). Outermost, so it sees the final status.
 */
export function requestMetrics(metrics: Metrics): Koa.Middleware {
  return async (ctx, next) => {
    const arrivedPath = ctx.path;
    const end = metrics.httpDuration.startTimer();
    let threw = false;
    try {
      await next();
    } catch (err) {
      threw = true;
      throw err;
    } finally {
      const status = threw ? 500 : ctx.status;
      const route = routeLabel(arrivedPath, (ctx as unknown as { oidc?: OidcView }).oidc);
      const method = METHODS.has(ctx.method) ? ctx.method : 'other';
      metrics.httpRequests.inc({ route, method, status: String(status) });
      end({ route, method, status_class: `${Math.floor(status / 100)}xx` });
      const refused = threw ? 'server_error' : refusalCode(ctx);
      if (refused) metrics.refusals.inc({ route, error: refused });
      const tokens = ctx.state[PENDING_TOKENS] as PendingToken[] | undefined;
      if (tokens && status < 400) for (const t of tokens) metrics.tokensIssued.inc({ ...t });
    }
  };
}
