import type { Context } from 'koa';
import { errors } from 'oidc-provider';

import type { Agentauth } from '../boot.js';
import { ConfigError, TIER_NAME } from '../config.js';
import { checkInitialAccessTokenRequest, createInitialAccessToken } from '../initial-access-tokens.js';
import { CONTENT_TOO_LARGE, parseJsonBody, readBodyText } from '../request-body.js';
import { invalidRequest, tooLarge } from './errors.js';
import type { AdminRoute } from './routes.js';

/** Largest body POST /admin/iats reads: five members, the longest the limits (at most MAX_LIMITS_LENGTH as stored). */
const BODY_LIMIT = 4096;
const MEMBERS = new Set(['tier', 'expires_in', 'uses', 'grant_types', 'scope']);
const TAKES = 'tier, expires_in, uses, grant_types and scope';

/** The request's JSON object, or an AdminError saying what to send. */
async function requestObject(ctx: Context): Promise<Record<string, unknown>> {
  let text: string;
  let value: unknown;
  try {
    text = await readBodyText(ctx, BODY_LIMIT);
    if (text.trim() === '') return {};
    if (!ctx.is('application/json')) throw invalidRequest('send the settings as a JSON object with Content-Type: application/json (or no body for the defaults)');
    // As every JSON body the server reads: a member given twice is refused (RFC 7493), not settled by the last one.
    value = parseJsonBody(text);
  } catch (err) {
    if (!(err instanceof errors.OIDCProviderError)) throw err;
    const description = (err as { error_description?: string }).error_description ?? err.message;
    throw err.statusCode === CONTENT_TOO_LARGE ? tooLarge(description) : invalidRequest(description);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidRequest('the request body must be a JSON object: {"tier", "expires_in", "uses", "grant_types", "scope"}, each optional');
  const unknown = Object.keys(value as object).find((k) => !MEMBERS.has(k));
  if (unknown !== undefined) throw invalidRequest(`unknown member ${JSON.stringify(unknown.slice(0, 40))}: POST /admin/iats takes ${TAKES}`);
  return value as Record<string, unknown>;
}

/** A member that must be a string (`tier`) or a whole number (`expires_in`, `uses`), as the CLI's option would be written. */
function asOption(body: Record<string, unknown>, name: string, kind: 'string' | 'integer'): string | undefined {
  const value = body[name];
  if (value === undefined) return undefined;
  if (kind === 'string' ? typeof value !== 'string' : !Number.isSafeInteger(value)) throw invalidRequest(`${name} must be ${kind === 'string' ? 'a string' : 'a whole number'}`);
  // A tier name, as the configuration's tiers are named: anything else is refused without being echoed.
  if (kind === 'string' && !TIER_NAME.test(value as string)) throw invalidRequest(`${name} must be a tier name (1 to 32 of a-z, 0-9, _ and -)`);
  return String(value);
}

/** `grant_types`: an array of strings (RFC 7591's member), checked against the configuration as the CLI's list is. */
function grantTypesMember(body: Record<string, unknown>): string[] | undefined {
  const value = body.grant_types;
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.some((g) => typeof g !== 'string')) throw invalidRequest('grant_types must be an array of strings');
  return value as string[];
}

/** `scope`: a string of space-separated scopes (RFC 7591's member). */
function scopeMember(body: Record<string, unknown>): string | undefined {
  const value = body.scope;
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw invalidRequest('scope must be a string of space-separated scopes');
  return value;
}

/**
 * POST /admin/iats: an initial access token made by the server process itself, as `agentauth clients iat create` makes
 * one (the same checks, the same `registration.iat_created` record, with `actor: admin_api`). Answered 201 with the
 * token, once; `Cache-Control: no-store` (the listener sets it on every answer).
 */
export function iatCreateRoute(agentauth: Pick<Agentauth, 'config' | 'provider' | 'storage' | 'audit'>): AdminRoute {
  return {
    method: 'POST',
    path: '/admin/iats',
    auth: 'admin',
    handle: async (ctx) => {
      const body = await requestObject(ctx);
      let request;
      try {
        request = checkInitialAccessTokenRequest(
          agentauth.config,
          {
            tier: asOption(body, 'tier', 'string'),
            expiresIn: asOption(body, 'expires_in', 'integer'),
            uses: asOption(body, 'uses', 'integer'),
            grantTypes: grantTypesMember(body),
            scope: scopeMember(body),
          },
          { names: { tier: 'tier', expiresIn: 'expires_in', uses: 'uses', grantTypes: 'grant_types', scope: 'scope' }, inProcess: true },
        );
      } catch (err) {
        if (err instanceof ConfigError) throw invalidRequest(err.message);
        throw err;
      }
      const actor = { actor: 'admin_api', remote_address: ctx.request.ip || ctx.req.socket.remoteAddress || 'unknown' };
      const created = await createInitialAccessToken(agentauth, request, (event) => agentauth.audit.record(event), actor);
      ctx.status = 201;
      ctx.body = {
        initial_access_token: created.token,
        id: created.id,
        tier: created.tier,
        expires_in: created.expiresIn,
        uses: created.uses ?? null,
        grant_types: created.limits?.grant_types ?? null,
        scope: created.limits?.scope ?? null,
      };
    },
  };
}
