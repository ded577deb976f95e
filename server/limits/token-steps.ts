import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
import tokenSteps from 'oidc-provider/lib/actions/token.js';

import { failClosedInProvider } from '../../adapters/oidc-adapter.js';
import { describeRefusal, limitError } from './refusal.js';
import type { SharedWindowLimit } from './window.js';

/**
 * Token requests per client, as a step of oidc-provider's token action inserted right after client authentication:
 * only a request that authenticated as the client counts against it (nobody can use up another client's allowance
 * by naming it), every route spelling and grant type meets it, and it is counted in the store (server/limits/window.ts).
 * A refusal is 429 `slow_down` with Retry-After.
 */
type Next = () => Promise<void>;
type Step = ((ctx: KoaContextWithOIDC, next: Next) => Promise<unknown>) & { name: string };

interface TokenLimitDeps {
  limit: SharedWindowLimit;
  health: { markDown(err: unknown): void };
}

const perProvider = new WeakMap<Provider, TokenLimitDeps>();
const PATCHED = Symbol.for('agentauth.token-limit-step');
const ANCHOR = 'stripGrantIrrelevantParams';

const tokenLimitStep = Object.defineProperty(
  async (ctx: KoaContextWithOIDC, next: Next) => {
    const deps = perProvider.get(ctx.oidc.provider);
    const clientId = ctx.oidc.client?.clientId;
    if (deps?.limit.enabled && clientId !== undefined) {
      const decision = await failClosedInProvider(() => deps.limit.hit(clientId), deps.health);
      if (!decision.allowed) {
        throw limitError(ctx, 'slow_down', describeRefusal(deps.limit, `token requests of client ${clientId}`, decision), decision.retryAfter);
      }
    }
    await next();
  },
  'name',
  { value: 'agentauthTokenRequestLimit' },
) as Step;

/** Patches oidc-provider's token action once per process (idempotent). Call before `new Provider(...)`. */
export function prepareTokenLimitStep(): void {
  const list = tokenSteps as Step[];
  const marker = list as unknown as Record<symbol, boolean>;
  if (marker[PATCHED]) return;
  const i = list.findIndex((h) => h.name === ANCHOR);
  if (i < 0) throw new Error(`oidc-provider's token action no longer has a "${ANCHOR}" step; agentauth's token request limit must be updated for this oidc-provider version`);
  list.splice(i, 0, tokenLimitStep);
  marker[PATCHED] = true;
}

export function registerTokenLimit(provider: Provider, deps: TokenLimitDeps): void {
  perProvider.set(provider, deps);
}
