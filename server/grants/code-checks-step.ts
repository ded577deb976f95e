import type { KoaContextWithOIDC } from 'oidc-provider';
import { errors } from 'oidc-provider';
import { validateDpop } from 'oidc-provider/lib/helpers/grants.js';
import resolveResource from 'oidc-provider/lib/helpers/resolve_resource.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

import { replayedProof, replayId } from '../dpop-replay.js';
import { insertTokenStep, namedTokenStep } from '../http/token-action.js';

/**
 * An authorization code is refused before it is used up, for what oidc-provider only finds after using it up.
 * Its authorization_code grant consumes the code, then (issueTokens) checks the DPoP proof against the code's
 * `dpop_jkt`, records the proof's jti, and resolves the resource. A request refused there had spent the code: the
 * client's corrected retry got `invalid_grant` "authorization code already consumed" and revoked the grant (and every
 * token of it), a refused request having changed state. Found for a wrong `resource`, a replayed proof, and a code
 * bound with `dpop_jkt` sent without a proof.
 *
 * This step, inserted into oidc-provider's token action just before the grant handler (every route spelling goes
 * through it), reads the code without consuming it and makes those checks first, in issueTokens' order and with its
 * errors: a proof missing for a `dpop_jkt` code; a proof whose jti is already recorded (looked up, not recorded: the
 * handler records it as before); a proof of another key than `dpop_jkt`; then oidc-provider's own resolve_resource
 * with its configured resourceIndicators and getResourceServerInfo. All of it only reads (validateDpop's result is
 * kept per request and reused by the handler). A code this step cannot judge (unknown, another client's, expired,
 * already consumed) is left to the handler, which refuses it with its own error (and, for a consumed one, revokes
 * the grant as it should). Two requests racing with one proof can both pass the lookup; the handler's atomic record
 * then refuses one of them, after its code is consumed, as before.
 */
type Next = () => Promise<void>;

const PATCHED = Symbol.for('agentauth.code-checks-step');
const ANCHOR = 'callTokenHandler';

interface CodeLike {
  clientId?: string;
  consumed?: unknown;
  isExpired?: boolean;
  dpopJkt?: string;
}

const codeChecksStep = namedTokenStep('agentauthCodeChecksBeforeConsume', async (ctx: KoaContextWithOIDC, next: Next) => {
  const params = ctx.oidc.params as Record<string, unknown>;
  const value = params.code;
  const client = ctx.oidc.client;
  if (params.grant_type === 'authorization_code' && typeof value === 'string' && value !== '' && client) {
    const { provider } = ctx.oidc;
    const code = (await provider.AuthorizationCode.find(value, { ignoreExpiration: true })) as unknown as CodeLike | undefined;
    if (code && !code.consumed && !code.isExpired && code.clientId === client.clientId) {
      const dPoP = await validateDpop(provider, ctx);
      if (code.dpopJkt && !dPoP) throw new errors.InvalidGrant('missing DPoP proof JWT');
      if (dPoP) {
        if (await provider.ReplayDetection.find(replayId(client.clientId, dPoP.jti))) throw replayedProof();
        if (code.dpopJkt && code.dpopJkt !== dPoP.thumbprint) throw new errors.InvalidGrant('DPoP proof key thumbprint does not match dpop_jkt');
      }
      const { userinfo, resourceIndicators } = instance(provider).configuration.features;
      const resource = await resolveResource(ctx, code, { userinfo, resourceIndicators });
      if (resource) await resourceIndicators.getResourceServerInfo(ctx, resource, client);
    }
  }
  await next();
});

/** Patches oidc-provider's token action once per process (idempotent). Call before `new Provider(...)`. */
export function prepareCodeChecksStep(): void {
  insertTokenStep(codeChecksStep, ANCHOR, PATCHED, "agentauth's authorization code checks");
}
