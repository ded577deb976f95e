import type { KoaContextWithOIDC } from 'oidc-provider';
import resolveResource from 'oidc-provider/lib/helpers/resolve_resource.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

import { insertTokenStep, namedTokenStep } from '../http/token-action.js';

/**
 * An authorization code exchanged for a resource it cannot give is refused before the code is used up.
 * oidc-provider's authorization_code grant consumes the code first and resolves the resource afterwards (issueTokens,
 * resolveAndApplyResource), so such a request answered `invalid_target` and left the code consumed: the client's
 * corrected retry then got `invalid_grant` "authorization code already consumed" and revoked the grant, a refused
 * request having changed state.
 *
 * This step, inserted into oidc-provider's token action just before the grant handler (every route spelling goes
 * through it), reads the code without consuming it and runs the very resolution the handler runs later:
 * oidc-provider's resolve_resource with its configured resourceIndicators (a repeated `resource`, one the code was not
 * issued for, none where the code has several), then getResourceServerInfo for the resource resolved. Both only read,
 * so a request they accept is resolved again, identically, by the handler. A code this step cannot judge (unknown,
 * another client's, expired, already consumed) is left to the handler, which refuses it with its own error (and, for
 * a consumed one, revokes the grant as it should).
 */
type Next = () => Promise<void>;

const PATCHED = Symbol.for('agentauth.code-resource-step');
const ANCHOR = 'callTokenHandler';

interface CodeLike {
  clientId?: string;
  consumed?: unknown;
  isExpired?: boolean;
}

const codeResourceStep = namedTokenStep('agentauthCodeResourceBeforeConsume', async (ctx: KoaContextWithOIDC, next: Next) => {
  const params = ctx.oidc.params as Record<string, unknown>;
  const value = params.code;
  if (params.grant_type === 'authorization_code' && typeof value === 'string' && value !== '') {
    const { provider } = ctx.oidc;
    const code = (await provider.AuthorizationCode.find(value, { ignoreExpiration: true })) as unknown as CodeLike | undefined;
    if (code && !code.consumed && !code.isExpired && code.clientId === ctx.oidc.client?.clientId) {
      const { userinfo, resourceIndicators } = instance(provider).configuration.features;
      const resource = await resolveResource(ctx, code, { userinfo, resourceIndicators });
      if (resource) await resourceIndicators.getResourceServerInfo(ctx, resource, ctx.oidc.client);
    }
  }
  await next();
});

/** Patches oidc-provider's token action once per process (idempotent). Call before `new Provider(...)`. */
export function prepareCodeResourceStep(): void {
  insertTokenStep(codeResourceStep, ANCHOR, PATCHED, "agentauth's authorization code resource check");
}
