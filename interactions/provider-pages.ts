import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';

import { errorPage, loggedOutPage, logoutPage, prefersPage, unavailablePage } from './views.js';
import { shownClientName } from '../server/policies/display-text.js';

/**
 * The pages oidc-provider renders itself, through its configuration hooks: the logout confirmation and success
 * pages (features.rpInitiatedLogout) and its error page (renderError). Drawn with agentauth's own layout, so they
 * fit the Content-Security-Policy every response carries (server/http/security-headers.ts): no inline styles, no
 * third-party fonts.
 */

type RpInitiatedLogout = NonNullable<NonNullable<Configuration['features']>['rpInitiatedLogout']>;

const clientName = (ctx: KoaContextWithOIDC) => (ctx.oidc.client ? shownClientName(ctx.oidc.client.clientName, ctx.oidc.client.clientId) : undefined);

/**
 * The confirmation page. The `client_id` in its URL is anyone's to write: the page names the client (and offers to
 * sign out of it only) only when this browser's session holds a sign-in for it; otherwise it is "an application".
 */
export const logoutSource: NonNullable<RpInitiatedLogout['logoutSource']> = (ctx, form) => {
  const { client, session } = ctx.oidc;
  ctx.type = 'html';
  ctx.body = logoutPage(form, client && session?.authorizations?.[client.clientId] ? clientName(ctx) : undefined);
};

/** Set by markClientSignOut, read once by the success page: which client this browser was just signed out of. */
export const SIGNED_OUT_COOKIE = '_agentauth_signed_out';
const SIGNED_OUT_PATH = '/session/end/success';

/**
 * On oidc-provider's `end_session.success`: after "Sign out of <client> only" (a confirmation without `logout`), a
 * signed cookie of one minute naming the client, for the success page the browser is sent to next.
 */
export function markClientSignOut(ctx: KoaContextWithOIDC): void {
  const { client, params } = ctx.oidc;
  if (!client || params?.logout) return;
  ctx.cookies.set(SIGNED_OUT_COOKIE, client.clientId, { signed: true, httpOnly: true, sameSite: 'lax', maxAge: 60_000, path: SIGNED_OUT_PATH, overwrite: true });
}

/**
 * The page after a logout. oidc-provider names the client by the `client_id` in the URL, which anyone can link to, so
 * the page goes by this browser instead: signed in here (a session with an account), it names the client only when
 * this browser was just signed out of that client (markClientSignOut's cookie) and holds no sign-in for it any more;
 * signed in otherwise (a link, not a logout), it says nothing was signed out; not signed in, it says so.
 */
export const postLogoutSuccessSource: NonNullable<RpInitiatedLogout['postLogoutSuccessSource']> = async (ctx) => {
  const { client } = ctx.oidc;
  const session = await ctx.oidc.provider.Session.get(ctx);
  const name = clientName(ctx);
  const signedOut = ctx.cookies.get(SIGNED_OUT_COOKIE, { signed: true });
  if (signedOut !== undefined) ctx.cookies.set(SIGNED_OUT_COOKIE, null, { path: SIGNED_OUT_PATH, overwrite: true });
  let outcome: Parameters<typeof loggedOutPage>[0] = 'signed out';
  if (session.accountId) outcome = client && name && signedOut === client.clientId && !session.authorizations?.[client.clientId] ? { signedOutOf: name } : 'still signed in';
  ctx.type = 'html';
  ctx.body = loggedOutPage(outcome);
};

/**
 * oidc-provider calls this for errors it cannot send back to a client: from any endpoint when the caller prefers
 * HTML, and from the authorization endpoint whatever it prefers. Browsers get a page; everything else keeps the
 * RFC 6749 JSON error body.
 */
export const renderError: NonNullable<Configuration['renderError']> = (ctx, out) => {
  // oidc-provider says "client is invalid" only of a client_id it did not find (lib/actions/authorization/client.js,
  // end_session.js): said so, naming it, as /wallet/nonce does. The id is the caller's own input, escaped on the page
  // and kept to RFC 6749's characters in JSON by the security-headers layer.
  const clientId = (ctx.oidc?.params as Record<string, unknown> | undefined)?.client_id;
  if (out.error === 'invalid_client' && out.error_description === 'client is invalid' && typeof clientId === 'string' && clientId !== '') {
    out = { ...out, error_description: `no client is registered with client_id '${clientId.slice(0, 200)}' on this authorization server` };
  }
  if (!prefersPage(ctx)) {
    ctx.type = 'json';
    ctx.body = out;
    return;
  }
  ctx.type = 'html';
  if (out.error === 'temporarily_unavailable') {
    ctx.body = unavailablePage();
    return;
  }
  const description = out.error_description ?? 'the request was refused';
  ctx.body = errorPage('Request refused', `${description.charAt(0).toUpperCase()}${description.slice(1)} (${out.error}).`);
};
