import { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { authorizeWithWallet } from '../support/user-agent.js';
import { baseConfig, introspect, OPAQUE_RESOURCE, register, REDIRECT, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';

/**
 * One client's credentials in another client's hands: each use is refused, changes nothing for the owner, and
 * reveals nothing. Then the escalations a client may try with its own credentials: wider scopes, other resources.
 */
const wallet = new Wallet('0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6');
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

interface Client {
  id: string;
  secret: string;
  rat: string;
  uri: string;
}

describe('cross-client misuse and escalation', () => {
  let as: AgentServer;
  let issuer: string;
  let a: Client;
  let b: Client;

  const token = (c: Client, params: Record<string, string>) =>
    fetch(`${issuer}/token`, { method: 'POST', headers: { authorization: basic(c.id, c.secret), 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params) });
  const json = async (res: Response) => ({ status: res.status, body: (await res.json()) as Record<string, unknown> });

  async function newClient(): Promise<Client> {
    const res = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read write files' });
    expect(res.status).toBe(201);
    return { id: res.body.client_id as string, secret: res.body.client_secret as string, rat: res.body.registration_access_token as string, uri: res.body.registration_client_uri as string };
  }

  /** A person signs in and consents to `scope` at `resource` for client `c`; returns the code and its verifier. */
  async function code(c: Client, scope: string, resource = RESOURCE): Promise<{ code: string; verifier: string }> {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = new URL(`${issuer}/auth`);
    const params = { client_id: c.id, response_type: 'code', redirect_uri: REDIRECT, scope, resource, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet });
    const value = callback.searchParams.get('code');
    if (!value) throw new Error(`no code: ${callback.href}`);
    return { code: value, verifier };
  }
  const redeem = (c: Client, x: { code: string; verifier: string }, resource = RESOURCE) =>
    token(c, { grant_type: 'authorization_code', code: x.code, code_verifier: x.verifier, redirect_uri: REDIRECT, resource });

  beforeAll(async () => {
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 1000 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read', 'write'] } } }));
    issuer = as.server.url;
    a = await newClient();
    b = await newClient();
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  test("B cannot redeem A's authorization code, and A still can", async () => {
    const x = await code(a, 'read');
    const stolen = await json(await redeem(b, x));
    expect(stolen.status).toBe(400);
    expect(stolen.body.error).toBe('invalid_grant');
    const own = await json(await redeem(a, x));
    expect(own.status).toBe(200);
    expect((await introspect(issuer, own.body.access_token as string)).active).toBe(true);
  });

  test("B cannot refresh with A's refresh token, and A's refresh token keeps working (it was not used up)", async () => {
    const tokens = (await json(await redeem(a, await code(a, 'read')))).body;
    const stolen = await json(await token(b, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, resource: RESOURCE }));
    expect(stolen.status).toBe(400);
    expect(stolen.body.error).toBe('invalid_grant');
    const own = await json(await token(a, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, resource: RESOURCE }));
    expect(own.status).toBe(200);
    expect((await introspect(issuer, own.body.access_token as string)).active).toBe(true);
  });

  test.each([['JWT', RESOURCE, 'read'], ['opaque', OPAQUE_RESOURCE, 'files']])("B's revocation of A's %s access token and refresh token changes nothing (RFC 7009 §2.1)", async (_kind, resource, scope) => {
    const tokens = (await json(await redeem(a, await code(a, scope, resource), resource))).body;
    for (const value of [tokens.access_token as string, tokens.refresh_token as string]) {
      const res = await fetch(`${issuer}/token/revocation`, {
        method: 'POST',
        headers: { authorization: basic(b.id, b.secret), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: value }),
      });
      // A token of another client, JWT or stored: B, a confidential client, is told it may not (RFC 7009 §2.1).
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 400, body: { error: 'invalid_request', error_description: 'client is not authorized to revoke the presented token' } });
    }
    expect((await introspect(issuer, tokens.access_token as string)).active).toBe(true);
    expect((await introspect(issuer, tokens.refresh_token as string)).active).toBe(true);
  });

  test("a public client's revocation of A's JWT, opaque and refresh tokens answers 200 and changes nothing (RFC 7009 §2.1, as oidc-provider answers a public caller)", async () => {
    const pub = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'read files' });
    expect(pub.status).toBe(201);
    const jwt = (await json(await redeem(a, await code(a, 'read')))).body;
    const opaque = (await json(await redeem(a, await code(a, 'files', OPAQUE_RESOURCE), OPAQUE_RESOURCE))).body;
    for (const value of [jwt.access_token, jwt.refresh_token, opaque.access_token] as string[]) {
      const res = await fetch(`${issuer}/token/revocation`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: value, client_id: pub.body.client_id as string }),
      });
      expect(res.status).toBe(200);
      expect((await introspect(issuer, value)).active).toBe(true);
    }
  });

  test("A's registration access token at B's configuration URI is refused and reveals or changes nothing of B", async () => {
    const other = await newClient();
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await fetch(b.uri, {
        method,
        headers: { authorization: `Bearer ${other.rat}`, ...(method === 'PUT' ? { 'content-type': 'application/json' } : {}) },
        ...(method === 'PUT' ? { body: JSON.stringify({ client_id: b.id, redirect_uris: [REDIRECT], client_name: 'hijacked' }) } : {}),
      });
      expect(res.status).toBe(401);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body.error).toBe('invalid_token');
      expect(JSON.stringify(body)).not.toContain(b.id);
    }
    // B is untouched: its own token still reads it, unchanged.
    const read = await fetch(b.uri, { headers: { authorization: `Bearer ${b.rat}` } });
    expect(read.status).toBe(200);
    const body = (await read.json()) as Record<string, unknown>;
    expect(body.client_name).toBeUndefined();
    b.rat = body.registration_access_token as string;
  });

  test('scope escalation: a refresh cannot widen the scope (invalid_scope), and the refresh token is not used up by the attempt', async () => {
    const tokens = (await json(await redeem(a, await code(a, 'read')))).body;
    const wider = await json(await token(a, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, resource: RESOURCE, scope: 'read write' }));
    expect(wider.status).toBe(400);
    expect(wider.body.error).toBe('invalid_scope');
    const same = await json(await token(a, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, resource: RESOURCE, scope: 'read' }));
    expect(same.status).toBe(200);
    expect(same.body.scope).toBe('read');
  });

  test('scope escalation: the token has only what the person consented to, whatever the token request asks', async () => {
    const x = await code(a, 'read');
    // `scope` is not a parameter of the authorization_code grant (RFC 6749 §4.1.3): it is ignored, never honoured.
    const res = await json(await token(a, { grant_type: 'authorization_code', code: x.code, code_verifier: x.verifier, redirect_uri: REDIRECT, resource: RESOURCE, scope: 'read write' }));
    expect(res.status).toBe(200);
    expect(res.body.scope).toBe('read');
  });

  test('resource escalation: a code consented for one resource does not yield a token for another', async () => {
    const x = await code(a, 'read');
    const res = await json(await redeem(a, x, OPAQUE_RESOURCE));
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_target');
  });

  test('client_credentials: a client gets only the scopes it registered (invalid_scope otherwise)', async () => {
    const created = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    expect(created.status).toBe(201);
    const c = { id: created.body.client_id as string, secret: created.body.client_secret as string, rat: '', uri: '' };
    const ok = await json(await token(c, { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }));
    expect(ok.status).toBe(200);
    const wider = await json(await token(c, { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read write' }));
    expect(wider.status).toBe(400);
    expect(wider.body.error).toBe('invalid_scope');
  });

  test('RFC 7592 §2.2: an update that sends back the full read response (with the changed field) is accepted', async () => {
    const c = await newClient();
    const read = await fetch(c.uri, { headers: { authorization: `Bearer ${c.rat}` } });
    expect(read.status).toBe(200);
    const current = (await read.json()) as Record<string, unknown>;
    // Fields the server returned but a client cannot set are there (the defaults oidc-provider fills in).
    expect(current).toHaveProperty('require_auth_time');
    expect(current).toHaveProperty('subject_type');
    const update = { ...current, client_secret: c.secret, client_name: 'Generic client' };
    const res = await fetch(c.uri, {
      method: 'PUT',
      headers: { authorization: `Bearer ${current.registration_access_token as string}`, 'content-type': 'application/json' },
      body: JSON.stringify(update),
    });
    const body = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(200);
    expect(body.client_name).toBe('Generic client');
    expect(body.redirect_uris).toEqual([REDIRECT]);
    expect(body.agentauth_tier).toBe(current.agentauth_tier);
    // A returned field sent back changed is still refused, naming it.
    const changed = await fetch(c.uri, {
      method: 'PUT',
      headers: { authorization: `Bearer ${body.registration_access_token as string}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...current, client_secret: c.secret, registration_access_token: body.registration_access_token, require_auth_time: true }),
    });
    expect(changed.status).toBe(400);
    expect(((await changed.json()) as { error_description: string }).error_description).toMatch(/^require_auth_time cannot be changed/);
  });
});
