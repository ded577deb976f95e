import { Wallet } from 'ethers';

import { baseConfig, REDIRECT, register, RESOURCE } from '../support/agent-server.js';
import { walletCode } from '../support/races.js';
import { sentBack } from '../support/sent-back.js';
import { startConfigured } from '../support/server.js';
import { UserAgent } from '../support/user-agent.js';
import type { RunningServer } from '../support/server.js';

/**
 * RFC 9700 §4.11.2 (the authorization server as an open redirector) and OpenID Connect RP-Initiated Logout 1.0 §3:
 * with open registration anyone registers any redirect URI, so errors of /auth and post-logout redirects for such a
 * client must not send a browser there on their own (server/http/untrusted-redirects.ts). Clients the operator vouched
 * for keep the plain redirects.
 */

const CHALLENGE = 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM';
const ELSEWHERE = 'https://elsewhere.example/landing';
const BYE = 'https://elsewhere.example/bye';

describe('errors and logouts for a client that registered itself are not automatic redirects', () => {
  let server: RunningServer;
  let selfRegistered: string;

  beforeAll(async () => {
    const config = baseConfig();
    config.clients = [
      ...(config.clients as unknown[]),
      { client_id: 'operator-web', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: [ELSEWHERE], scope: 'read' },
    ];
    ({ server } = await startConfigured(config));
    const created = await register(server.url, { redirect_uris: [ELSEWHERE, REDIRECT], post_logout_redirect_uris: [BYE], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], scope: 'read openid' });
    expect(created.status).toBe(201);
    selfRegistered = created.body.client_id as string;
  });
  afterAll(async () => {
    await server?.stop();
  });

  const auth = (params: Record<string, string>) => {
    const url = new URL(`${server.url}/auth`);
    for (const [k, v] of Object.entries({ response_type: 'code', redirect_uri: ELSEWHERE, scope: 'read', resource: RESOURCE, state: 'st', ...params })) url.searchParams.set(k, v);
    return fetch(url, { redirect: 'manual' });
  };

  test.each([
    ['without PKCE', {}, 'invalid_request', /^Authorization Server policy requires PKCE/],
    ['with a scope no resource server defines', { code_challenge: CHALLENGE, code_challenge_method: 'S256', scope: 'nope' }, 'invalid_scope', /^The request names no scope this server can grant/],
    ['with prompt=none and no session', { code_challenge: CHALLENGE, code_challenge_method: 'S256', prompt: 'none' }, 'login_required', /^End-User authentication is required/],
  ])('%s: a page saying what went wrong, with the way back as a link the person may follow; no Location', async (_label, params, error, said) => {
    const res = await auth({ client_id: selfRegistered, ...params });
    expect(res.headers.get('location')).toBeNull();
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const back = await sentBack(res.clone());
    const html = await res.text();
    expect(html).toContain('<span class="client-host">elsewhere.example</span>');
    expect(html).toContain('Return to elsewhere.example');
    expect(html).toMatch(new RegExp(`<p class="error">${said.source.slice(1)}`));
    expect(`${back.origin}${back.pathname}`).toBe(ELSEWHERE);
    expect(Object.fromEntries(back.searchParams)).toMatchObject({ error, state: 'st', iss: server.url });
  });

  test('response_mode form_post and fragment: a form with a button (no script submits it), and a link with the fragment', async () => {
    const posted = await auth({ client_id: selfRegistered, response_mode: 'form_post' });
    expect(posted.status).toBe(400);
    const html = await posted.text();
    expect(html).not.toContain('<script');
    expect(html).toContain(`<form method="post" action="${ELSEWHERE}">`);
    expect(html).toContain('<input type="hidden" name="error" value="invalid_request">');
    expect(html).toContain('<button type="submit">Return to elsewhere.example</button>');

    const fragment = await sentBack(await auth({ client_id: selfRegistered, response_mode: 'fragment' }));
    expect(fragment.search).toBe('');
    expect(new URLSearchParams(fragment.hash.slice(1)).get('error')).toBe('invalid_request');
  });

  test('a client of the configuration file (the operator vouched for its URIs) is redirected as before', async () => {
    const res = await auth({ client_id: 'operator-web' });
    expect(res.status).toBe(303);
    const location = new URL(res.headers.get('location')!);
    expect(`${location.origin}${location.pathname}`).toBe(ELSEWHERE);
    expect(location.searchParams.get('error')).toBe('invalid_request');
  });

  test('the person\'s own Deny (a resumed request) goes back to the client at once: they just chose to', async () => {
    // The browser-level test of Deny is test/browser/wallet-login.test.ts; here the route that carries it is checked
    // to be the resumed one, which the rule leaves alone, by a request whose consent the person refuses.
    const { agent } = await walletCode(server.url, selfRegistered, new Wallet(Wallet.createRandom().privateKey), 'read');
    const url = new URL(`${server.url}/auth`);
    for (const [k, v] of Object.entries({ client_id: selfRegistered, response_type: 'code', redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: CHALLENGE, code_challenge_method: 'S256' })) url.searchParams.set(k, v);
    const first = await agent.fetch(url, { redirect: 'manual' });
    expect(first.status).toBe(303);
    const interaction = new URL(first.headers.get('location')!, server.url);
    expect(interaction.pathname).toMatch(/^\/interaction\//);
    // (The second request of a public client with a loopback redirect shows the consent page again.)
    const page = await agent.fetch(interaction, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    const confirm = /action="([^"]+\/confirm)"/.exec(await page.text())?.[1];
    expect(confirm).toEqual(expect.any(String));
    let at = new URL(confirm!.replace(/\/confirm$/, '/abort'), server.url);
    let res = await agent.fetch(at, { method: 'POST' });
    for (let hop = 0; hop < 10 && res.status >= 300 && res.status < 400; hop += 1) {
      at = new URL(res.headers.get('location')!, at);
      if (at.href.startsWith(REDIRECT)) break;
      res = await agent.fetch(at);
    }
    expect(`${at.origin}${at.pathname}`).toBe(REDIRECT);
    expect(at.searchParams.get('error')).toBe('access_denied');
  });

  /** A logout request's outcome: where the browser ends up, following the self-submitting form or the confirmation. */
  async function logoutLandsAt(agent: UserAgent, params: Record<string, string>): Promise<string> {
    const page = await agent.fetch(`${server.url}/session/end?${new URLSearchParams(params)}`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    const html = await page.text();
    const action = /<form[^>]* action="([^"]+)"/.exec(html)?.[1];
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
    expect({ action, xsrf }).toEqual({ action: expect.any(String), xsrf: expect.any(String) });
    const confirmed = await agent.fetch(new URL(action!, server.url), {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: server.url, 'sec-fetch-site': 'same-origin' },
      body: new URLSearchParams({ xsrf: xsrf!, logout: 'yes' }).toString(),
    });
    expect(confirmed.status).toBe(303);
    const to = new URL(confirmed.headers.get('location')!, server.url);
    return `${to.origin}${to.pathname}`;
  }

  test('logout: a self-registered client\'s post_logout_redirect_uri is followed only from a browser signed in to it; otherwise the logout ends on this server\'s page, with or without id_token_hint', async () => {
    const { code, verifier, agent } = await walletCode(server.url, selfRegistered, new Wallet(Wallet.createRandom().privateKey), 'openid read');
    const tokens = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', client_id: selfRegistered, code, code_verifier: verifier, redirect_uri: REDIRECT, resource: RESOURCE }),
    });
    expect(tokens.status).toBe(200);
    const { id_token: idToken } = (await tokens.json()) as { id_token: string };
    expect(idToken).toEqual(expect.any(String));
    const success = `${server.url}/session/end/success`;
    // A fresh browser: with client_id alone, and with an ID token of the client as the hint (whoever registered the
    // client can hold one): the logout goes on, and ends here.
    expect(await logoutLandsAt(new UserAgent(), { client_id: selfRegistered, post_logout_redirect_uri: BYE })).toBe(success);
    expect(await logoutLandsAt(new UserAgent(), { id_token_hint: idToken, post_logout_redirect_uri: BYE })).toBe(success);
    // The browser signed in to the client: sent back to it.
    expect(await logoutLandsAt(agent, { client_id: selfRegistered, post_logout_redirect_uri: BYE })).toBe(BYE);
  });
});
