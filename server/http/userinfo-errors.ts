import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import userinfoSteps from 'oidc-provider/lib/actions/userinfo.js';

import { signedJwtAccessToken } from '../structured-tokens.js';

/**
 * oidc-provider's userinfo endpoint (`/me`) answers `401 invalid_token` "invalid token provided" for three different
 * causes, keeping which one only in its log (error_detail):
 *   1. the token is not one it knows: unknown or expired (or revoked, its grant, client or account gone, where that is
 *      found before its DPoP binding is checked). It stays "invalid token provided": a caller holding no valid token
 *      learns nothing more. oidc-provider checks a bound token's DPoP binding before its grant, client and account, so
 *      a revoked bound token sent without its proof is told about the proof (cause 3), as the challenge's scheme
 *      already tells.
 *   2. the token is for a resource server, not for userinfo: a JWT access token (always a resource server's:
 *      oidc-provider does not look them up, "access token not found"), or an opaque token with an audience ("token
 *      audience prevents accessing the userinfo endpoint"; today an opaque resource server's token carries only that
 *      server's scopes, so it is answered first as 403 insufficient_scope, "access token missing openid scope"). Said
 *      so, with what /me takes. A JWT is said to be one only when it verifies against agentauth's published keys and
 *      has not expired, which the JWKS tells anyone (whether it was revoked is not looked at); the audience check
 *      comes after the token's binding is checked.
 *   3. the token and the request disagree about DPoP (RFC 9449 §7.1): a DPoP-bound token without a proof of its key
 *      ("failed jkt verification"), or a proof with a token that is not bound. Said which, and what to send. oidc-provider's
 *      challenge already names DPoP as the scheme for a bound token.
 * A step inside oidc-provider's setWWWAuthenticateHeader step gives the error its description before that step writes
 * the challenge and the error handler the body, so both say the same.
 */

type Step = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };

const ANCHOR = 'setWWWAuthenticateHeader';
const STEP = 'describeUserinfoRefusals';

export const FOR_A_RESOURCE_SERVER =
  'the access token is for a resource server, not for the userinfo endpoint: /me takes an access token requested with OpenID scopes only (scope=openid) and no resource, from an authorization code or refresh token request';
export const BOUND_WITHOUT_PROOF = 'the access token is DPoP-bound: send it as Authorization: DPoP <token> with a DPoP proof made with its key (RFC 9449 section 7.1)';
export const BOUND_TO_ANOTHER_KEY = 'the access token is bound to another DPoP key: send a DPoP proof made with the key it was issued to (RFC 9449 section 7.1)';
export const NOT_BOUND = 'the access token is not DPoP-bound: send it as Authorization: Bearer <token>, without a DPoP header';

/** The description for a userinfo refusal with oidc-provider's `detail`; undefined to keep the generic one. */
async function describe(ctx: KoaContextWithOIDC, detail: unknown): Promise<string | undefined> {
  switch (detail) {
    case 'token audience prevents accessing the userinfo endpoint':
      return FOR_A_RESOURCE_SERVER;
    case 'failed jkt verification':
      return ctx.get('DPoP') ? BOUND_TO_ANOTHER_KEY : BOUND_WITHOUT_PROOF;
    case 'access token is not sender-constrained but proof of possession was provided':
      return NOT_BOUND;
    case 'access token not found':
      // Read already (the token was looked up), so this does not throw.
      return (await signedJwtAccessToken(ctx.oidc.provider, ctx.oidc.getAccessToken({ acceptDPoP: true }))) ? FOR_A_RESOURCE_SERVER : undefined;
    default:
      return undefined;
  }
}

const describeRefusals = Object.defineProperty(
  async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
    try {
      await next();
    } catch (err) {
      if (err instanceof errors.InvalidToken) {
        const description = await describe(ctx, (err as { error_detail?: unknown }).error_detail);
        if (description !== undefined) err.error_description = description;
      }
      throw err;
    }
  },
  'name',
  { value: STEP },
) as Step;

/**
 * Puts the step right after oidc-provider's setWWWAuthenticateHeader step in the userinfo action, once per process.
 * Throws when an upgrade of oidc-provider removed it. Call before `new Provider(...)`.
 */
export function prepareUserinfoErrors(): void {
  const list = userinfoSteps as Step[];
  if (list.some((s) => s.name === STEP)) return;
  const i = list.findIndex((s) => s.name === ANCHOR);
  if (i < 0) throw new Error(`oidc-provider's userinfo action no longer has a "${ANCHOR}" step; server/http/userinfo-errors.ts must be updated for this oidc-provider version`);
  list.splice(i + 1, 0, describeRefusals);
}
