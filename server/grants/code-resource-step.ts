import type { KoaContextWithOIDC } from 'oidc-provider';
import { errors } from 'oidc-provider';
import tokenSteps from 'oidc-provider/lib/actions/token.js';

/**
 * An authorization code exchanged with a `resource` the code was not issued for is refused before the code is used
 * up. oidc-provider's authorization_code grant consumes the code first and resolves the resource afterwards (in
 * issueTokens), so such a request answered `invalid_target` and left the code consumed: the client's corrected
 * retry then got `invalid_grant` "authorization code already consumed" and revoked the grant, a refused request
 * having changed state. This step, inserted into oidc-provider's token action just before the grant handler (every
 * route spelling goes through it), reads the code without consuming it and applies oidc-provider's own rule
 * (resolve_resource.js: a requested resource must be one of the code's resource indicators) with its own error.
 * Anything else about the code (unknown, another client's, expired, consumed) is left to the handler, which refuses it
 * without consuming anything.
 */
type Next = () => Promise<void>;
type Step = ((ctx: KoaContextWithOIDC, next: Next) => Promise<unknown>) & { name: string };

const PATCHED = Symbol.for('agentauth.code-resource-step');
const ANCHOR = 'callTokenHandler';

interface CodeLike {
  clientId?: string;
  resourceIndicators: Set<string | undefined>;
}

const codeResourceStep = Object.defineProperty(
  async (ctx: KoaContextWithOIDC, next: Next) => {
    const params = ctx.oidc.params as Record<string, unknown>;
    const { resource, code: value } = params;
    if (params.grant_type === 'authorization_code' && typeof resource === 'string' && typeof value === 'string' && value !== '') {
      const code = (await ctx.oidc.provider.AuthorizationCode.find(value, { ignoreExpiration: true })) as unknown as CodeLike | undefined;
      if (code && code.clientId === ctx.oidc.client?.clientId && !code.resourceIndicators.has(resource)) throw new errors.InvalidTarget();
    }
    await next();
  },
  'name',
  { value: 'agentauthCodeResourceBeforeConsume' },
) as Step;

/** Patches oidc-provider's token action once per process (idempotent). Call before `new Provider(...)`. */
export function prepareCodeResourceStep(): void {
  const list = tokenSteps as Step[];
  const marker = list as unknown as Record<symbol, boolean>;
  if (marker[PATCHED]) return;
  const i = list.findIndex((h) => h.name === ANCHOR);
  if (i < 0) throw new Error(`oidc-provider's token action no longer has a "${ANCHOR}" step; agentauth's authorization code resource check must be updated for this oidc-provider version`);
  list.splice(i, 0, codeResourceStep);
  marker[PATCHED] = true;
}
