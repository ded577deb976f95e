import type { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { buildSiweMessage } from '../../interactions/siwe/message.js';

/** A minimal browser stand-in: follows redirects by hand and keeps cookies, so tests drive the real pages over HTTP. */
export class UserAgent {
  readonly cookies = new Map<string, string>();

  async fetch(url: URL | string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.cookies.size) headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]!) < Date.now()) || attrs.some((a) => /^\s*max-age=0/i.test(a));
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return res;
  }
}

export interface WalletLoginOptions {
  wallet: Wallet;
  chainId?: number;
  consent?: 'approve' | 'deny';
  /** Called with the consent page open, before its decision is posted (to make something happen meanwhile). */
  beforeConsent?: () => Promise<void>;
  /** Change the message before it is signed (to test refusals). */
  tamper?: (fields: Parameters<typeof buildSiweMessage>[0]) => Parameters<typeof buildSiweMessage>[0];
  agent?: UserAgent;
}

/** An interaction page answered with something other than a page to continue from (a refused sign-in, an error page). */
export class InteractionRefused extends Error {
  constructor(
    readonly status: number,
    readonly path: string,
    readonly body: string,
  ) {
    super(`unexpected ${status} at ${path}: ${body.slice(0, 500)}`);
    this.name = 'InteractionRefused';
  }
}

/** What the login page hands its script (see interactions/views.ts). */
export interface LoginData {
  uid: string;
  domain: string;
  uri: string;
  resources: string[];
  nonceUrl: string;
  loginUrl: string;
}

/** The login page of a fresh code-flow request by `client` (PKCE S256, scope `read`, one resource), in a new agent. */
export async function openFreshLoginPage(client: oidc.Configuration, redirectUri: string, resource: string): Promise<{ agent: UserAgent; data: LoginData; pageUrl: URL }> {
  const url = oidc.buildAuthorizationUrl(client, {
    redirect_uri: redirectUri,
    scope: 'read',
    resource,
    state: oidc.randomState(),
    code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
    code_challenge_method: 'S256',
  });
  return openLoginPage(url);
}

/** Follows an authorization request to its login page; returns the page's data, its URL and the agent holding the cookies. */
export async function openLoginPage(authorizationUrl: URL, agent: UserAgent = new UserAgent()): Promise<{ agent: UserAgent; data: LoginData; pageUrl: URL }> {
  let url = authorizationUrl;
  for (let hop = 0; hop < 10; hop += 1) {
    const res = await agent.fetch(url);
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location')!, url);
      continue;
    }
    const html = await res.text();
    const dataMatch = /<script type="application\/json" id="login-data">(.*?)<\/script>/s.exec(html);
    if (res.status !== 200 || !dataMatch) throw new InteractionRefused(res.status, url.pathname, html);
    return { agent, data: JSON.parse(dataMatch[1]!) as LoginData, pageUrl: url };
  }
  throw new Error('too many redirects');
}

export interface AuthorizeOutcome {
  /** The final redirect to the client's redirect_uri (code or error in its query). */
  callback: URL;
  agent: UserAgent;
  /** HTML of every interaction page seen, in order. */
  pages: string[];
}

/** Follows an authorization request through the wallet login and consent pages to the client's redirect_uri. */
export async function authorizeWithWallet(authorizationUrl: URL, redirectUri: string, opts: WalletLoginOptions): Promise<AuthorizeOutcome> {
  const agent = opts.agent ?? new UserAgent();
  const pages: string[] = [];
  let next: { url: URL; init?: RequestInit } = { url: authorizationUrl };
  for (let hop = 0; hop < 20; hop += 1) {
    const res = await agent.fetch(next.url, next.init);
    if (res.status >= 300 && res.status < 400) {
      const location = new URL(res.headers.get('location')!, next.url);
      if (location.href.startsWith(redirectUri)) return { callback: location, agent, pages };
      next = { url: location };
      continue;
    }
    const html = await res.text();
    if (res.status !== 200) throw new InteractionRefused(res.status, next.url.pathname, html);
    pages.push(html);
    const dataMatch = /<script type="application\/json" id="login-data">(.*?)<\/script>/s.exec(html);
    if (dataMatch) {
      const data = JSON.parse(dataMatch[1]!) as LoginData;
      const origin = next.url.origin;
      const { nonce } = (await (await agent.fetch(new URL(data.nonceUrl, origin), { method: 'POST' })).json()) as { nonce: string };
      let fields: Parameters<typeof buildSiweMessage>[0] = {
        domain: data.domain,
        address: opts.wallet.address,
        statement: 'Sign in to agentauth tests.',
        uri: data.uri,
        chainId: opts.chainId ?? 1,
        nonce,
        issuedAt: new Date(),
        requestId: data.uid,
        resources: data.resources,
      };
      if (opts.tamper) fields = opts.tamper(fields);
      const message = buildSiweMessage(fields);
      const signature = await opts.wallet.signMessage(message);
      next = {
        url: new URL(data.loginUrl, origin),
        init: { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ message, signature }).toString() },
      };
      continue;
    }
    // oidc-provider's self-submitting form (response_modes/form_post.js), as a browser runs it: e.g. the logout it
    // makes when a sign-in names another account than the session's.
    const autoPost = /<form method="post" action="([^"]+)">([\s\S]*?)<\/form>/.exec(html);
    if (autoPost && html.includes('document.forms[0].submit()')) {
      const inputs = [...autoPost[2]!.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"\/>/g)].map((m): [string, string] => [m[1]!, unescapeHtml(m[2]!)]);
      next = {
        url: new URL(unescapeHtml(autoPost[1]!), next.url),
        init: { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(inputs).toString() },
      };
      continue;
    }
    const approve = /action="([^"]+\/confirm)"/.exec(html);
    const deny = /action="([^"]+\/abort)"/.exec(html);
    if (approve && deny) {
      await opts.beforeConsent?.();
      next = { url: new URL((opts.consent === 'deny' ? deny : approve)[1]!, next.url), init: { method: 'POST' } };
      continue;
    }
    throw new Error(`no login or consent form at ${next.url.pathname}: ${html.slice(0, 500)}`);
  }
  throw new Error('too many redirects');
}

/** What oidc-provider's htmlSafe escapes, back. */
const unescapeHtml = (v: string) => v.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (_m, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#x27': "'" })[e]!);

/** RP-initiated logout as the person does it: the end-session page, then its confirmation form. Returns the final status. */
export async function logOut(agent: UserAgent, issuer: string, clientId: string): Promise<number> {
  const start = await agent.fetch(`${issuer}/session/end?client_id=${encodeURIComponent(clientId)}`);
  const xsrf = /name="xsrf" value="([^"]+)"/.exec(await start.text())?.[1];
  if (!xsrf) throw new Error('the end-session page has no xsrf field');
  const confirm = await agent.fetch(`${issuer}/session/end/confirm`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ xsrf, logout: 'yes' }).toString(),
  });
  return confirm.status;
}
