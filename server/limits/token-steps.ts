import type { KoaContextWithOIDC, Provider } from 'oidc-provider';

import { failClosedInProvider } from '../../adapters/oidc-adapter.js';
import { insertTokenStep, namedTokenStep } from '../http/token-action.js';
import { describeRefusal, limitError } from './refusal.js';
import type { SharedWindowLimit } from './window.js';

/**
 * Token requests per client, as a step of oidc-provider's token action inserted right after client authentication:
 * only a request that authenticated as the client counts against it (nobody can use up another client's allowance
 * by naming it), every route spelling and grant type meets it, and it is counted in the store (server/limits/window.ts).
 * A refusal is 429 `slow_down` with Retry-After.
 */
type Next = () => Promise<void>;

interface TokenLimitDeps {
  limit: SharedWindowLimit;
  health: { markDown(err: unknown): void };
}

const perProvider = new WeakMap<Provider, TokenLimitDeps>();
const PATCHED = Symbol.for('agentauth.token-limit-step');
const ANCHOR = 'stripGrantIrrelevantParams';

const tokenLimitStep = namedTokenStep('agentauthTokenRequestLimit', async (ctx: KoaContextWithOIDC, next: Next) => {
  const deps = perProvider.get(ctx.oidc.provider);
  const clientId = ctx.oidc.client?.clientId;
  if (deps?.limit.enabled && clientId !== undefined) {
    const decision = await failClosedInProvider(() => deps.limit.hit(clientId), deps.health);
    if (!decision.allowed) {
      throw limitError(ctx, 'slow_down', describeRefusal(deps.limit, `token requests of client ${clientId}`, decision), decision.retryAfter);
    }
  }
  await next();
});

/** Patches oidc-provider's token action once per process (idempotent). Call before `new Provider(...)`. */
export function prepareTokenLimitStep(): void {
  insertTokenStep(tokenLimitStep, ANCHOR, PATCHED, "agentauth's token request limit");
}

export function registerTokenLimit(provider: Provider, deps: TokenLimitDeps): void {
  perProvider.set(provider, deps);
}
