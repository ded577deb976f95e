import * as oidc from 'openid-client';

import { baseConfig, insecure, OPAQUE_RESOURCE, REDIRECT, RESOURCE } from '../support/agent-server.js';
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
    ({ server } = await startConfigured(baseConfig()));
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
});
