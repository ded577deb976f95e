import { hash } from 'node:crypto';
import { Provider } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

import { TIER_FIELD } from '../policies/tiers.js';
import type { AuditEventInput } from './chain.js';
import { auditLater } from './trail.js';

const sha256 = (value: string) => hash('sha256', value, 'hex');
type Emitter = NodeJS.EventEmitter;

/**
 * Whether this logout is the one oidc-provider makes by itself when a sign-in names another account than the
 * browser session's (actions/authorization/resume.js): it then sends the browser to end_session_confirm with
 * `logout=yes`, having recorded its own resume URL as where to go after, so the new account's request continues.
 * That URL is compared with the one oidc-provider builds for the resume route, not matched as a string pattern.
 * A person's own logout (RP-initiated) returns to a client's registered post_logout_redirect_uri or to the success
 * page.
 */
function accountSwitch(ctx: KoaContextWithOIDC): boolean {
  const after = (ctx.oidc.session?.state as { postLogoutRedirectUri?: unknown } | undefined)?.postLogoutRedirectUri;
  if (typeof after !== 'string') return false;
  // A client may register any https URI as where to return after its logout, this server's own URLs included: one it
  // registered is a logout it asked for, whatever it looks like.
  if (ctx.oidc.client?.postLogoutRedirectUris?.includes(after)) return false;
  const uid = after.slice(after.lastIndexOf('/') + 1);
  return uid.length > 0 && ctx.oidc.urlFor('resume', { uid }) === after;
}

/** Turns oidc-provider's events into audit events queued on the current request (written by auditTrail). */
export function auditProviderEvents(provider: Provider): void {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- event payloads are typed at each listener
  const on = (event: string, fn: (...args: any[]) => void) => (provider as unknown as Emitter).on(event, fn);
  const current = () => Provider.ctx as (KoaContextWithOIDC & { state: Record<string, unknown> }) | undefined;

  on('grant.revoked', (ctx: KoaContextWithOIDC & { state: Record<string, unknown> }, grantId: string) => {
    const clientId = ctx.oidc?.client?.clientId;
    const base = { ...(clientId ? { client_id: clientId } : {}) };
    if (ctx.oidc?.route === 'token' && ctx.oidc.params?.grant_type === 'refresh_token') {
      auditLater(ctx, { type: 'refresh.reuse_detected', ...base, details: { grant_id: grantId } });
    }
    const route = ctx.oidc?.route;
    const reason = route === 'end_session_confirm' ? { reason: accountSwitch(ctx) ? 'account_switch' : 'logout' } : {};
    auditLater(ctx, { type: 'grant.revoked', ...base, details: { grant_id: grantId, route, ...reason } });
  });

  on('agentauth.jwt_revoked', (ctx: KoaContextWithOIDC & { state: Record<string, unknown> }, claims: { jti?: string; client_id?: string; sub?: string }) => {
    auditLater(ctx, { type: 'token.revoked', ...(claims.client_id ? { client_id: claims.client_id } : {}), ...(claims.sub ? { sub: claims.sub } : {}), details: { jti: claims.jti, format: 'jwt' } });
  });

  for (const kind of ['access_token', 'client_credentials', 'refresh_token']) {
    on(`${kind}.destroyed`, (token: { jti: string; clientId?: string; accountId?: string }) => {
      const ctx = current();
      if (ctx?.oidc?.route !== 'revocation') return;
      // An opaque token's id is the token itself: only its hash is recorded.
      auditLater(ctx, {
        type: 'token.revoked',
        ...(token.clientId ? { client_id: token.clientId } : {}),
        ...(token.accountId ? { sub: token.accountId } : {}),
        details: { kind, sha256: sha256(token.jti), format: 'opaque' },
      });
    });
  }

  // client.registered and client.updated are recorded before the client is written (server/admin/disabled-clients.ts,
  // clientChangeEvent), not after the answer: a registration or update applied after its 503 still has its record.
}

/** The audit event of a client registered or updated through RFC 7591/7592, from the metadata about to be stored. */
export function clientChangeEvent(type: 'client.registered' | 'client.updated', clientId: string, m: Record<string, unknown>): AuditEventInput {
  return {
    type,
    client_id: clientId,
    details: { tier: m[TIER_FIELD], token_endpoint_auth_method: m.token_endpoint_auth_method, grant_types: m.grant_types, scope: m.scope },
  };
}
