import { Provider } from 'oidc-provider';

import { TIER_FIELD } from '../policies/tiers.js';
import { PENDING_TOKENS, PROVIDER_REFUSAL } from './http.js';
import type { PendingToken } from './http.js';

type Emitter = NodeJS.EventEmitter;

interface RequestView {
  state: Record<string, unknown>;
  oidc?: { route?: string; params?: Record<string, unknown>; client?: { metadata(): Record<string, unknown> } };
}

/** A token model as oidc-provider emits it: bound when it carries a DPoP key thumbprint. */
interface TokenView {
  jkt?: unknown;
}

/** Every error event oidc-provider 9.13.3 emits from its routes (lib/helpers/initialize_app.js, lib/shared/*). */
export const ERROR_EVENTS = [
  'authorization.error', 'server_error', 'grant.error', 'userinfo.error', 'jwks.error', 'discovery.error',
  'registration_create.error', 'registration_read.error', 'registration_update.error', 'registration_delete.error',
  'revocation.error', 'introspection.error', 'end_session.error', 'end_session_confirm.error',
  'end_session_success.error', 'device_authorization.error', 'code_verification.error', 'device_resume.error',
  'pushed_authorization_request.error', 'backchannel_authentication.error',
];

/**
 * Token models whose `saved` (opaque format) or `issued` (JWT format) events mean a token was minted, and the token
 * type each counts as. Client credentials tokens are access tokens of their own model.
 */
const TOKEN_EVENTS: Array<[string, PendingToken['token_type']]> = [
  ['access_token', 'access_token'],
  ['client_credentials', 'access_token'],
  ['refresh_token', 'refresh_token'],
];

/**
 * Listens to one provider's events: tokens it mints are noted on the current request (counted by requestMetrics
 * once the response is a success), and the OAuth error of a refused request is noted for requests whose error is
 * not in a JSON body (rendered pages, redirects).
 */
/**
 * The tier label of a client instance, read once per instance: `metadata()` rebuilds the whole snake_case metadata
 * object (≈ 20 µs), and oidc-provider builds a new instance whenever a client's metadata changes.
 */
const tierLabels = new WeakMap<object, unknown>();
function tierLabel(client: { metadata(): Record<string, unknown> }): unknown {
  if (!tierLabels.has(client)) tierLabels.set(client, client.metadata()[TIER_FIELD]);
  return tierLabels.get(client);
}

export function observeProviderEvents(provider: Provider): void {
  const emitter = provider as unknown as Emitter;
  const current = () => Provider.ctx as unknown as RequestView | undefined;

  for (const name of ERROR_EVENTS) {
    emitter.on(name, (ctx: RequestView | undefined, err: { expose?: boolean; message?: string; error?: string }) => {
      if (!ctx?.state) return;
      ctx.state[PROVIDER_REFUSAL] = name === 'server_error' || !err?.expose ? 'server_error' : (err.error ?? err.message);
    });
  }

  for (const [model, tokenType] of TOKEN_EVENTS) {
    const noteToken = (token: TokenView) => {
      const ctx = current();
      if (!ctx?.state) return;
      const oidc = ctx.oidc;
      const tier = oidc?.client && tierLabel(oidc.client);
      const grantType = oidc?.route === 'token' ? oidc.params?.grant_type : oidc?.route;
      const pending = (ctx.state[PENDING_TOKENS] ??= []) as PendingToken[];
      pending.push({
        grant_type: typeof grantType === 'string' && grantType !== '' ? grantType : 'unknown',
        tier: typeof tier === 'string' && tier !== '' ? tier : 'none',
        binding: typeof token.jkt === 'string' && token.jkt !== '' ? 'dpop' : 'bearer',
        token_type: tokenType,
      });
    };
    emitter.on(`${model}.saved`, noteToken);
    emitter.on(`${model}.issued`, noteToken);
  }
}
