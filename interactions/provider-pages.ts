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

export const logoutSource: NonNullable<RpInitiatedLogout['logoutSource']> = (ctx, form) => {
  ctx.type = 'html';
  ctx.body = logoutPage(form, clientName(ctx));
};

/**
 * The page after a logout. oidc-provider names the client by the `client_id` in the URL, which anyone can link to, so
 * the page goes by this browser's session instead: signed in here (a session with an account) and holding no sign-in
 * for the named client, as after "Sign out of <client> only", it names the client; signed in otherwise (a link, not
 * a logout), it says nothing was signed out; not signed in, it says so.
 */
export const postLogoutSuccessSource: NonNullable<RpInitiatedLogout['postLogoutSuccessSource']> = async (ctx) => {
  const { client } = ctx.oidc;
  const session = await ctx.oidc.provider.Session.get(ctx);
  const name = clientName(ctx);
  let outcome: Parameters<typeof loggedOutPage>[0] = 'signed out';
  if (session.accountId) outcome = client && name && !session.authorizations?.[client.clientId] ? { signedOutOf: name } : 'still signed in';
  ctx.type = 'html';
  ctx.body = loggedOutPage(outcome);
};

/**
 * oidc-provider calls this for errors it cannot send back to a client: from any endpoint when the caller prefers
 * HTML, and from the authorization endpoint whatever it prefers. Browsers get a page; everything else keeps the
 * RFC 6749 JSON error body.
 */
export const renderError: NonNullable<Configuration['renderError']> = (ctx, out) => {
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
