import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
import {
  applyRefreshTokenBindings,
  buildTokenResponse,
  checkDpopRequired,
  checkDpopReplay,
  resolveRequestedResources,
  validateClientScope,
  validateDpop,
} from 'oidc-provider/lib/helpers/grants.js';

import { failClosedInProvider } from '../../adapters/oidc-adapter.js';
import type { RevokedTokenStore } from '../../adapters/types.js';
import { bodyReceivedAt } from '../http/body-received.js';
import { revokedWhileServed } from '../subject-revocation.js';
import { auditLater } from '../audit/trail.js';
import { shouldIssueRefreshToken } from '../policies/refresh.js';
import { SiweVerificationError } from '../../interactions/siwe/errors.js';
import { signatureFormProblem } from '../../interactions/siwe/verify.js';
import type { WalletSignIn } from '../../interactions/wallet-signin.js';

import { WALLET_GRANT_TYPE } from '../config.js';
import { newGrant } from './new-grant.js';
import { withoutUserinfo } from '../logger.js';

export { WALLET_GRANT_TYPE };

export interface WalletGrantLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

interface TokenModel {
  save(): Promise<string>;
  setThumbprint(kind: 'jkt', value: string): void;
  resourceServer?: unknown;
  scope?: string;
  expiration: number;
  tokenType: string;
}

/**
 * An agent that holds a wallet key signs an EIP-4361 message (nonce from POST /wallet/nonce with its client_id) and
 * trades it, with its signature, for tokens: the same verification as the login page, client authentication per the
 * client's method, DPoP binding, the client's tier, and a refresh token under the same rules as the other grants.
 * The signature is the account holder's consent: the nonce must have been issued for this client, the message's
 * `resources` must list the requested resource, and every scope granted must be signed there as
 * `urn:agentauth:scope:<scope>` (RFC 6749 §5.2 invalid_scope otherwise: there is no consent page to widen it).
 */
export function registerWalletGrant(
  provider: Provider,
  wallet: WalletSignIn,
  log: WalletGrantLog,
  health?: { markDown(err: unknown): void },
  revocations?: Pick<RevokedTokenStore, 'anyRevoked'>,
): void {
  async function handler(ctx: KoaContextWithOIDC): Promise<void> {
    const client = ctx.oidc.client!;
    const params = ctx.oidc.params as Record<string, unknown>;
    const dPoP = await validateDpop(provider, ctx);
    checkDpopRequired(provider, ctx, dPoP);

    const message = params.message;
    const signature = params.signature;
    if (typeof message !== 'string' || !message) throw new errors.InvalidRequest('missing required parameter "message" (an EIP-4361 message)');
    if (typeof signature !== 'string' || !signature) throw new errors.InvalidRequest('missing required parameter "signature" (0x-prefixed hex)');
    // RFC 6749 §5.2: a parameter that cannot be what it names is a malformed request (invalid_request), refused before
    // the sign-in is tried (no nonce or attempt used, nothing logged as a failed sign-in); invalid_grant is for a
    // well-formed signature that does not verify.
    const malformed = signatureFormProblem(signature);
    if (malformed !== undefined) throw new errors.InvalidRequest(malformed);

    const resourceServers = await resolveRequestedResources(provider, ctx);
    if (resourceServers.length !== 1) throw new errors.InvalidTarget('exactly one resource must be requested with this grant');
    const resourceServer = resourceServers[0]!;
    const resource = resourceServer.identifier();
    const requested = [...validateClientScope(provider, ctx)];
    const allowed = new Set(resourceServer.scope.split(' '));
    const scope = requested.filter((s) => allowed.has(s)).join(' ') || undefined;
    // A person's token for a resource server carries one of its scopes, as the code flow's (authorization-scope.ts): a
    // scopeless one is accepted by a resource server that checks only the audience. Refused before the message is
    // checked, so the nonce stays usable.
    if (scope === undefined) {
      throw new errors.InvalidScope(`request at least one scope of ${resource.slice(0, 200)} (${resourceServer.scope}) that the message signs: a token for it carries at least one`, undefined as unknown as string);
    }

    // A replayed proof is refused before anything changes: the nonce is not used up, no grant is stored and no
    // sign-in is logged or audited (oidc-provider's refresh grant checks it before consuming the token, too).
    if (dPoP) await checkDpopReplay(provider, ctx, dPoP, client.clientId);

    let sub: string;
    try {
      const purpose = { binding: { client: client.clientId }, requiredResources: [resource], requiredScopes: scope ? scope.split(' ') : [] };
      const verified = await failClosedInProvider(() => wallet.verify(message, signature, purpose), health);
      sub = verified.sub;
      log.info({ event: 'login.succeeded', sub, method: verified.method, client_id: client.clientId, via: 'grant' }, 'wallet sign-in succeeded');
      auditLater(ctx as never, { type: 'login.succeeded', sub, client_id: client.clientId, details: { address: verified.address, chain_id: verified.chainId, method: verified.method, via: 'grant' } });
    } catch (err) {
      if (!(err instanceof SiweVerificationError)) throw err;
      // The reason may quote the message's URI: a password in its userinfo is neither logged nor audited.
      const reason = withoutUserinfo(err.message);
      log.warn({ event: 'login.failed', rule: err.rule, address: err.address, client_id: client.clientId, reason }, 'wallet sign-in refused');
      auditLater(ctx as never, { type: 'login.failed', client_id: client.clientId, details: { address: err.address, rule: err.rule, reason, via: 'grant' } });
      if (err.rule === 'scope') throw new errors.InvalidScope(`scope: ${err.message}`, scope ?? '');
      // A message that is not an EIP-4361 message is a malformed parameter (RFC 6749 §5.2), not a grant that failed.
      if (err.rule === 'message-format') throw new errors.InvalidRequest(`${err.rule}: ${err.message}`);
      throw new errors.InvalidGrant(`${err.rule}: ${err.message}`);
    }

    // Each signed message is a fresh consent: a grant of exactly the requested resource and scopes.
    const grant = newGrant(provider, { accountId: sub, client });
    if (scope) grant.addResourceScope(resource, scope);
    const grantId = await grant.save();
    // The operator revoked this person (`agentauth subjects revoke`) while this request was served, perhaps after its
    // last look at the person's grants: the grant goes, and no token is issued from it.
    if (revocations && (await failClosedInProvider(() => revokedWhileServed(revocations, sub, bodyReceivedAt(ctx.req)), health))) {
      await grant.destroy();
      throw new errors.InvalidGrant('the account\'s grants were revoked by the operator while this request was served: sign a new message');
    }

    const AccessToken = provider.AccessToken as unknown as new (init: Record<string, unknown>) => TokenModel;
    const at = new AccessToken({ accountId: sub, client, grantId, gty: WALLET_GRANT_TYPE, scope });
    at.resourceServer = resourceServer;
    at.scope = scope;
    if (dPoP) at.setThumbprint('jkt', dPoP.thumbprint);
    ctx.oidc.entity('AccessToken', at as never);
    const accessToken = await at.save();

    let refreshToken: string | undefined;
    if (shouldIssueRefreshToken(client, Boolean(dPoP))) {
      const RefreshToken = provider.RefreshToken as unknown as new (init: Record<string, unknown>) => TokenModel;
      const rt = new RefreshToken({ accountId: sub, client, grantId, gty: WALLET_GRANT_TYPE, scope, resource, rotations: 0 });
      applyRefreshTokenBindings(provider, ctx, at, rt);
      ctx.oidc.entity('RefreshToken', rt as never);
      refreshToken = await rt.save();
    }

    ctx.body = buildTokenResponse(provider, { accessToken, expiresIn: at.expiration, refreshToken, scope, tokenType: at.tokenType });
  }

  provider.registerGrantType(WALLET_GRANT_TYPE, handler as never, ['message', 'signature', 'resource', 'scope']);
}
