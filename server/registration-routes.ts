import type Koa from 'koa';
import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC, Provider } from 'oidc-provider';

import type { Storage } from '../adapters/types.js';
import type { RegistrationConfig } from './config.js';
import { auditLater } from './audit/trail.js';
import { revokeClientRecords } from './client-revocation.js';
import { parseJsonBody, readBodyText } from './request-body.js';
import { ClientSecretHasher } from './client-secrets.js';
import type { Logger } from './logger.js';
import { WindowLimiter } from './policies/rate-limit.js';
import { checkRegistrationRequest } from './policies/registration.js';
import type { RegistrationPolicy } from './policies/registration.js';
import { TIER_FIELD, tierOf } from './policies/tiers.js';
import type { TierLimits } from './policies/tiers.js';

const BODY_LIMIT = 56 * 1024;
const TIER_POLICY_PREFIX = 'tier:';

export const tierPolicyName = (tier: string) => `${TIER_POLICY_PREFIX}${tier}`;
export const tierFromPolicies = (policies: readonly string[] | undefined) =>
  policies?.find((p) => p.startsWith(TIER_POLICY_PREFIX))?.slice(TIER_POLICY_PREFIX.length);

export interface RegistrationGuardDeps {
  provider: Provider;
  storage: Storage;
  registration: RegistrationConfig;
  policy: RegistrationPolicy;
  limits: TierLimits;
  hasher: ClientSecretHasher;
  log: Logger;
}

function oauthError(ctx: Koa.Context, status: number, error: string, description: string): void {
  ctx.status = status;
  ctx.body = { error, error_description: description };
}

async function readJson(ctx: Koa.Context): Promise<unknown> {
  if (!ctx.is('application/json')) {
    throw new errors.InvalidRequest(`only application/json bodies are supported on ${ctx.method} ${ctx.path}`);
  }
  return parseJsonBody(await readBodyText(ctx, BODY_LIMIT));
}

/** Hands the parsed body to oidc-provider, which reads `ctx.request.body` once the request stream is consumed. */
function setParsedBody(ctx: Koa.Context, body: unknown): void {
  (ctx.request as unknown as { body: unknown }).body = body;
}

function bearer(ctx: Koa.Context): string | undefined {
  const m = /^Bearer ([\x21-\x7e]+)$/.exec(ctx.get('authorization'));
  return m?.[1];
}

/**
 * Policy in front of oidc-provider's RFC 7591/7592 endpoints: the per-IP quota in open mode, agentauth's
 * registration policy (fields, auth methods, grant types, redirect URIs, tier defaults), secrets that are only ever
 * compared against their hash, registration access tokens that rotate on every use, and revocation of everything
 * a deleted client held.
 */
export function registrationGuard(deps: RegistrationGuardDeps): Koa.Middleware {
  const { provider, registration } = deps;
  const limiter = new WindowLimiter(registration.quota.max, registration.quota.windowSeconds);
  const base = '/reg';

  return async (ctx, next) => {
    if (registration.mode === 'off' || (ctx.path !== base && !ctx.path.startsWith(`${base}/`))) return next();
    const clientId = ctx.path === base ? undefined : decodeURIComponent(ctx.path.slice(base.length + 1));
    try {
      if (!clientId && ctx.method === 'POST') {
        if (registration.mode === 'open') {
          const { allowed, retryAfter } = limiter.hit(ctx.ip);
          if (!allowed) {
            ctx.set('Retry-After', String(retryAfter));
            return oauthError(ctx, 429, 'temporarily_unavailable', `registration quota of ${registration.quota.max} per ${registration.quota.windowSeconds} s exceeded for this address; retry after ${retryAfter} s`);
          }
        }
        const token = bearer(ctx);
        const iat = token ? await provider.InitialAccessToken.find(token) : undefined;
        // Token mode without a valid initial access token: oidc-provider answers 401 before anything is read.
        if (registration.mode === 'token' && !iat) return await next();
        const tierName = tierFromPolicies(iat?.policies) ?? registration.defaultTier;
        const tier = deps.limits.tiers[tierName] ?? tierOf(deps.limits, undefined);
        setParsedBody(ctx, checkRegistrationRequest(await readJson(ctx), deps.policy, tier, { update: false }));
        return await next();
      }

      if (clientId && ctx.method === 'PUT') {
        // Nothing about the client is checked (or revealed) until its registration access token is valid.
        const token = bearer(ctx);
        const rat = token ? await provider.RegistrationAccessToken.find(token) : undefined;
        if (!rat || rat.clientId !== clientId) return await next();
        const body = await readJson(ctx);
        const current = await provider.Client.find(clientId);
        if (current) {
          const checked = checkRegistrationRequest(body, deps.policy, tierOf(deps.limits, current), { update: true });
          if ('client_secret' in checked) {
            if (!deps.hasher.matches(checked.client_secret, current.clientSecret)) {
              throw new errors.InvalidRequest("provided client_secret does not match the authenticated client's one");
            }
            delete checked.client_secret;
          }
          if (TIER_FIELD in checked) {
            if (checked[TIER_FIELD] !== current.metadata()[TIER_FIELD]) {
              throw new errors.InvalidClientMetadata(`${TIER_FIELD} is assigned by the authorization server and cannot be changed by the client`);
            }
            delete checked[TIER_FIELD];
          }
          setParsedBody(ctx, checked);
        } else {
          setParsedBody(ctx, body);
        }
        await next();
        // A stored secret is a hash and is not returned; a secret generated by this update (e.g. none → client_secret_basic) is, once.
        const answer = ctx.status === 200 && ctx.body && typeof ctx.body === 'object' ? (ctx.body as Record<string, unknown>) : undefined;
        if (answer && ClientSecretHasher.isHashed(answer.client_secret)) {
          delete answer.client_secret;
          delete answer.client_secret_expires_at;
        }
        return;
      }

      if (clientId && ctx.method === 'GET') {
        await next();
        if (ctx.status !== 200 || !ctx.body || typeof ctx.body !== 'object') return;
        const body = ctx.body as Record<string, unknown>;
        // The stored secret is a hash: the client already holds the secret itself (RFC 7592 §3 "MAY").
        delete body.client_secret;
        delete body.client_secret_expires_at;
        const oidc = (ctx as unknown as KoaContextWithOIDC).oidc;
        const old = oidc.entities.RegistrationAccessToken;
        if (old) {
          const RAT = provider.RegistrationAccessToken as unknown as new (init: { client: unknown; policies?: string[] }) => { save(): Promise<string> };
          const rat = new RAT({ client: oidc.client, policies: old.policies });
          body.registration_access_token = await rat.save();
          await old.destroy();
        }
        return;
      }

      if (clientId && ctx.method === 'DELETE') {
        await next();
        if (ctx.status === 204) {
          const revoked = await revokeClientRecords(deps.storage, clientId);
          deps.log.info({ event: 'client.deleted', client_id: clientId }, 'client deleted; its grants and tokens are revoked');
          auditLater(ctx, { type: 'client.deleted', client_id: clientId, details: { revoked: [...revoked] } });
        }
        return;
      }
      return await next();
    } catch (err) {
      if (err instanceof errors.OIDCProviderError) {
        const e = err as InstanceType<typeof errors.OIDCProviderError> & { error_description?: string };
        return oauthError(ctx, e.statusCode, e.message, e.error_description ?? e.message);
      }
      throw err;
    }
  };
}
