import { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { baseConfig, insecure, OPAQUE_RESOURCE, REDIRECT, RESOURCE } from '../support/agent-server.js';
import { walletCode } from '../support/races.js';
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
    expect(res.status).toBe(303);
    return new URL(res.headers.get('location')!, url);
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
    ['openid alone', { resource: RESOURCE, scope: 'openid' }],
    ['a scope of the other resource server, requesting it', { resource: OPAQUE_RESOURCE, scope: 'files' }],
  ])('%s: the sign-in page', async (_label, params) => {
    const next = await authorize(params);
    expect(next.origin).toBe(server.url);
    expect(next.pathname).toMatch(/^\/interaction\//);
  });

  test('a token with no scope of its resource server (openid alone) has no scope member, not "scope": "", after a refresh too', async () => {
    const { code, verifier } = await walletCode(server.url, client.clientMetadata().client_id, new Wallet(Wallet.createRandom().privateKey), 'openid');
    const token = async (params: Record<string, string>) => {
      const res = await fetch(`${server.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ client_id: client.clientMetadata().client_id, resource: RESOURCE, ...params }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as Record<string, unknown>;
    };
    const issued = await token({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT });
    expect(issued).not.toHaveProperty('scope');
    expect(JSON.parse(Buffer.from(String(issued.access_token).split('.')[1]!, 'base64url').toString())).not.toHaveProperty('scope');
    const refreshed = await token({ grant_type: 'refresh_token', refresh_token: String(issued.refresh_token) });
    expect(refreshed).not.toHaveProperty('scope');
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
