import { Provider } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import formatUri from 'oidc-provider/lib/helpers/redirect_uri.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

import { refusedRequestPage } from '../../interactions/views.js';
import type { WayBack } from '../../interactions/views.js';
import { registrationOrigin, vouchedByOperator } from '../policies/registration-origin.js';

/** A client no one vouched for: its redirect URIs are its own word (open registration, metadata documents). */
const selfRegistered = (client: { metadata(): unknown }): boolean => !vouchedByOperator(registrationOrigin(client.metadata() as Record<string, unknown>));

/**
 * RFC 9700 §4.11.2: an authorization server sends the browser back with an error automatically only to a redirect URI
 * it trusts. oidc-provider sends every error of the authorization endpoint to the client's redirect URI once it has
 * checked that it is registered; with open registration (and metadata documents) anyone registers any URI, so a link
 * to /auth that fails at once (no PKCE, an unknown scope, prompt=none without a session) sent the person from this
 * server's origin to the attacker's site: a redirector for phishing. For such clients, an error of the request as it
 * arrives is shown on a page (refusedRequestPage) with the way back as a link or form the person may follow. Errors
 * after the person took part (their Deny on the consent page, the resumed request) and every client the operator
 * vouched for (configuration file, initial access token) are sent back as before. Every response mode is wrapped:
 * the client picks it (`response_mode=form_post` made a self-submitting form).
 */
export function installUntrustedErrorPages(provider: Provider): void {
  const modes = instance(provider).responseModes;
  for (const [name, respond] of [...modes]) {
    modes.set(name, function respondOrShow(this: unknown, ctx: KoaContextWithOIDC, redirectUri: string, payload: Record<string, string>) {
      if (!showInstead(ctx, payload)) return respond.call(this, ctx, redirectUri, payload);
      const back: WayBack = name === 'form_post' ? { action: redirectUri, fields: payload } : { href: formatUri(redirectUri, payload, name === 'fragment' ? 'fragment' : 'query') };
      const description = payload.error_description ?? 'the request was refused';
      ctx.status = 400;
      ctx.type = 'html';
      ctx.body = refusedRequestPage(URL.parse(redirectUri)?.host ?? redirectUri, `${description.charAt(0).toUpperCase()}${description.slice(1)} (${payload.error}).`, back);
      return undefined;
    });
  }
}

function showInstead(ctx: KoaContextWithOIDC, payload: Record<string, string>): boolean {
  if (payload.error === undefined || ctx.oidc?.route !== 'authorization') return false;
  return ctx.oidc.client !== undefined && selfRegistered(ctx.oidc.client);
}

/**
 * OpenID Connect RP-Initiated Logout 1.0 §3: without an `id_token_hint`, the OP "MUST NOT perform post-logout
 * redirection unless the OP has other means of confirming the legitimacy of the post-logout redirection target".
 * oidc-provider takes a `client_id` alone, and for a browser with no session it confirms the logout by itself (a
 * self-submitting form): `/session/end?client_id=<its own>&post_logout_redirect_uri=<its own>` sent anyone there
 * from this server's origin. An `id_token_hint` confirms nothing for a client that registered itself: whoever
 * registered it signs in to it once and holds one of its ID tokens (valid as a hint after it expires). So for such a
 * client the URI is followed only from a browser whose session holds a sign-in for that client (the person used it
 * here); otherwise the logout goes on without it and ends on this server's own page. oidc-provider reads the URI from
 * the request's parameters after this check, so it is removed there. Clients the operator vouched for are unchanged.
 */
export function installUntrustedLogoutRedirects(provider: Provider): void {
  const proto = provider.Client.prototype as unknown as { postLogoutRedirectUriAllowed(uri: string): boolean; clientId: string; metadata(): Record<string, unknown> };
  const allowed = proto.postLogoutRedirectUriAllowed;
  proto.postLogoutRedirectUriAllowed = function allowedFromHere(this: typeof proto, uri: string): boolean {
    if (!allowed.call(this, uri)) return false;
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    if (ctx?.oidc?.route !== 'end_session' || !selfRegistered(this)) return true;
    if (ctx.oidc.session?.authorizations?.[this.clientId] !== undefined) return true;
    (ctx.oidc.params as Record<string, unknown>).post_logout_redirect_uri = undefined;
    return true;
  };
}
