import type { KoaContextWithOIDC, Provider } from 'oidc-provider';

import { failClosedInProvider } from '../../adapters/oidc-adapter.js';
import { insertTokenStep, namedTokenStep } from '../http/token-action.js';
import { describeRefusal, limitError } from './refusal.js';
import type { SharedWindowLimit } from './window.js';

/**
 * Token requests per client, as a step of oidc-provider's token action inserted right after client authentication:
 * only a request that authenticated as the client counts against it (nobody can use up another client's allowance
 * by naming it), every route spelling and grant type meets it, and it is counted in the store (server/limits/window.ts).
 * A public client (`none`) has no credential: naming it is all its authentication, and its client_id is public (it is
 * in every authorization URL), so its requests are counted per client and client address. Anyone can still use up
 * what their own address gets, not what the client's other users get. A refusal is 429 `slow_down` with Retry-After.
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
  const client = ctx.oidc.client;
  if (deps?.limit.enabled && client !== undefined) {
    const publicClient = client.clientAuthMethod === 'none';
    const subject = publicClient ? `${client.clientId} ${deps.limit.address(ctx.ip)}` : client.clientId;
    const decision = await failClosedInProvider(() => deps.limit.hit(subject), deps.health);
    if (!decision.allowed) {
      const what = publicClient ? `token requests of public client ${client.clientId} from this address` : `token requests of client ${client.clientId}`;
      throw limitError(ctx, 'slow_down', describeRefusal(deps.limit, what, decision), decision.retryAfter);
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
