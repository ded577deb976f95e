import { Provider } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import validateDpop from 'oidc-provider/lib/helpers/validate_dpop.js';

/**
 * RFC 9449 §5: "When an authorization server supporting DPoP issues a refresh token to a public client that presents
 * a valid DPoP proof at the token endpoint, the refresh token MUST be bound to the respective public key."
 * oidc-provider binds a public client's refresh token when it is first issued, but its refresh grant builds the
 * rotated token with the old token's binding (lib/actions/grants/refresh_token.js: `jkt: refreshToken.jkt`): a bearer
 * refresh token stayed bearer after a refresh that carried a proof. This binds the rotated token, as it is saved, to
 * the proof oidc-provider verified on the request (validateDpop answers from its per-request cache). A token already
 * bound keeps its key: the grant refuses a proof of another key before it rotates anything.
 */
export function bindRotatedRefreshTokens(provider: Provider): void {
  type RefreshTokenInstance = { jkt?: string; save(...args: unknown[]): Promise<string> };
  const prototype = (provider.RefreshToken as unknown as { prototype: RefreshTokenInstance }).prototype;
  const save = prototype.save;
  prototype.save = async function saveBoundToTheProof(this: RefreshTokenInstance, ...args: unknown[]): Promise<string> {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    if (this.jkt === undefined && ctx?.oidc?.route === 'token' && ctx.oidc.params?.grant_type === 'refresh_token' && ctx.oidc.client?.clientAuthMethod === 'none') {
      const proof = await validateDpop(provider, ctx);
      if (proof) this.jkt = proof.thumbprint;
    }
    return save.apply(this, args);
  };
}
