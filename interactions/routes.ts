import type Koa from 'koa';
import { errors } from 'oidc-provider';
import type { InteractionResults, Provider } from 'oidc-provider';

import { auditLater } from '../server/audit/trail.js';
import { WALLET_GRANT_TYPE } from '../server/config.js';
import { SECURITY_HEADERS } from '../server/http/security-headers.js';
import { parseJsonBody, readBodyText } from '../server/request-body.js';
import { refuseReplacedText } from '../server/http/form-body-utf8.js';
import { checkedOrUndone } from '../adapters/oidc-adapter.js';
import { requestArrivedAt } from '../server/http/body-received.js';
import { asset } from './assets.js';
import { SiweVerificationError } from './siwe/errors.js';
import { signatureFormProblem } from './siwe/verify.js';
import { consentPage, errorPage, loginPage } from './views.js';
import type { AccessRequest } from './views.js';
import { METADATA_DOCUMENT_ORIGIN, redirectsAllLoopback } from '../server/client-metadata/policy.js';
import { REGISTRATION_FIELD, registrationOrigin } from '../server/policies/registration.js';
import { shownClientName } from '../server/policies/display-text.js';
import type { WalletSignIn } from './wallet-signin.js';
import type { ConsentClaim, ConsentDecision } from './consent-claim.js';
import { describeRefusal, refuse } from '../server/limits/refusal.js';
import type { SharedWindowLimit } from '../server/limits/window.js';
import { newGrant } from '../server/grants/new-grant.js';
import { withoutUserinfo } from '../server/logger.js';

export const NONCE_PATH = '/wallet/nonce';
/** The pages' stylesheet and scripts: built in, so served whether or not storage answers. */
export const ASSET_PATH = /^\/interaction-assets\/([a-z0-9.-]+)$/;
const BODY_LIMIT = 64 * 1024;

export interface InteractionLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface InteractionDeps {
  provider: Provider;
  wallet: WalletSignIn;
  issuer: string;
  oidcScopes: readonly string[];
  /** Each resource server's identifier and the scopes it defines (the configuration's resourceServers). */
  resourceScopes: ReadonlyMap<string, readonly string[]>;
  log: InteractionLog;
  /** Per client IP, counted in the store (server/limits/): nonces issued, and login attempts. */
  limits?: { walletNonces: SharedWindowLimit; signInAttempts: SharedWindowLimit };
  /**
   * Claims interaction `uid` for one decision (atomic in the store, on every instance; interactions/consent-claim.ts):
   * only the first Approve or Deny takes effect, and the others learn which one did. Without it every decision is
   * taken as first (the test set-ups that build no store).
   */
  consentClaim?: (uid: string, decision: ConsentDecision) => Promise<ConsentClaim>;
  /**
   * Whether the operator revoked person `sub` (`agentauth subjects revoke`) while a request that arrived at
   * `arrivedAtMs` was served (server/subject-revocation.ts revokedWhileServed). Asked after an approval stored its
   * grant: the revocation's last listing may have missed that grant. Without it no approval is checked (test set-ups).
   */
  subjectRevokedWhileServed?: (sub: string, arrivedAtMs: number) => Promise<boolean>;
}

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;

/** What the application is told of an approval given while the operator revoked the person's access. */
const SUBJECT_REVOKED_DURING_CONSENT = "the account's access was revoked by the operator while this request was approved: the person must sign in again";

const toArray = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : typeof v === 'string' && v ? [v] : []);

async function readBody(ctx: Koa.Context): Promise<Record<string, unknown>> {
  const text = await readBodyText(ctx, BODY_LIMIT);
  if (!ctx.is('application/json')) {
    // RFC 6749 §3.1: a parameter is sent once. Which of two values would count is not for the server to guess.
    const params = new URLSearchParams(text);
    // Bytes that are not UTF-8, raw or percent-encoded, which URLSearchParams reads as U+FFFD (server/http/form-body-utf8.ts).
    refuseReplacedText(params);
    const seen = new Set<string>();
    for (const name of params.keys()) {
      if (seen.has(name)) throw new errors.InvalidRequest(`parameter ${JSON.stringify(name.slice(0, 100))} must not be provided twice`);
      seen.add(name);
    }
    return Object.fromEntries(params);
  }
  const parsed = parseJsonBody(text);
  return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
}

/**
 * Who vouches for the client, for the pages: for a client identified by a metadata document, the host that published
 * it; for one that registered itself, no one; and, for either, whether it redirects only to localhost.
 */
function vouchingFacts(clientId: string, meta: Record<string, unknown>): Pick<AccessRequest, 'documentHost' | 'loopbackOnly' | 'selfRegistered'> {
  const redirects = Array.isArray(meta.redirect_uris) ? (meta.redirect_uris as string[]) : [];
  // Registered without an initial access token (stored records from before the field count as such, as everywhere).
  if (registrationOrigin(meta) === 'anonymous') {
    return { selfRegistered: true, loopbackOnly: redirectsAllLoopback(redirects) };
  }
  if (meta[REGISTRATION_FIELD] !== METADATA_DOCUMENT_ORIGIN) return {};
  return { documentHost: URL.parse(clientId)?.host ?? clientId, loopbackOnly: redirectsAllLoopback(redirects) };
}

const wantsJson = (ctx: Koa.Context) => ctx.accepts('html', 'json') === 'json';

/** Login (EIP-4361 wallet sign-in) and consent for the authorization code flow, plus the nonce endpoint. */
export function interactionRoutes(deps: InteractionDeps): Koa.Middleware {
  const { provider, wallet, issuer, log } = deps;
  const issuerUrl = new URL(issuer);

  async function accessRequest(details: Details): Promise<AccessRequest> {
    const params = details.params as Record<string, unknown>;
    const client = await provider.Client.find(String(params.client_id));
    if (!client) throw new errors.InvalidClient('the client of this request no longer exists');
    const scopes = toArray(typeof params.scope === 'string' ? params.scope.split(' ') : []).filter((s) => !deps.oidcScopes.includes(s));
    const missing = (details.prompt.details as { missingResourceScopes?: Record<string, string[]> }).missingResourceScopes;
    // Each resource server with the requested scopes it defines, and no others: the request's `scope` is the client's
    // own text, and a scope no token for that server can carry (another server's, or one no server defines) would be
    // shown to the person, and written into the message their wallet signs, as if it were granted.
    const resources = missing
      ? Object.entries(missing).map(([resource, s]) => ({ resource, scopes: s }))
      : toArray(params.resource).map((resource) => ({ resource, scopes: scopes.filter((s) => deps.resourceScopes.get(resource)?.includes(s) === true) }));
    const meta = client.metadata();
    return {
      clientName: shownClientName(meta.client_name, client.clientId),
      clientId: client.clientId,
      ...vouchingFacts(client.clientId, meta),
      redirectHost: URL.parse(String(params.redirect_uri))?.host ?? '',
      resources,
      // Every token of the grant is bound only where every token request must prove the key: a client registered with
      // dpop_bound_access_tokens (its tier's dpop "required" sets it), or a public client whose code is bound with
      // dpop_jkt (its refresh token is then bound to that key too). A confidential client's refresh tokens are not
      // bound (RFC 9449 section 5: client authentication constrains them), so its refreshes may ask for bearer tokens.
      dpopBound: meta.dpop_bound_access_tokens === true || (Boolean(params.dpop_jkt) && meta.token_endpoint_auth_method === 'none'),
    };
  }

  async function finish(ctx: Koa.Context, result: InteractionResults): Promise<void> {
    // Merged with what this sign-in request's earlier interaction submitted (oidc-provider's default): the consent
    // keeps the login it follows, so a request that asks for a fresh login (prompt=login, max_age=0) is not sent back
    // to sign in again after consent (with prompt=login consent, it never ended). An error is never merged.
    const redirectTo = await provider.interactionResult(ctx.req, ctx.res, result);
    if (wantsJson(ctx)) {
      ctx.body = { redirect_to: redirectTo };
    } else {
      ctx.status = 303;
      ctx.redirect(redirectTo);
    }
  }

  /**
   * Carries out the decision a consent claim won. If that fails (the grant or the interaction's result could not be
   * saved), the claim is withdrawn before the error goes on to its 503, so the person's next Approve or Deny is taken
   * afresh; left in place, it would send every later one to a resume that finds no decision, until the request expired.
   */
  async function decide(claim: ConsentClaim | undefined, act: () => Promise<void>): Promise<void> {
    try {
      await act();
    } catch (err) {
      if (claim?.won) {
        await claim.release().catch((releaseErr: unknown) => {
          log.warn({ event: 'consent.claim_kept', reason: releaseErr instanceof Error ? releaseErr.message : String(releaseErr) }, 'a consent decision that failed could not be withdrawn');
        });
      }
      throw err;
    }
  }

  function fail(ctx: Koa.Context, status: number, title: string, error: string, description: string): void {
    ctx.status = status;
    if (wantsJson(ctx)) ctx.body = { error, error_description: description };
    else ctx.body = errorPage(title, description);
  }

  /** True when the request is within `limit` for its client IP; otherwise answers 429 slow_down and returns false. */
  async function within(ctx: Koa.Context, limit: SharedWindowLimit | undefined, what: string): Promise<boolean> {
    if (!limit?.enabled) return true;
    const decision = await limit.hit(limit.address(ctx.ip));
    if (decision.allowed) return true;
    refuse(ctx, 'slow_down', describeRefusal(limit, `${what} from this address`, decision), decision.retryAfter);
    return false;
  }

  return async (ctx, next) => {
    if (ctx.path === NONCE_PATH) {
      if (ctx.method !== 'POST') {
        ctx.status = 405;
        ctx.set('Allow', 'POST');
        ctx.body = { error: 'invalid_request', error_description: `use POST ${NONCE_PATH}` };
        return;
      }
      // A nonce for the wallet-signature grant, bound to the client that names itself here: only a token request
      // authenticated as that client can redeem it. (The login page gets its nonces from /interaction/<uid>/nonce.)
      ctx.set('Cache-Control', 'no-store');
      // Only the two body types the guide shows are read: a text/plain or multipart body is not taken for a form (whose
      // client_id would be found, or not, by accident), and is answered with what to send instead. A request with no
      // body at all goes on to the missing client_id below.
      const hasBody = (ctx.request.length ?? 0) > 0 || ctx.get('transfer-encoding') !== '';
      if (hasBody && !ctx.is('application/x-www-form-urlencoded', 'application/json')) {
        ctx.status = 415;
        ctx.body = { error: 'invalid_request', error_description: `send client_id in an application/x-www-form-urlencoded or application/json body (got ${JSON.stringify((ctx.get('content-type') || 'none').slice(0, 100))})` };
        return;
      }
      let body: Record<string, unknown>;
      try {
        body = await readBody(ctx);
      } catch (err) {
        // Malformed JSON, a body over the limit, a body cut short: the 400 or 413 readBody says, as JSON.
        if (!(err instanceof errors.OIDCProviderError) || err.statusCode >= 500) throw err;
        const e = err as InstanceType<typeof errors.OIDCProviderError> & { error_description?: string };
        ctx.status = e.statusCode;
        ctx.body = { error: e.message, error_description: e.error_description ?? e.message };
        return;
      }
      const clientId = body.client_id;
      if (typeof clientId !== 'string' || clientId === '') {
        ctx.status = 400;
        // Sent but not a string (a JSON number, array or object; a JSON body that is not an object): said as such.
        const sent = clientId !== undefined && clientId !== '';
        ctx.body = {
          error: 'invalid_request',
          error_description: sent
            ? `client_id must be a string (got a JSON ${Array.isArray(clientId) ? 'array' : clientId === null ? 'null' : typeof clientId})`
            : `missing required parameter "client_id": a nonce from ${NONCE_PATH} is bound to the client that will redeem it through the wallet-signature grant`,
        };
        return;
      }
      const client = await provider.Client.find(clientId).catch((err: unknown) => {
        if (err instanceof errors.OIDCProviderError && err.statusCode < 500) return undefined;
        throw err;
      });
      if (!client) {
        ctx.status = 400;
        ctx.body = { error: 'invalid_client', error_description: `client_id "${clientId.slice(0, 200)}" is not a registered client` };
        return;
      }
      if (!client.grantTypes?.includes(WALLET_GRANT_TYPE)) {
        ctx.status = 400;
        ctx.body = { error: 'unauthorized_client', error_description: `client ${client.clientId} is not registered for the wallet-signature grant (${WALLET_GRANT_TYPE})` };
        return;
      }
      if (!(await within(ctx, deps.limits?.walletNonces, 'wallet nonces'))) return;
      const { nonce, expiresIn } = await wallet.issueNonce({ client: client.clientId });
      ctx.body = { nonce, expires_in: expiresIn };
      return;
    }

    const assetMatch = ASSET_PATH.exec(ctx.path);
    // HEAD answers as GET does (RFC 9110 §9.3.2), without the body (Koa leaves it out).
    if (assetMatch && (ctx.method === 'GET' || ctx.method === 'HEAD')) {
      const found = asset(assetMatch[1]!);
      if (!found) return next();
      ctx.type = found.type;
      ctx.set('Cache-Control', 'public, max-age=3600');
      ctx.body = found.body;
      return;
    }

    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort|nonce))?$/.exec(ctx.path);
    if (!m) return next();
    const [, uid, action] = m as unknown as [string, string, string | undefined];
    ctx.set('Cache-Control', 'no-store');
    ctx.set(SECURITY_HEADERS);
    // The page is read, its actions are posted (RFC 9110 section 15.5.6: 405 with Allow, as a page or JSON); said
    // before the interaction is looked up, so it does not depend on the cookie.
    const allowed = action ? 'POST' : 'GET, HEAD';
    if (!allowed.split(', ').includes(ctx.method)) {
      ctx.set('Allow', allowed);
      return fail(ctx, 405, 'Method not allowed', 'invalid_request', `${ctx.method} is not accepted at this address: use ${action ? 'POST (the page submits it)' : 'GET'}`);
    }

    let details: Details;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch (err) {
      if (err instanceof errors.OIDCProviderError && err.statusCode < 500) {
        return fail(ctx, 400, 'Sign-in expired', 'invalid_request', 'This sign-in request has expired or was opened in another browser; go back to the application and start again.');
      }
      throw err;
    }
    if (details.uid !== uid) return fail(ctx, 400, 'Sign-in expired', 'invalid_request', 'This page does not belong to the current sign-in request.');
    const prompt = details.prompt.name;

    try {
      if (!action && (ctx.method === 'GET' || ctx.method === 'HEAD')) {
        const request = await accessRequest(details);
        ctx.type = 'html';
        if (prompt === 'login') {
          ctx.body = loginPage({ ...request, uid, domain: issuerUrl.host, uri: issuerUrl.origin, chainIds: [...wallet.rules.chainIds] });
        } else if (prompt === 'consent') {
          ctx.body = consentPage({ ...request, uid, account: String(details.session?.accountId ?? '') });
        } else {
          return fail(ctx, 400, 'Unsupported request', 'invalid_request', `agentauth cannot satisfy the "${prompt}" prompt`);
        }
        return;
      }
      if (!action) return next();
      // The pages post only to themselves. A browser says where a post comes from: Fetch Metadata (Sec-Fetch-Site,
      // which no page's script can set) and Origin, which the pages' Referrer-Policy (same-origin) has browsers fill
      // with this origin on their own submissions ("null" only where a browser's Fetch Metadata vouches for the post).
      // A form on another site, or on another origin of the same site (another port of this host), is refused,
      // whatever the cookies' SameSite lets through. A caller that sends neither is not a browser, whose cookies a
      // page elsewhere could spend, and is let through.
      const site = ctx.get('sec-fetch-site');
      const origin = ctx.get('origin');
      const crossSite = site !== '' && site !== 'same-origin';
      const crossOrigin = origin !== '' && origin !== issuerUrl.origin && !(origin === 'null' && site === 'same-origin');
      if (crossSite || crossOrigin) {
        return fail(ctx, 403, 'Request refused', 'invalid_request', 'this page only accepts submissions from its own pages (the request came from another origin)');
      }

      if (action === 'abort') {
        // One decision per request: a denial claims the request as an approval does, so an approval sent before it
        // stands (its grant is saved, or being saved) and one sent after it stores nothing.
        // A second denial (a double click, the form sent twice) is sent on to the request's resume as a second
        // approval is, where the first decision takes effect.
        const claim = prompt === 'consent' && deps.consentClaim ? await deps.consentClaim(uid, 'deny') : undefined;
        if (claim && !claim.won) {
          if (claim.decision === 'approve') {
            return fail(ctx, 409, 'Already approved', 'invalid_request', 'this request was already approved, and the approval stands; to withdraw access, sign out of the application here');
          }
          if (wantsJson(ctx)) ctx.body = { redirect_to: details.returnTo };
          else {
            ctx.status = 303;
            ctx.redirect(details.returnTo);
          }
          return;
        }
        return await decide(claim, () => finish(ctx, { error: 'access_denied', error_description: 'the user denied the request' }));
      }
      // The person denied this request: nothing else submitted on it (an approval or a sign-in sent before the browser
      // followed the denial) undoes that.
      if (details.result && 'error' in details.result) {
        return fail(ctx, 400, 'Request denied', 'access_denied', 'this request was denied; go back to the application and start again');
      }

      if (action === 'nonce') {
        // A nonce bound to this sign-in request: only a login on this interaction can redeem it.
        if (prompt !== 'login') return fail(ctx, 400, 'Already signed in', 'invalid_request', 'this request is not waiting for a sign-in');
        if (!(await within(ctx, deps.limits?.walletNonces, 'wallet nonces'))) return;
        const { nonce, expiresIn } = await wallet.issueNonce({ interaction: uid });
        ctx.body = { nonce, expires_in: expiresIn };
        return;
      }

      if (action === 'login') {
        if (prompt !== 'login') return fail(ctx, 400, 'Already signed in', 'invalid_request', 'this request is not waiting for a sign-in');
        if (!(await within(ctx, deps.limits?.signInAttempts, 'wallet sign-in attempts'))) return;
        // The page sends JSON; a form is read too. Any other body type (text/plain, which a cross-site form can send
        // without asking) is refused with what to send, as at the nonce endpoint.
        if (!ctx.is('application/json', 'application/x-www-form-urlencoded')) {
          return fail(ctx, 415, 'Sign-in failed', 'invalid_request', `send message and signature as application/json or application/x-www-form-urlencoded (got ${JSON.stringify((ctx.get('content-type') || 'none').slice(0, 100))})`);
        }
        const body = await readBody(ctx);
        const { message, signature } = body;
        if (typeof message !== 'string' || typeof signature !== 'string') {
          return fail(ctx, 400, 'Sign-in failed', 'invalid_request', 'message and signature are required');
        }
        // A signature that cannot be one is a malformed request, as a missing one is: refused before the sign-in is
        // tried, so it uses none of this page's attempts and no nonce.
        const malformed = signatureFormProblem(signature);
        if (malformed !== undefined) return fail(ctx, 400, 'Sign-in failed', 'invalid_request', malformed);
        const required = toArray((details.params as Record<string, unknown>).resource);
        try {
          // The nonce must come from this page, and a Request ID must name it (another sign-in's message does not log in this one).
          const verified = await wallet.verify(message, signature, { binding: { interaction: uid }, requiredResources: required });
          log.info({ event: 'login.succeeded', sub: verified.sub, method: verified.method, client_id: details.params.client_id }, 'wallet sign-in succeeded');
          auditLater(ctx, { type: 'login.succeeded', sub: verified.sub, client_id: String(details.params.client_id), details: { address: verified.address, chain_id: verified.chainId, method: verified.method, via: 'interaction' } });
          // ts: when the person signed in, kept when the consent that follows is merged with this result (auth_time).
          return await finish(ctx, { login: { accountId: verified.sub, amr: ['eip4361'], ts: Math.floor(Date.now() / 1000) } });
        } catch (err) {
          if (!(err instanceof SiweVerificationError)) throw err;
          // The reason may quote the message's URI: a password in its userinfo is neither logged nor audited.
          const reason = withoutUserinfo(err.message);
          log.warn({ event: 'login.failed', rule: err.rule, address: err.address, reason }, 'wallet sign-in refused');
          auditLater(ctx, { type: 'login.failed', client_id: String(details.params.client_id), details: { address: err.address, rule: err.rule, reason, via: 'interaction' } });
          const description = `${err.rule}: ${err.message}`;
          if (wantsJson(ctx)) {
            ctx.status = 400;
            // A message that is not an EIP-4361 message is a malformed request (RFC 6749 §5.2), not a refused sign-in.
            ctx.body = { error: err.rule === 'message-format' ? 'invalid_request' : 'access_denied', error_description: description, rule: err.rule };
          } else {
            const request = await accessRequest(details);
            ctx.status = 400;
            ctx.type = 'html';
            ctx.body = loginPage({ ...request, uid, domain: issuerUrl.host, uri: issuerUrl.origin, chainIds: [...wallet.rules.chainIds], error: description });
          }
          return;
        }
      }

      // action === 'confirm'
      if (prompt !== 'consent') return fail(ctx, 400, 'Nothing to approve', 'invalid_request', 'this request is not waiting for consent');
      const accountId = details.session?.accountId;
      const clientId = String(details.params.client_id);
      if (!accountId) return fail(ctx, 400, 'Sign-in expired', 'invalid_request', 'sign in again');
      // What the approval would be written to, looked up first: a refusal here leaves the request as it was.
      let grant: InstanceType<typeof provider.Grant> | undefined;
      if (details.grantId) grant = await provider.Grant.find(details.grantId);
      else {
        // Built with the client, so that the grant lives as long as the client's tier says (server/grants/new-grant.ts).
        const client = await provider.Client.find(clientId);
        if (!client) return fail(ctx, 400, 'Request refused', 'invalid_client', 'the client of this request no longer exists');
        grant = newGrant(provider, { accountId, client });
      }
      if (!grant) return fail(ctx, 400, 'Sign-in expired', 'invalid_request', 'the grant of this request no longer exists');
      // One approval per request: a second (a double click, a second tab, a replayed form) stores no grant of its own,
      // which nothing would use, and is sent on to the request's resume, where the first approval takes effect (or,
      // if it has not been recorded yet, consent is asked again). An approval that comes after a denial is refused.
      const claim = deps.consentClaim ? await deps.consentClaim(uid, 'approve') : undefined;
      if (claim && !claim.won) {
        if (claim.decision === 'deny') {
          return fail(ctx, 400, 'Request denied', 'access_denied', 'this request was denied; go back to the application and start again');
        }
        if (wantsJson(ctx)) ctx.body = { redirect_to: details.returnTo };
        else {
          ctx.status = 303;
          ctx.redirect(details.returnTo);
        }
        return;
      }
      const missing = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(resource, scopes.join(' '));
      return await decide(claim, async () => {
        const grantId = await grant.save();
        // The operator revoked this person while the approval was served (from its arrival: its session was read
        // then), perhaps after the revocation's last look at their grants: the grant goes (a grant found before the
        // revocation deleted it was just written back), and the application is told access_denied instead of
        // receiving a code. A check that cannot be made deletes the grant too, before its 503.
        if (deps.subjectRevokedWhileServed && (await checkedOrUndone(() => deps.subjectRevokedWhileServed!(accountId, requestArrivedAt(ctx.req)), () => grant.destroy()))) {
          await grant.destroy();
          log.warn({ event: 'consent.revoked', sub: accountId, client_id: clientId }, 'consent refused: the person was revoked by the operator while it was given');
          await finish(ctx, { error: 'access_denied', error_description: SUBJECT_REVOKED_DURING_CONSENT });
          return;
        }
        log.info({ event: 'consent.given', sub: accountId, client_id: clientId }, 'consent given');
        await finish(ctx, { consent: details.grantId ? {} : { grantId } });
      });
    } catch (err) {
      if (err instanceof errors.OIDCProviderError && err.statusCode < 500) {
        const e = err as InstanceType<typeof errors.OIDCProviderError> & { error_description?: string };
        return fail(ctx, e.statusCode, 'Request refused', e.message, e.error_description ?? e.message);
      }
      throw err;
    }
  };
}
