import type Koa from 'koa';
import { errors } from 'oidc-provider';

import type { LimitDecision, SharedWindowLimit } from './window.js';

/**
 * The OAuth error a refused request gets, per endpoint (docs/operations.md, "Shared limits"):
 * - `temporarily_unavailable` at registration (RFC 6749 §4.1.2.1's code for "try again later"; RFC 7591 has none);
 * - `slow_down` at the token endpoint and the wallet nonce and sign-in endpoints (the code RFC 8628 §3.5 registers
 *   for the token endpoint: the client is asking too often and must wait).
 */
export type LimitErrorCode = 'temporarily_unavailable' | 'slow_down';

export function describeRefusal(limit: SharedWindowLimit, what: string, decision: LimitDecision): string {
  const { max, windowSeconds } = limit.setting;
  return `${what}: limit of ${max} per ${windowSeconds} s reached (counted across every agentauth instance); retry after ${decision.retryAfter} s`;
}

/** For oidc-provider steps: an error its handler renders as 429 `{ error, error_description }`, with Retry-After set. */
export function limitError(ctx: Koa.Context, code: LimitErrorCode, description: string, retryAfter: number): Error {
  ctx.set('Retry-After', String(retryAfter));
  const err = new errors.CustomOIDCProviderError(code, description);
  return Object.assign(err, { status: 429, statusCode: 429 });
}

/** For agentauth's own routes: answers 429 with Retry-After and an RFC 6749 §5.2-shaped JSON body. */
export function refuse(ctx: Koa.Context, code: LimitErrorCode, description: string, retryAfter: number): void {
  ctx.status = 429;
  ctx.set('Retry-After', String(retryAfter));
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error: code, error_description: description };
}
