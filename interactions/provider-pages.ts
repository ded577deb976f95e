import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';

import { errorPage, loggedOutPage, logoutPage } from './views.js';
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

export const postLogoutSuccessSource: NonNullable<RpInitiatedLogout['postLogoutSuccessSource']> = (ctx) => {
  ctx.type = 'html';
  ctx.body = loggedOutPage(clientName(ctx));
};

/**
 * oidc-provider calls this for errors it cannot send back to a client: from any endpoint when the caller prefers
 * HTML, and from the authorization endpoint whatever it prefers. Browsers get a page; everything else keeps the
 * RFC 6749 JSON error body.
 */
export const renderError: NonNullable<Configuration['renderError']> = (ctx, out) => {
  if (ctx.accepts('json', 'html') !== 'html') {
    ctx.type = 'json';
    ctx.body = out;
    return;
  }
  ctx.type = 'html';
  const description = out.error_description ?? 'the request was refused';
  ctx.body = errorPage('Request refused', `${description.charAt(0).toUpperCase()}${description.slice(1)} (${out.error}).`);
};
