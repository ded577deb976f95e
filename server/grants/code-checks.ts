import { errors, Provider } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { validateDpop } from 'oidc-provider/lib/helpers/grants.js';
import resolveResource from 'oidc-provider/lib/helpers/resolve_resource.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

import { replayedProof, replayId } from '../dpop-replay.js';
import { checkCodeTarget } from '../policies/refresh-request.js';

/**
 * An authorization code is refused before it is used up, for what oidc-provider only finds after using it up.
 * Its authorization_code grant consumes the code, then (issueTokens) checks the DPoP proof against the code's
 * `dpop_jkt`, records the proof's jti, and resolves the resource. A request refused there had spent the code: the
 * client's corrected retry got `invalid_grant` "authorization code already consumed" and revoked the grant (and every
 * token of it), a refused request having changed state. Found for a wrong `resource`, a replayed proof, and a code
 * bound with `dpop_jkt` sent without a proof or with another key.
 *
 * The checks run inside the code's `consume()`, just before the write: after every check the grant makes before
 * consuming (PKCE, redirect_uri, DPoP required, ...) in its own order, and before the code is spent, in issueTokens'
 * order and with its errors: a proof missing for a `dpop_jkt` code; a proof whose jti is already recorded (looked up,
 * not recorded: issueTokens records it atomically as before); a proof of another key than `dpop_jkt`; then
 * oidc-provider's own resolve_resource with its configured resourceIndicators and getResourceServerInfo. All of it
 * only reads (validateDpop's result is kept per request and reused). A request refused for several faults therefore
 * gets the error oidc-provider gives it. Two requests racing with one code still get exactly one success: the
 * consume itself is atomic, and the other is refused as a reuse.
 */
interface CodeLike {
  clientId?: string;
  dpopJkt?: string;
  /** Holds undefined for a code of no resource (an authorization for openid alone). */
  resourceIndicators?: Set<string | undefined>;
  consume(): Promise<unknown>;
}

async function checkBeforeConsume(ctx: KoaContextWithOIDC, code: CodeLike): Promise<void> {
  const { provider, client } = ctx.oidc;
  if (!client) return;
  const dPoP = await validateDpop(provider, ctx);
  if (code.dpopJkt && !dPoP) throw new errors.InvalidGrant('missing DPoP proof JWT');
  if (dPoP) {
    if (await provider.ReplayDetection.find(replayId(client.clientId, dPoP.jti))) throw replayedProof();
    if (code.dpopJkt && code.dpopJkt !== dPoP.thumbprint) throw new errors.InvalidGrant('DPoP proof key thumbprint does not match dpop_jkt');
  }
  // The resources the code may be exchanged for: the set resolve_resource checks a requested one against.
  checkCodeTarget({ requested: (ctx.oidc.params as Record<string, unknown> | undefined)?.resource as string | string[] | undefined, granted: [...(code.resourceIndicators ?? [])].filter((r): r is string => typeof r === 'string') });
  const { userinfo, resourceIndicators } = instance(provider).configuration.features;
  const resource = await resolveResource(ctx, code, { userinfo, resourceIndicators });
  if (resource) await resourceIndicators.getResourceServerInfo(ctx, resource, client);
}

/** Makes `provider`'s authorization codes run the checks above when the token endpoint consumes one. */
export function installCodeChecks(provider: Provider): void {
  const proto = provider.AuthorizationCode.prototype as unknown as CodeLike;
  const consume = proto.consume;
  proto.consume = async function consumeAfterChecks(this: CodeLike) {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    if (ctx?.oidc?.route === 'token' && (ctx.oidc.params as Record<string, unknown> | undefined)?.grant_type === 'authorization_code') {
      await checkBeforeConsume(ctx, this);
    }
    return consume.call(this);
  };
}
