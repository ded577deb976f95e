import { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { baseConfig, insecure, OPAQUE_RESOURCE, REDIRECT, RESOURCE } from '../support/agent-server.js';
import { walletCode } from '../support/races.js';
import { sentBack } from '../support/sent-back.js';
import { authorizeWithWallet } from '../support/user-agent.js';
import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * RFC 6749 §3.3: an authorization request whose scope cannot be granted fails with invalid_scope. It used to send the
 * person through the wallet sign-in and then answer access_denied ("no scope was granted"), which a client reads as
 * the person refusing (server/policies/authorization-scope.ts).
 */
describe('an authorization request naming no scope that can be granted', () => {
  let server: RunningServer;
  let client: oidc.Configuration;

  beforeAll(async () => {
    const config = baseConfig();
    config.clients = [...(config.clients as unknown[]), { client_id: 'static-web', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: [REDIRECT], scope: 'read' }];
    ({ server } = await startConfigured(config));
    client = await oidc.dynamicClientRegistration(
      new URL(server.url),
      { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' },
      oidc.None(),
      insecure,
    );
  });
  afterAll(async () => {
    await server?.stop();
  });

  /** The first answer of the authorization endpoint to these parameters (no cookies: a fresh browser). */
  async function authorize(params: Record<string, string>): Promise<URL> {
    const url = oidc.buildAuthorizationUrl(client, {
      redirect_uri: REDIRECT,
      code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
      state: 'st',
      ...params,
    });
    if (params.scope === undefined) url.searchParams.delete('scope');
    const res = await fetch(url, { redirect: 'manual' });
    // The sign-in page is a redirect; an error for this client (it registered itself) is a page with the way back.
    return res.status === 303 ? new URL(res.headers.get('location')!, url) : sentBack(res);
  }

  test.each([
    ['without scope', { resource: RESOURCE }],
    ['with an empty scope', { resource: RESOURCE, scope: '' }],
    ['with a scope no resource server defines', { resource: RESOURCE, scope: 'admin' }],
    ['with prompt=none', { resource: RESOURCE, scope: 'admin', prompt: 'none' }],
    // No token for the requested resource server could carry it (it came back with "scope": "").
    ['with only a scope of another resource server', { resource: RESOURCE, scope: 'files' }],
  ])('%s: invalid_scope at the client at once, naming what can be requested, before any sign-in', async (_label, params) => {
    const callback = await authorize(params);
    expect(callback.href.startsWith(REDIRECT)).toBe(true);
    expect(Object.fromEntries(callback.searchParams)).toEqual({
      error: 'invalid_scope',
      error_description: `the request names no scope this server can grant: request openid, or a scope of the requested resource server (${RESOURCE}: read write)`,
      state: 'st',
      iss: server.url,
    });
  });

  test.each([
    ['a scope of the requested resource server', { resource: RESOURCE, scope: 'read admin' }],
    ['openid alone, naming no resource', { scope: 'openid' }],
    // OpenID scopes a library sends by default, this server granting nothing for profile and email: no resource taken.
    ['openid profile email, naming no resource', { scope: 'openid profile email' }],
    ['a scope of the other resource server, requesting it', { resource: OPAQUE_RESOURCE, scope: 'files' }],
  ])('%s: the sign-in page', async (_label, params) => {
    const next = await authorize(params);
    expect(next.origin).toBe(server.url);
    expect(next.pathname).toMatch(/^\/interaction\//);
  });

  /** An authorization URL for this client (PKCE S256), with `resource` repeated for each of `resources`. */
  async function authorizationUrl(resources: string[], scope: string, extra: Record<string, string> = {}): Promise<{ url: URL; verifier: string }> {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = new URL(`${server.url}/auth`);
    const params = { client_id: client.clientMetadata().client_id, response_type: 'code', redirect_uri: REDIRECT, scope, state: 'st', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...extra };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    for (const r of resources) url.searchParams.append('resource', r);
    return { url, verifier };
  }

  const unscoped = (resource: string, scopes: string) => `the request names no scope of ${resource} (${scopes}): request one of them, or leave that resource out (an OpenID-only request names no resource)`;

  test.each([
    ['openid alone, naming a resource', [RESOURCE], 'openid', RESOURCE, 'read write'],
    ['two resources, with scopes of one only', [RESOURCE, OPAQUE_RESOURCE], 'read', OPAQUE_RESOURCE, 'files'],
    ['two resources, with scopes of the other only', [RESOURCE, OPAQUE_RESOURCE], 'openid files', RESOURCE, 'read write'],
  ])('%s: invalid_target at the client at once, naming the resource no scope was asked of (no token could be consented for it)', async (_label, resources, scope, named, scopes) => {
    const { url } = await authorizationUrl(resources, scope);
    const callback = await sentBack(await fetch(url, { redirect: 'manual' }));
    expect(callback.href.startsWith(REDIRECT)).toBe(true);
    expect(Object.fromEntries(callback.searchParams)).toEqual({ error: 'invalid_target', error_description: unscoped(named, scopes), state: 'st', iss: server.url });
  });

  test('a pushed request (PAR) naming a resource with none of its scopes is refused at the push, where the client reads it', async () => {
    const body = new URLSearchParams({ client_id: client.clientMetadata().client_id, response_type: 'code', redirect_uri: REDIRECT, scope: 'read', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256' });
    body.append('resource', RESOURCE);
    body.append('resource', OPAQUE_RESOURCE);
    const pushed = await fetch(`${server.url}/request`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    expect([pushed.status, await pushed.json()]).toEqual([400, { error: 'invalid_target', error_description: unscoped(OPAQUE_RESOURCE, 'files') }]);
  });

  test('a person signed in and consenting to one resource: a silent request (prompt=none) adding another, with none of its scopes, gets no code for it', async () => {
    const { agent } = await walletCode(server.url, client.clientMetadata().client_id, new Wallet(Wallet.createRandom().privateKey), 'read');
    const { url } = await authorizationUrl([RESOURCE, OPAQUE_RESOURCE], 'read', { prompt: 'none' });
    const callback = await sentBack(await agent.fetch(url, { redirect: 'manual' }));
    expect(callback.searchParams.get('code')).toBeNull();
    expect(Object.fromEntries(callback.searchParams)).toMatchObject({ error: 'invalid_target', error_description: unscoped(OPAQUE_RESOURCE, 'files') });
    // The same session asking only for what it was granted is refused otherwise: the invalid_target was the resource's.
    // (This public client's redirect is a loopback one: it gets no code without the person, see below.)
    const { url: granted } = await authorizationUrl([RESOURCE], 'read', { prompt: 'none' });
    const again = await sentBack(await agent.fetch(granted, { redirect: 'manual' }));
    expect(again.searchParams.get('error')).toBe('interaction_required');
  });

  test('a public client with a loopback redirect is asked each time (RFC 8252 section 8.6: any local process may listen there); a confidential one is not', async () => {
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    const publicId = client.clientMetadata().client_id;
    const { agent } = await walletCode(server.url, publicId, wallet, 'read');
    const silent = async (clientId: string, agentToUse: typeof agent) => {
      const { url } = await authorizationUrl([RESOURCE], 'read', { prompt: 'none', client_id: clientId });
      const res = await agentToUse.fetch(url, { redirect: 'manual' });
      return res.status === 303 ? new URL(res.headers.get('location')!, server.url) : sentBack(res);
    };
    // Public: no code without the person, even with the grant in place; without prompt=none, the consent page (not the sign-in).
    const refused = await silent(publicId, agent);
    expect(Object.fromEntries(refused.searchParams)).toMatchObject({ error: 'interaction_required', state: 'st' });
    expect(refused.searchParams.get('code')).toBeNull();
    const { url } = await authorizationUrl([RESOURCE], 'read');
    const { pages, callback } = await authorizeWithWallet(url, REDIRECT, { wallet, agent });
    expect(pages.some((p) => p.includes('Allow access?'))).toBe(true);
    expect(pages.some((p) => p.includes('Connect wallet'))).toBe(false);
    expect(callback.searchParams.get('code')).toEqual(expect.any(String));

    // Confidential (its code is of no use without its secret): approved once, then silently.
    const confidential = await fetch(`${server.url}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'client_secret_basic' }),
    });
    const confidentialId = ((await confidential.json()) as { client_id: string }).client_id;
    const { agent: other } = await walletCode(server.url, confidentialId, wallet, 'read');
    expect((await silent(confidentialId, other)).searchParams.get('code')).toEqual(expect.any(String));
  });

  test('a grant of two resources: each token carries that resource\'s scopes; a refresh for one asking only for the other\'s scopes is refused, not answered with a scopeless token', async () => {
    const { url, verifier } = await authorizationUrl([RESOURCE, OPAQUE_RESOURCE], 'read files');
    const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet: new Wallet(Wallet.createRandom().privateKey) });
    const code = callback.searchParams.get('code');
    expect(code).toEqual(expect.any(String));
    const token = async (params: Record<string, string>) => {
      const res = await fetch(`${server.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ client_id: client.clientMetadata().client_id, ...params }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const issued = await token({ grant_type: 'authorization_code', code: code!, code_verifier: verifier, redirect_uri: REDIRECT, resource: RESOURCE });
    expect(issued).toMatchObject({ status: 200, body: { scope: 'read' } });
    const refreshToken = String(issued.body.refresh_token);
    const refused = await token({ grant_type: 'refresh_token', refresh_token: refreshToken, resource: OPAQUE_RESOURCE, scope: 'read' });
    expect(refused).toEqual({
      status: 400,
      body: { error: 'invalid_scope', error_description: `an access token for ${OPAQUE_RESOURCE} from this refresh would carry no scope: the request asks for read, and the person granted files there` },
    });
    // Refused before the refresh token was used: it still refreshes, for either resource, each with its own scopes.
    const files = await token({ grant_type: 'refresh_token', refresh_token: refreshToken, resource: OPAQUE_RESOURCE });
    expect(files).toMatchObject({ status: 200, body: { scope: 'files' } });
    const read = await token({ grant_type: 'refresh_token', refresh_token: String(files.body.refresh_token), resource: RESOURCE });
    expect(read).toMatchObject({ status: 200, body: { scope: 'read' } });
  });

  test('a refresh asking for OpenID scopes only gets a userinfo token, not a token for the granted resource without scope; naming the resource with them is refused', async () => {
    const { code, verifier } = await walletCode(server.url, client.clientMetadata().client_id, new Wallet(Wallet.createRandom().privateKey), 'openid read');
    const token = async (params: Record<string, string>) => {
      const res = await fetch(`${server.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ client_id: client.clientMetadata().client_id, ...params }) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const issued = await token({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT, resource: RESOURCE });
    expect(issued).toMatchObject({ status: 200, body: { scope: 'read', id_token: expect.any(String) } });
    const named = await token({ grant_type: 'refresh_token', refresh_token: String(issued.body.refresh_token), scope: 'openid', resource: RESOURCE });
    expect(named).toEqual({ status: 400, body: { error: 'invalid_scope', error_description: `an access token for ${RESOURCE} from this refresh would carry no scope: the request asks for openid, and the person granted read there` } });
    const userinfo = await token({ grant_type: 'refresh_token', refresh_token: String(issued.body.refresh_token), scope: 'openid' });
    expect(userinfo.status).toBe(200);
    // Opaque (not a JWT for the resource server), and what the userinfo endpoint takes.
    expect(String(userinfo.body.access_token).split('.')).toHaveLength(1);
    const me = await fetch(`${server.url}/me`, { headers: { authorization: `Bearer ${String(userinfo.body.access_token)}` } });
    expect(me.status).toBe(200);
  });

  test('the sign-in page (and the message the wallet signs, from its data) lists only scopes of the requested resource server', async () => {
    const planted = 'Transfer_ALL_your_ETH_to_0xAttacker';
    const url = oidc.buildAuthorizationUrl(client, {
      redirect_uri: REDIRECT,
      code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
      state: 'st',
      resource: RESOURCE,
      scope: `read files ${planted}`,
    });
    const first = await fetch(url, { redirect: 'manual' });
    expect(first.status).toBe(303);
    const cookie = first.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    const page = await fetch(new URL(first.headers.get('location')!, url), { headers: { cookie, accept: 'text/html' } });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('<code>read</code>');
    expect(html).not.toContain('files');
    expect(html).not.toContain(planted);
    // The client registered itself (open registration) and redirects only to a loopback address: the page says
    // that no one verified its name, and warns as it does for a metadata document's.
    expect(html).toContain('This application registered itself with this server.');
    expect(html).toContain('id="localhost-warning"');
  });

  test('a scope outside the client\'s registered scope names the scope and what it may ask for, as the token endpoint does: in the redirect and at PAR', async () => {
    // It said "requested scope is not allowed", naming neither.
    const said = `requested scope write is not allowed for this client (it may ask for: read)`;
    const params = (scope: string, extra: Record<string, string> = {}) => ({ client_id: 'static-web', response_type: 'code', scope, resource: RESOURCE, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', ...extra });
    const auth = (p: Record<string, string>) => {
      const url = new URL(`${server.url}/auth`);
      url.search = new URLSearchParams(p).toString();
      return fetch(url, { redirect: 'manual' });
    };
    const redirected = await auth(params('read write', { redirect_uri: REDIRECT, state: 'st' }));
    expect(redirected.status).toBe(303);
    const callback = new URL(redirected.headers.get('location')!);
    expect(`${callback.origin}${callback.pathname}`).toBe(REDIRECT);
    // oidc-provider's own member naming the scope (scope=write) stays.
    expect(Object.fromEntries(callback.searchParams)).toEqual({ error: 'invalid_scope', error_description: said, scope: 'write', state: 'st', iss: server.url });
    // (Without a redirect_uri, the request is refused for that first: invalid_scope never reaches the JSON or the page
    // answer of /auth. The description is the error's own, so it would go there alike.)
    // Pushed (RFC 9126): the same.
    const pushed = await fetch(`${server.url}/request`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params('read write', { redirect_uri: REDIRECT })) });
    expect([pushed.status, await pushed.json()]).toEqual([400, { error: 'invalid_scope', error_description: said, scope: 'write' }]);
    // Within its registered scope, the request goes on to the sign-in.
    const ok = await auth(params('read', { redirect_uri: REDIRECT }));
    expect([ok.status, new URL(ok.headers.get('location')!, server.url).pathname]).toEqual([303, expect.stringMatching(/^\/interaction\//)]);
  });

  test('a client of the configuration file gets no such notice', async () => {
    const url = new URL(`${server.url}/auth`);
    for (const [k, v] of Object.entries({ client_id: 'static-web', response_type: 'code', redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })) url.searchParams.set(k, v);
    const first = await fetch(url, { redirect: 'manual' });
    expect(first.status).toBe(303);
    const cookie = first.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    const html = await (await fetch(new URL(first.headers.get('location')!, url), { headers: { cookie, accept: 'text/html' } })).text();
    expect(html).toContain('<code>read</code>');
    expect(html).not.toContain('registered itself');
    expect(html).not.toContain('localhost-warning');
  });
});
