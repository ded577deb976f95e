/** Server-rendered login and consent pages. Scripts and styles come from agentauth itself (see assets.ts). */

const escapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => escapes[c]!);

/** JSON for a <script type="application/json"> block: `<` escaped so the data cannot close the element. */
const jsonData = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

function layout(title: string, body: string, scripts: string[] = []): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<link rel="stylesheet" href="/interaction-assets/style.css">
</head>
<body>
<main>
${body}
</main>
${scripts.map((s) => `<script src="${esc(s)}"></script>`).join('\n')}
</body>
</html>`;
}

export interface AccessRequest {
  clientName: string;
  clientId: string;
  redirectHost: string;
  /** resource indicator → scopes requested on it */
  resources: Array<{ resource: string; scopes: string[] }>;
  dpopBound: boolean;
  /** Client identified by a client ID metadata document: the host of its client_id URL (who published it). */
  documentHost?: string | undefined;
  /** Every redirect URI of that document, or of that self-registered client, is on localhost / a loopback address. */
  loopbackOnly?: boolean | undefined;
  /** Registered by itself, without an initial access token (open registration): no one vouched for its name. */
  selfRegistered?: boolean | undefined;
}

/**
 * A client that registered itself (open registration, no initial access token) chose its own name, as a metadata
 * document does, and anyone can register one whose redirects all go to localhost: said in the same words.
 */
function selfRegisteredNotice(req: AccessRequest): string {
  const source = '<p class="client-source">This application registered itself with this server. The name above is what it says; no one has verified it.</p>';
  if (!req.loopbackOnly) return source;
  return `${source}
<p class="warning" role="alert" id="localhost-warning"><strong>Warning:</strong> this application sends you back only to <code>localhost</code>, a program on this computer. Anyone can register such an application under any name; continue only if you just started this application yourself, on this device.</p>`;
}

/**
 * Who vouches for a client identified by a metadata document: only the host that serves the document; its name and
 * logo are whatever the document says. A document whose redirects all go to localhost can be published by anyone for
 * any program on the person's machine, so that is said plainly.
 */
function documentNotice(req: AccessRequest): string {
  if (!req.documentHost) return req.selfRegistered ? selfRegisteredNotice(req) : '';
  const source = `<p class="client-source">This application identifies itself with a document published by <strong class="client-host">${esc(req.documentHost)}</strong>. The name above is what that document says; only the host is verified.</p>`;
  if (!req.loopbackOnly) return source;
  return `${source}
<p class="warning" role="alert" id="localhost-warning"><strong>Warning:</strong> this application sends you back only to <code>localhost</code>, a program on this computer. Anyone can publish such a document under any name; continue only if you just started this application yourself, on this device.</p>`;
}

function accessList(req: AccessRequest): string {
  if (req.resources.length === 0) return '<p>No resource server access is requested.</p>';
  return `<ul class="resources">${req.resources
    .map(
      (r) =>
        `<li><span class="resource">${esc(r.resource)}</span>${
          r.scopes.length ? `<ul class="scopes">${r.scopes.map((s) => `<li><code>${esc(s)}</code></li>`).join('')}</ul>` : ''
        }</li>`,
    )
    .join('')}</ul>`;
}

export interface LoginView extends AccessRequest {
  uid: string;
  domain: string;
  uri: string;
  chainIds: number[];
  error?: string | undefined;
}

export function loginPage(v: LoginView): string {
  const data = {
    uid: v.uid,
    domain: v.domain,
    uri: v.uri,
    chainIds: v.chainIds,
    clientName: v.clientName,
    clientId: v.clientId,
    resources: v.resources.map((r) => r.resource),
    scopes: [...new Set(v.resources.flatMap((r) => r.scopes))],
    nonceUrl: `/interaction/${encodeURIComponent(v.uid)}/nonce`,
    loginUrl: `/interaction/${encodeURIComponent(v.uid)}/login`,
  };
  return layout(
    `Sign in – ${v.clientName}`,
    `<h1>Sign in with your wallet</h1>
<p><strong>${esc(v.clientName)}</strong> asks to access, on your behalf:</p>
${accessList(v)}
${documentNotice(v)}
<p>Your wallet will ask you to sign a message (EIP-4361). Signing costs nothing and sends no transaction; the message names the resources above, and signing it is your consent to them.</p>
<p id="status" class="${v.error ? 'error' : 'info'}" role="status">${v.error ? esc(v.error) : ''}</p>
<noscript><p class="error">This page needs JavaScript and a browser wallet. Agents without a browser can use the wallet-signature grant.</p></noscript>
<button id="connect" type="button">Connect wallet and sign in</button>
<form method="post" action="/interaction/${esc(encodeURIComponent(v.uid))}/abort"><button type="submit" class="secondary">Cancel</button></form>
<script type="application/json" id="login-data">${jsonData(data)}</script>`,
    ['/interaction-assets/ethers.umd.min.js', '/interaction-assets/login.js'],
  );
}

export interface ConsentView extends AccessRequest {
  uid: string;
  account: string;
}

export function consentPage(v: ConsentView): string {
  const action = (what: string) => `/interaction/${esc(encodeURIComponent(v.uid))}/${what}`;
  return layout(
    `Allow access – ${v.clientName}`,
    `<h1>Allow access?</h1>
<p>Signed in as <code>${esc(v.account)}</code>.</p>
<p><strong>${esc(v.clientName)}</strong> <span class="muted">(${esc(v.clientId)})</span> will receive tokens at <strong>${esc(v.redirectHost)}</strong> for:</p>
${accessList(v)}
${documentNotice(v)}
<p>${
      v.dpopBound
        ? 'Tokens will be <strong>DPoP-bound</strong>: only the holder of the client\'s key can use them.'
        : 'Tokens are DPoP-bound only if the application proves possession of its key when it fetches them; otherwise they are <strong>bearer tokens</strong>, and each access token lives at most five minutes.'
    }</p>
<div class="actions">
<form method="post" action="${action('confirm')}"><button type="submit" id="approve">Approve</button></form>
<form method="post" action="${action('abort')}"><button type="submit" id="deny" class="secondary">Deny</button></form>
</div>`,
  );
}

export function errorPage(title: string, message: string): string {
  return layout(title, `<h1>${esc(title)}</h1><p class="error">${esc(message)}</p>`);
}

/** Where a person may go back to an application: a link (query and fragment responses), or a form (form_post). */
export type WayBack = { href: string } | { action: string; fields: Record<string, string> };

/**
 * An authorization error for an application that registered itself (RFC 9700 §4.11.2): its redirect URI is no one's
 * word but its own, so the browser is not sent there at once (which made this server a redirector for whoever
 * registers); the person reads what went wrong and follows the way back, or not.
 */
export function refusedRequestPage(host: string, message: string, back: WayBack): string {
  const label = `Return to ${host}`;
  const action = 'href' in back
    ? `<a class="button" href="${esc(back.href)}">${esc(label)}</a>`
    : `<form method="post" action="${esc(back.action)}">${Object.entries(back.fields).map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('')}<button type="submit">${esc(label)}</button></form>`;
  return layout(
    'Request refused',
    `<h1>Request refused</h1>
<p class="error">${esc(message)}</p>
<p>The application that sent you here registered itself with this server, so this server does not send you back to it on its own: <span class="client-host">${esc(host)}</span> is its own address, which no one has verified. Go back only if you started this from that application.</p>
<div class="actions">${action}</div>`,
  );
}

/**
 * Whether the caller asked for a page rather than JSON: a browser loading a page prefers `text/html`, while API
 * clients (no `Accept`, any type, or JSON) keep the RFC-shaped JSON error body. One rule for every error answer.
 */
export function prefersPage(ctx: { accepts(...types: string[]): string | false }): boolean {
  return ctx.accepts('json', 'html') === 'html';
}

/** What a person is shown while agentauth cannot reach its store (503 temporarily_unavailable), wherever they meet it. */
export function unavailablePage(): string {
  return errorPage('Temporarily unavailable', 'This sign-in service cannot reach its storage right now. Wait a few seconds and reload this page, or go back to the application and start again.');
}

/**
 * RP-initiated logout confirmation. `form` is oidc-provider's hidden form (its action and anti-forgery token); the
 * buttons submit it, "logout=yes" ending the whole session, the other only this client's part of it.
 */
/**
 * oidc-provider's logout confirmation. Its form does one of two things: with `logout=yes` it ends the sign-in here and
 * revokes the access given to every application; without, it signs the person out of the application that asked
 * only (revoking the access given to it), or, when no application asked, does nothing. The buttons say which; to
 * stay signed in everywhere the person closes the page.
 */
export function logoutPage(form: string, clientName: string | undefined): string {
  const asker = clientName ? `<strong>${esc(clientName)}</strong>` : undefined;
  return layout(
    'Sign out?',
    `<h1>Sign out?</h1>
<p>${asker ? `${asker} asks to sign you out.` : 'An application asks to sign you out.'} Signing out everywhere ends your sign-in here and revokes the access you gave to every application you signed in to.${asker ? ` Signing out of ${asker} only revokes the access you gave to it.` : ''} To stay signed in, close this page.</p>
${form}
<div class="actions">
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Sign out everywhere</button>
${asker ? `<button type="submit" form="op.logoutForm" class="secondary">Sign out of ${asker} only</button>` : ''}
</div>`,
  );
}

/**
 * The page at the end of a logout: signed out of everything, signed out of the one application named (still signed
 * in here), or, for a browser still signed in with nothing signed out (the page reached by a link), that it is so.
 */
export function loggedOutPage(outcome: { signedOutOf: string } | 'signed out' | 'still signed in'): string {
  if (outcome === 'still signed in') {
    return layout('Still signed in', '<h1>Still signed in</h1><p>You are still signed in here: nothing was signed out. To sign out, use the sign-out of the application you signed in to. You can close this page.</p>');
  }
  return layout(
    'Signed out',
    typeof outcome === 'object'
      ? `<h1>Signed out</h1><p>You are signed out of <strong>${esc(outcome.signedOutOf)}</strong>, and its access is revoked. You are still signed in here for other applications. You can close this page.</p>`
      : '<h1>Signed out</h1><p>You are signed out. You can close this page.</p>',
  );
}
