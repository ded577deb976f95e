import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import type { AuditRecord } from '../../adapters/types.js';
import { freePort } from '../support/ferretdb.js';
import { baseConfig, OPAQUE_RESOURCE, RESOURCE, RS_CLIENT, register, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { newKek, runCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { refuseWrites, whileRefusing } from '../support/store-file.js';

/**
 * Client administration (issue 13 item 1): the admin API on its own loopback listener and `agentauth clients ...`,
 * on two `agentauth start` processes sharing one SQLite data directory. A disable through one process's admin API
 * (or the CLI) takes effect at once in the other: token requests refused, old tokens introspected inactive.
 */
const ADMIN_TOKEN = randomBytes(32).toString('base64url');
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

let a: RunningServer;
let b: RunningServer;
let adminA: string;
let adminB: string;
let env: Record<string, string>;
let envB: Record<string, string>;

interface Registered {
  id: string;
  secret: string;
  registration?: Record<string, unknown>;
}

async function admin(base: string, method: string, path: string, token: string | null = ADMIN_TOKEN): Promise<{ status: number; body: Record<string, unknown>; text: string; headers: Headers }> {
  const res = await fetch(`${base}${path}`, { method, headers: token === null ? {} : { authorization: `Bearer ${token}` } });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, text, headers: res.headers };
}

async function tokenRequest(issuer: string, client: Registered, resource = RESOURCE, scope = 'read'): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: basic(client.id, client.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function introspectAt(issuer: string, token: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: { authorization: basic(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

async function newIat(): Promise<string> {
  const r = await runCli(['clients', 'iat', 'create'], env);
  expect(r.code).toBe(0);
  return r.stdout.trim();
}

async function registerClient(metadata: Record<string, unknown> = {}): Promise<Registered> {
  const iat = await newIat();
  const r = await register(a.url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read files', ...metadata }, { headers: { authorization: `Bearer ${iat}` } });
  expect(r.status).toBe(201);
  return { id: r.body.client_id as string, secret: r.body.client_secret as string, registration: r.body };
}

/** Every audit record, through `agentauth audit export` (node:sqlite cannot be loaded inside jest). */
async function auditRecords(): Promise<AuditRecord[]> {
  const r = await runCli(['audit', 'export'], env);
  expect(r.code).toBe(0);
  return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AuditRecord);
}

const clientPath = (c: Registered, action = '') => `/admin/clients/${encodeURIComponent(c.id)}${action}`;

/**
 * Delete through A's admin API and rotate-secret through `rotateVia` at the same moment: whichever runs first, the
 * client ends deleted as both processes see it, and a secret the rotation answered does not work.
 */
async function deleteBesideRotate(rotateVia: string): Promise<void> {
  const deleted = await registerClient();
  const [del, rot] = await Promise.all([admin(adminA, 'DELETE', clientPath(deleted)), admin(rotateVia, 'POST', clientPath(deleted, '/rotate-secret'))]);
  expect(del.status).toBe(204);
  expect([200, 404]).toContain(rot.status);
  expect((await admin(adminA, 'GET', clientPath(deleted))).status).toBe(404);
  expect((await admin(adminB, 'GET', clientPath(deleted))).status).toBe(404);
  if (rot.status === 200) expect((await tokenRequest(a.url, { id: deleted.id, secret: rot.body.client_secret as string })).status).toBe(401);
}

beforeAll(async () => {
  const [portA, portB, adminPortA, adminPortB] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const config = baseConfig({ registration: { mode: 'token', quota: { max: 1000 } } });
  env = {
    AGENTAUTH_DATA_DIR: tempDir('agentauth-admin-'),
    AGENTAUTH_KEK: newKek(),
    AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN,
    ISSUER: `http://localhost:${portA}`,
    TRUST_PROXY: 'true',
    AGENTAUTH_CONFIG: writeConfig(tempDir(), { ...config, admin: { port: adminPortA } }),
  };
  envB = { ...env, AGENTAUTH_CONFIG: writeConfig(tempDir(), { ...config, admin: { port: adminPortB } }) };
  a = await startServer(env, portA);
  b = await startServer(envB, portB);
  adminA = `http://127.0.0.1:${adminPortA}`;
  adminB = `http://127.0.0.1:${adminPortB}`;
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
});

/** Server B answers under A's public name (as behind one proxy), so A's issuer and token audiences hold there too. */
const atB = (path: string) => ({ url: `${b.url}${path}`, headers: { 'x-forwarded-host': new URL(a.url).host } });
async function tokenRequestAtB(client: Registered): Promise<{ status: number; body: Record<string, unknown> }> {
  const t = atB('/token');
  const res = await fetch(t.url, {
    method: 'POST',
    headers: { ...t.headers, authorization: basic(client.id, client.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}
async function introspectAtB(token: string): Promise<Record<string, unknown>> {
  const t = atB('/token/introspection');
  const res = await fetch(t.url, {
    method: 'POST',
    headers: { ...t.headers, authorization: basic(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Record<string, unknown>;
}

describe('the admin listener', () => {
  test('is a separate listener: the public port serves no admin route', async () => {
    expect((await fetch(`${a.url}/admin/clients`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(404);
    expect((await admin(adminA, 'GET', '/admin/health', null)).body).toEqual({ status: 'ok', storage: 'ok' });
  });

  test.each([
    ['no Authorization header', null, 'invalid_request', 'Bearer realm="agentauth-admin"'],
    ['a wrong token', `${ADMIN_TOKEN.slice(0, -2)}xx`, 'invalid_token', 'Bearer realm="agentauth-admin", error="invalid_token"'],
    ['a token of another length', 'short', 'invalid_token', 'Bearer realm="agentauth-admin", error="invalid_token"'],
  ])('refuses %s with 401 and WWW-Authenticate, on every admin route', async (_name, token, error, challenge) => {
    // Paths and methods no route serves too (a 404 or a 405 with Allow would map the routes for a caller without the
    // token), and a path that cannot be decoded.
    for (const [method, path] of [['GET', '/admin/clients'], ['GET', '/admin/clients/x'], ['POST', '/admin/clients/x/disable'], ['POST', '/admin/clients/x/enable'], ['POST', '/admin/clients/x/rotate-secret'], ['DELETE', '/admin/clients/x'], ['GET', '/admin/iats'], ['DELETE', '/admin/iats/x'], ['GET', '/admin/nothing'], ['OPTIONS', '/admin/clients'], ['PUT', '/admin/clients'], ['POST', '/admin/health'], ['GET', '/admin/%ZZ']] as const) {
      const r = await admin(adminA, method, path, token);
      expect([path, r.status]).toEqual([path, 401]);
      expect(r.headers.get('www-authenticate')).toBe(challenge);
      expect(r.body.error).toBe(error);
    }
  });

  test('refuses another scheme (Basic with the token as password)', async () => {
    const res = await fetch(`${adminA}/admin/clients`, { headers: { authorization: basic('admin', ADMIN_TOKEN) } });
    expect(res.status).toBe(401);
  });

  test('serves this process\'s Prometheus metrics at GET /metrics, with the admin credential only, and echoes a request id', async () => {
    expect((await admin(adminA, 'GET', '/metrics', null)).status).toBe(401);
    expect((await admin(adminA, 'GET', '/metrics', 'not-the-admin-token')).status).toBe(401);
    await fetch(`${a.url}/.well-known/oauth-authorization-server`);
    const res = await fetch(`${adminA}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'x-request-id': 'scrape-1' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(res.headers.get('x-request-id')).toBe('scrape-1');
    const text = await res.text();
    expect(text).toMatch(/^agentauth_http_requests_total\{[^}]*route="oauth_authorization_server_metadata"[^}]*\} [1-9]/m);
    expect(text).toMatch(/^agentauth_signing_keys\{state="active"\} 1$/m);
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
  });

  test('with the token: unknown routes are 404, a known path with another method 405 with Allow; /admin/health needs none', async () => {
    expect((await admin(adminA, 'GET', '/admin/health', null)).status).toBe(200);
    expect((await admin(adminA, 'GET', '/admin/nothing')).status).toBe(404);
    const r = await admin(adminA, 'PUT', '/admin/clients');
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('GET');
  });
});

describe('client administration through the admin API', () => {
  test('the list comes in pages (limit, after, next): every client once, the configuration file\'s on the first page; bad paging is 400', async () => {
    for (let i = 0; i < 3; i += 1) await registerClient({ client_name: `paged agent ${i}` });
    const seen: string[] = [];
    let pages = 0;
    for (let after: string | undefined; ; ) {
      const page = await admin(adminA, 'GET', `/admin/clients?limit=2${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`);
      expect(page.status).toBe(200);
      const views = page.body.clients as Array<{ client_id: string; source: string }>;
      expect(views.filter((v) => v.source === 'registered').length).toBeLessThanOrEqual(2);
      if (pages > 0) expect(views.some((v) => v.source === 'configuration')).toBe(false);
      seen.push(...views.map((v) => v.client_id));
      pages += 1;
      if (page.body.next === undefined) break;
      expect(page.body.next).toBe(views.at(-1)!.client_id);
      after = page.body.next as string;
    }
    const all = (await admin(adminA, 'GET', '/admin/clients?limit=1000')).body.clients as Array<{ client_id: string }>;
    expect(seen).toEqual(all.map((v) => v.client_id));
    expect(new Set(seen).size).toBe(seen.length);
    expect(pages).toBeGreaterThan(1);
    // The CLI writes every page, as one JSON array.
    const listed = await runCli(['clients', 'list'], env);
    expect(listed.code).toBe(0);
    expect((JSON.parse(listed.stdout) as Array<{ client_id: string }>).map((v) => v.client_id)).toEqual(seen);
    for (const query of ['limit=0', 'limit=1001', 'limit=abc', 'limit=01', 'limit=1&limit=2', 'after=a&after=b', 'offset=3', 'after=%24x']) {
      const r = await admin(adminA, 'GET', `/admin/clients?${query}`);
      expect({ query, status: r.status, error: r.body.error }).toEqual({ query, status: 400, error: 'invalid_request' });
    }
  });

  test('list and show give metadata and state, never a secret or its hash', async () => {
    const c = await registerClient({ client_name: 'listed agent' });
    const list = await admin(adminA, 'GET', '/admin/clients');
    expect(list.status).toBe(200);
    const views = list.body.clients as Array<Record<string, unknown>>;
    expect(views.find((v) => v.client_id === c.id)).toMatchObject({ source: 'registered', disabled: false, has_secret: true, metadata: { client_name: 'listed agent' } });
    expect(views.find((v) => v.client_id === RS_CLIENT.id)).toMatchObject({ source: 'configuration', has_secret: true });
    const shown = await admin(adminB, 'GET', `/admin/clients/${encodeURIComponent(c.id)}`);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ client_id: c.id, disabled: false });
    for (const text of [list.text, shown.text]) {
      expect(text).not.toContain(c.secret);
      expect(text).not.toContain(RS_CLIENT.secret);
      expect(text).not.toContain('hmac-sha256');
      expect(text).not.toContain('client_secret"');
      expect(text).not.toContain('registration_access_token');
    }
  });

  test('an unknown client is 404, a malformed id 400, a client of the configuration file 409 for changes', async () => {
    const unknown = await admin(adminA, 'GET', '/admin/clients/no-such-client');
    expect(unknown.status).toBe(404);
    expect(unknown.body).toEqual({ error: 'not_found', error_description: 'no client no-such-client' });
    for (const [method, path] of [['POST', '/admin/clients/no-such-client/disable'], ['POST', '/admin/clients/no-such-client/enable'], ['POST', '/admin/clients/no-such-client/rotate-secret'], ['DELETE', '/admin/clients/no-such-client']] as const) {
      expect((await admin(adminA, method, path)).status).toBe(404);
    }
    const malformed = await admin(adminA, 'GET', '/admin/clients/%24where');
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toBe('invalid_request');
    expect((await admin(adminA, 'GET', '/admin/clients/%C3%A9t%C3%A9')).status).toBe(400);
    const configured = await admin(adminA, 'POST', `/admin/clients/${RS_CLIENT.id}/disable`);
    expect(configured.status).toBe(409);
    expect(configured.body.error_description).toMatch(/configuration file/);
  });

  test('a client asking for a scope outside its registered scope is told which, and what it may ask for (invalid_scope)', async () => {
    const c = await registerClient();
    const wide = await tokenRequest(a.url, c, RESOURCE, 'read write');
    // oidc-provider said "requested scope is not allowed", naming the scope only in a member of its own.
    expect([wide.status, wide.body.error, wide.body.error_description]).toEqual([400, 'invalid_scope', 'requested scope write is not allowed for this client (it may ask for: read files)']);
  });

  test('a token asked for the moment an enable answers is active: JWT and opaque, in both processes, three rounds of disable and enable', async () => {
    const c = await registerClient();
    for (let round = 1; round <= 3; round += 1) {
      expect((await admin(adminA, 'POST', clientPath(c, '/disable'))).status).toBe(200);
      const enabled = await admin(round % 2 ? adminB : adminA, 'POST', clientPath(c, '/enable'));
      expect(enabled.status).toBe(200);
      // Tokens are dated in whole seconds, and those of the disable's second are revoked with it: the enable answered
      // within that second, and these tokens were answered and inactive from their first use.
      const [jwt, opaque] = await Promise.all([tokenRequestAtB(c), tokenRequest(a.url, c, OPAQUE_RESOURCE, 'files')]);
      expect([round, jwt.status, opaque.status]).toEqual([round, 200, 200]);
      expect([round, (await introspectAt(a.url, jwt.body.access_token as string)).active, (await introspectAtB(opaque.body.access_token as string)).active]).toEqual([round, true, true]);
    }
  });

  test('disable through one process takes effect at once in the other: tokens refused, old tokens inactive; enable restores issuance only', async () => {
    const c = await registerClient();
    const jwt = await tokenRequest(a.url, c);
    const opaque = await tokenRequest(a.url, c, OPAQUE_RESOURCE, 'files');
    expect([jwt.status, opaque.status]).toEqual([200, 200]);
    const jwtToken = jwt.body.access_token as string;
    const opaqueToken = opaque.body.access_token as string;
    expect((await introspectAtB(jwtToken)).active).toBe(true);
    expect((await introspectAtB(opaqueToken)).active).toBe(true);

    const disabled = await admin(adminA, 'POST', `/admin/clients/${encodeURIComponent(c.id)}/disable`);
    expect(disabled.status).toBe(200);
    expect(disabled.body).toMatchObject({ client_id: c.id, disabled: true });

    // Process B, right away: no token, and the tokens issued by A are inactive.
    const refused = await tokenRequestAtB(c);
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    expect(refused.body.error_description).toBe(`client ${c.id} is disabled by the operator of this authorization server`);
    expect((await introspectAtB(jwtToken)).active).toBe(false);
    expect((await introspectAtB(opaqueToken)).active).toBe(false);
    // `agentauth verify` with the store says so too: the signature is valid, the token revoked by the disable.
    const verified = await runCli(['verify', jwtToken, '--json'], env);
    expect(JSON.parse(verified.stdout)).toMatchObject({ signature: 'valid', revoked: true });
    expect((JSON.parse(verified.stdout) as { revocation: string[] }).revocation).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`^client ${c.id} was disabled at .*: its tokens up to then are revoked$`)), expect.stringMatching(/^client .* disabled at .*, after this token was issued \(audit/)]));
    expect((await tokenRequest(a.url, c)).status).toBe(401);
    expect((await admin(adminB, 'GET', `/admin/clients/${encodeURIComponent(c.id)}`)).body).toMatchObject({ disabled: true });
    // The authorization endpoint too: no sign-in starts for it.
    const auth = await fetch(`${b.url}/auth?${new URLSearchParams({ client_id: c.id, response_type: 'code', scope: 'read', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' })}`, { headers: atB('/auth').headers, redirect: 'manual' });
    expect(auth.status).toBe(400);
    expect(await auth.text()).toContain('is disabled by the operator');

    const enabled = await admin(adminB, 'POST', `/admin/clients/${encodeURIComponent(c.id)}/enable`);
    expect(enabled.status).toBe(200);
    expect(enabled.body).toMatchObject({ disabled: false });
    const issuedAtB = await tokenRequestAtB(c);
    expect(issuedAtB.status).toBe(200);
    // What the disable revoked stays revoked: the stored opaque token was removed, and the JWT (client_credentials:
    // no grant behind it) was issued before the disable.
    expect((await introspectAtB(opaqueToken)).active).toBe(false);
    expect((await introspectAtB(jwtToken)).active).toBe(false);
    // Asked for at once after the enable, with no wait: active (the enable waited for the disable's second to pass).
    expect((await introspectAtB(issuedAtB.body.access_token as string)).active).toBe(true);
    const fresh = await tokenRequest(a.url, c);
    expect((await introspectAtB(fresh.body.access_token as string)).active).toBe(true);

    // The client's own RFC 7592 update (kept through the disable) does not clear what the disable recorded.
    const reg = c.registration!;
    const put = await fetch(reg.registration_client_uri as string, {
      method: 'PUT',
      headers: { authorization: `Bearer ${reg.registration_access_token as string}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: c.id, client_secret: c.secret, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read files', client_name: 'updated' }),
    });
    expect(put.status).toBe(200);
    expect((await admin(adminA, 'GET', `/admin/clients/${encodeURIComponent(c.id)}`)).body).toMatchObject({ disabled: false, metadata: { client_name: 'updated' } });
    expect((await introspectAtB(jwtToken)).active).toBe(false);
    expect((await introspectAtB(fresh.body.access_token as string)).active).toBe(true);
  });

  test('a disabled client\'s own registration access token is refused while it is disabled, and works again once it is enabled', async () => {
    const c = await registerClient();
    const other = await registerClient();
    const reg = c.registration!;
    const rat = reg.registration_access_token as string;
    const otherRat = other.registration!.registration_access_token as string;
    const id = encodeURIComponent(c.id);
    // Every spelling oidc-provider's router takes for the configuration endpoint, on both processes.
    const uris = [`${a.url}/reg/${id}`, `${a.url}/REG/${id}/`, `${b.url}/Reg/${id}`];
    const manage = (uri: string, method: string, token: string) =>
      fetch(uri, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-forwarded-host': new URL(a.url).host },
        ...(method === 'PUT' ? { body: JSON.stringify({ client_id: c.id, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read', client_name: 'while disabled' }) } : {}),
      }).then(async (r) => ({ status: r.status, body: (await r.json().catch(() => ({}))) as Record<string, unknown> }));

    expect((await admin(adminA, 'POST', clientPath(c, '/disable'))).status).toBe(200);
    for (const uri of uris) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const r = await manage(uri, method, rat);
        expect({ uri, method, status: r.status, error: r.body.error }).toEqual({ uri, method, status: 401, error: 'invalid_token' });
        expect(r.body.error_description).toBe(`client ${c.id} is disabled by the operator of this authorization server; its registration access token works again once it is enabled`);
      }
    }
    // Nothing was changed by the refused update and delete.
    expect((await admin(adminA, 'GET', clientPath(c))).body).toMatchObject({ disabled: true });
    expect((await admin(adminA, 'GET', clientPath(c))).body.metadata).not.toMatchObject({ client_name: 'while disabled' });

    expect((await admin(adminB, 'POST', clientPath(c, '/enable'))).status).toBe(200);
    const read = await manage(uris[0]!, 'GET', rat);
    expect(read.status).toBe(200);
    expect(read.body.client_id).toBe(c.id);

    // Another client's token at the disabled client's URI is still treated as leaked: refused and destroyed.
    expect((await admin(adminA, 'POST', clientPath(c, '/disable'))).status).toBe(200);
    expect((await manage(uris[0]!, 'GET', otherRat)).status).toBe(401);
    expect((await manage(`${a.url}/reg/${encodeURIComponent(other.id)}`, 'GET', otherRat)).status).toBe(401);
    expect((await admin(adminA, 'POST', clientPath(c, '/enable'))).status).toBe(200);
  });

  test('rotate-secret answers the new secret once; the old one stops working at once everywhere', async () => {
    const c = await registerClient();
    const r = await admin(adminA, 'POST', `/admin/clients/${encodeURIComponent(c.id)}/rotate-secret`);
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    const secret = r.body.client_secret as string;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{80,}$/);
    expect(secret).not.toBe(c.secret);
    const old = await tokenRequestAtB(c);
    expect([old.status, old.body.error]).toEqual([401, 'invalid_client']);
    expect((await tokenRequestAtB({ id: c.id, secret })).status).toBe(200);
    expect((await admin(adminA, 'GET', `/admin/clients/${encodeURIComponent(c.id)}`)).text).not.toContain(secret);

    const configured = await admin(adminA, 'POST', `/admin/clients/${RS_CLIENT.id}/rotate-secret`);
    expect(configured.status).toBe(409);
    const pub = await registerClient({ token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: ['http://127.0.0.1:65000/cb'], scope: 'read' });
    const none = await admin(adminA, 'POST', `/admin/clients/${encodeURIComponent(pub.id)}/rotate-secret`);
    expect(none.status).toBe(409);
    expect(none.body.error_description).toMatch(/authenticates with none and has no client secret/);
  });

  test('delete removes the client and revokes what it held; a second delete is 404', async () => {
    const c = await registerClient();
    const opaque = (await tokenRequest(a.url, c, OPAQUE_RESOURCE, 'files')).body.access_token as string;
    const jwt = (await tokenRequest(a.url, c)).body.access_token as string;
    const del = await admin(adminB, 'DELETE', `/admin/clients/${encodeURIComponent(c.id)}`);
    expect(del.status).toBe(204);
    expect((await admin(adminA, 'GET', `/admin/clients/${encodeURIComponent(c.id)}`)).status).toBe(404);
    expect((await tokenRequest(a.url, c)).status).toBe(401);
    expect((await introspectAt(a.url, opaque)).active).toBe(false);
    expect((await introspectAt(a.url, jwt)).active).toBe(false);
    expect((await admin(adminB, 'DELETE', `/admin/clients/${encodeURIComponent(c.id)}`)).status).toBe(404);
  });

  test('a delete whose revocation mark cannot be written: 503 and the client is still there, with what it held; the next delete removes it', async () => {
    const c = await registerClient();
    const jwt = (await tokenRequest(a.url, c)).body.access_token as string;
    const db = new DatabaseSync(join(env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite'));
    db.exec('PRAGMA busy_timeout = 10000');
    try {
      const failed = await whileRefusing({ server: a, db }, refuseWrites('refuse_marks', 'INSERT', 'revoked_tokens'), () => admin(adminA, 'DELETE', clientPath(c)));
      expect(failed.status).toBe(503);
      // Not removed without its revocation mark (before, the record went first, and nothing could finish the revocation).
      expect(db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'Client' AND id = ?").get(c.id)).toEqual({ n: 1 });
      // The claim of the failed delete on the client's record lapses after 60 s (server/admin/client-writes.ts): removed here.
      db.exec("DELETE FROM attempts WHERE key LIKE 'client-rev:%'");
      expect((await admin(adminA, 'DELETE', clientPath(c))).status).toBe(204);
      expect((await introspectAt(a.url, jwt)).active).toBe(false);
      expect(db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'Client' AND id = ?").get(c.id)).toEqual({ n: 0 });
    } finally {
      db.close();
    }
  });

  test('concurrent changes of one client through one admin API run one after another: a delete or disable is never undone by a rotate-secret answered beside it', async () => {
    const path = clientPath;
    for (let round = 0; round < 5; round += 1) {
      await deleteBesideRotate(adminA);
      // Disable and rotate-secret at the same moment: the client ends disabled, with either secret refused.
      const disabled = await registerClient();
      const [dis, rot2] = await Promise.all([admin(adminA, 'POST', path(disabled, '/disable')), admin(adminA, 'POST', path(disabled, '/rotate-secret'))]);
      expect([dis.status, rot2.status]).toEqual([200, 200]);
      expect((await admin(adminA, 'GET', path(disabled))).body.disabled).toBe(true);
      const refused = await tokenRequest(a.url, { id: disabled.id, secret: rot2.body.client_secret as string });
      expect([refused.status, refused.body.error]).toEqual([401, 'invalid_client']);
    }
    // 20 disables and 20 enables at once: the audit trail reads in the order they took effect, and the state is
    // the last one's.
    const flipped = await registerClient();
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => admin(adminA, 'POST', path(flipped, i % 2 ? '/enable' : '/disable'))));
    expect(answers.every((r) => r.status === 200)).toBe(true);
    const mine = (await auditRecords()).filter((r) => r.client_id === flipped.id && (r.type === 'client.disabled' || r.type === 'client.enabled'));
    expect(mine).toHaveLength(40);
    let state = false;
    for (const r of mine) {
      const already = Boolean(r.details.already_disabled ?? r.details.already_enabled);
      expect(already).toBe(r.type === 'client.disabled' ? state : !state);
      state = r.type === 'client.disabled';
    }
    expect((await admin(adminA, 'GET', path(flipped))).body.disabled).toBe(state);
  });

  test('changes of one client through two processes at once (each one\'s admin API, and the client\'s own RFC 7592 update) never undo a delete or a disable', async () => {
    const path = clientPath;
    for (let round = 0; round < 5; round += 1) {
      await deleteBesideRotate(adminB);

      // Disable through B while A answers a rotate-secret and the client's own update: it ends disabled, both changes
      // kept (the update's name, the rotated secret's hash), and no secret works.
      const disabled = await registerClient();
      const reg = disabled.registration!;
      const [dis, rot2, put] = await Promise.all([
        admin(adminB, 'POST', path(disabled, '/disable')),
        admin(adminA, 'POST', path(disabled, '/rotate-secret')),
        fetch(reg.registration_client_uri as string, {
          method: 'PUT',
          headers: { authorization: `Bearer ${reg.registration_access_token as string}`, 'content-type': 'application/json' },
          body: JSON.stringify({ client_id: disabled.id, client_secret: disabled.secret, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read files', client_name: `updated ${round}` }),
        }),
      ]);
      expect([dis.status, rot2.status]).toEqual([200, 200]);
      // The update either came first (200), found the client disabled (401: the client is unknown to oidc-provider),
      // or came after the rotation and named the old secret (400, RFC 7592 §2.2: it must match the current one).
      expect([200, 400, 401]).toContain(put.status);
      if (put.status === 400) expect(((await put.json()) as { error_description: string }).error_description).toMatch(/client_secret does not match/);
      const shown = await admin(adminA, 'GET', path(disabled));
      expect(shown.body.disabled).toBe(true);
      if (put.status === 200) expect((shown.body.metadata as Record<string, unknown>).client_name).toBe(`updated ${round}`);
      else expect((shown.body.metadata as Record<string, unknown>).client_name).not.toBe(`updated ${round}`);
      for (const secret of [disabled.secret, rot2.body.client_secret as string]) {
        expect((await tokenRequest(b.url, { id: disabled.id, secret })).status).toBe(401);
      }
      // Enabled again: the rotated secret is the one that works, whichever order the update and the rotation took.
      expect((await admin(adminB, 'POST', path(disabled, '/enable'))).status).toBe(200);
      expect((await tokenRequest(b.url, { id: disabled.id, secret: rot2.body.client_secret as string })).status).toBe(200);
      expect((await tokenRequest(b.url, { id: disabled.id, secret: disabled.secret })).status).toBe(401);
    }
  });

  test('initial access tokens: listed by fingerprint only, revoked by it; a revoked one registers nothing', async () => {
    const iat = await newIat();
    const list = await admin(adminA, 'GET', '/admin/iats');
    expect(list.status).toBe(200);
    expect(list.text).not.toContain(iat);
    const entries = list.body.initial_access_tokens as Array<Record<string, unknown>>;
    expect(entries.length).toBeGreaterThan(0);
    for (const e of entries) expect(e).toMatchObject({ id: expect.stringMatching(/^[A-Za-z0-9_-]{22}$/), tier: 'standard' });
    const before = new Set(entries.map((e) => e.id));

    const cli = await runCli(['clients', 'iat', 'list'], env);
    expect(cli.code).toBe(0);
    expect(cli.stdout).not.toContain(iat);
    const cliIds = (JSON.parse(cli.stdout) as Array<{ id: string }>).map((e) => e.id);
    expect(new Set(cliIds)).toEqual(before);

    // Find this token's fingerprint: the one entry that disappears when it is revoked by value through the CLI.
    const other = await newIat();
    const revokedByValue = await runCli(['clients', 'iat', 'revoke', other], env);
    expect(revokedByValue.code).toBe(0);
    expect(revokedByValue.stdout).not.toContain(other);
    const fp = (JSON.parse(revokedByValue.stdout) as { id: string }).id;
    expect((await register(a.url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' }, { headers: { authorization: `Bearer ${other}` } })).status).toBe(401);

    const target = [...before][0]!;
    const r = await admin(adminA, 'DELETE', `/admin/iats/${target}`);
    expect(r.status).toBe(200);
    expect(r.body.id).toBe(target);
    expect(((await admin(adminA, 'GET', '/admin/iats')).body.initial_access_tokens as Array<{ id: string }>).map((e) => e.id)).not.toContain(target);
    expect((await admin(adminA, 'DELETE', `/admin/iats/${target}`)).status).toBe(404);
    expect((await admin(adminA, 'DELETE', `/admin/iats/${fp}`)).status).toBe(404);
    expect((await admin(adminA, 'DELETE', '/admin/iats/not%20an%20id')).status).toBe(400);
  });

  test('eight revocations of one initial access token at once: one revokes and is recorded, the others are 404', async () => {
    const token = await newIat();
    const answers = await Promise.all(Array.from({ length: 8 }, () => admin(adminA, 'DELETE', `/admin/iats/${token}`)));
    expect(answers.map((r) => r.status).sort()).toEqual([200, 404, 404, 404, 404, 404, 404, 404]);
    const id = answers.find((r) => r.status === 200)!.body.id as string;
    expect((await auditRecords()).filter((r) => r.type === 'registration.iat_revoked' && (r.details as { iat_id?: string }).iat_id === id)).toHaveLength(1);
  });

  test('an initial access token revoked by value through the admin API appears in no log line and no answer', async () => {
    const token = await newIat();
    const spellings = [token, encodeURIComponent(token).replace(/-/g, '%2D')];
    const answers = [
      await admin(adminA, 'DELETE', `/admin/iats/${spellings[1]}`),
      await admin(adminA, 'DELETE', `/admin/iats/${token}`), // already revoked: 404
      await admin(adminA, 'POST', `/admin/iats/${token}`), // wrong method: 405
      await fetch(`${adminA}/admin/iats/${token}`, { method: 'DELETE', headers: { authorization: 'Bearer wrong-token' } }).then(async (r) => ({ status: r.status, text: await r.text() })),
      // Near misses that match no route (a trailing slash, a doubled slash, another case, a malformed escape): 404.
      await admin(adminA, 'DELETE', `/admin/iats/${token}/`),
      await admin(adminA, 'DELETE', `/admin//iats/${token}`),
      await admin(adminA, 'DELETE', `/ADMIN/iats/${token}`),
      await admin(adminA, 'DELETE', `/admin/iats/${token}%`),
    ];
    expect(answers.map((r) => r.status)).toEqual([200, 404, 405, 401, 404, 404, 404, 400]);
    for (const r of answers) expect(r.text).not.toContain(token);
    // The request log lines are there, with the parameter redacted.
    const lines = a.output().split('\n').filter((l) => l.toLowerCase().includes('/admin/iats/'));
    expect(lines.filter((l) => /"path":"\/(admin|ADMIN)\/iats\/\[redacted\]"/.test(l)).length).toBeGreaterThanOrEqual(8);
    expect(a.output()).not.toContain(token);
    expect(a.output()).not.toContain(spellings[1]);
    expect((await register(a.url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' }, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
  });
});

describe('agentauth clients (CLI) on the same store', () => {
  test('refused without the key-encryption key, and with a wrong one; nothing changes', async () => {
    const c = await registerClient();
    // A missing or wrong KEK is a configuration error: exit 2 (docs/operations.md, "The command line").
    const without = await runCli(['clients', 'disable', c.id], { ...env, AGENTAUTH_KEK: undefined });
    expect(without.code).toBe(2);
    expect(without.stderr).toMatch(/no key-encryption key was found/);
    const wrong = await runCli(['clients', 'disable', c.id], { ...env, AGENTAUTH_KEK: newKek() });
    expect(wrong.code).toBe(2);
    expect(wrong.stdout).toBe('');
    expect((await tokenRequest(a.url, c)).status).toBe(200);
    // Pointed at a directory with no store: refused, and no empty store is left behind.
    const emptyDir = tempDir('agentauth-empty-');
    const list = await runCli(['clients', 'list'], { ...env, AGENTAUTH_DATA_DIR: emptyDir });
    expect(list.code).toBe(2);
    // Like every command, it first says which store it uses.
    expect(list.stderr.startsWith(`agentauth: store sqlite ${join(emptyDir, 'agentauth.sqlite')}, data directory ${emptyDir}`)).toBe(true);
    expect(list.stderr).toContain(`clients: there is no agentauth store at ${join(emptyDir, 'agentauth.sqlite')}`);
    expect(list.stderr).toMatch(/nothing was created/);
    expect(readdirSync(emptyDir)).toEqual([]);
  });

  test('a client id that begins with "-" (base64url ids can) is read as the id, not as an option', async () => {
    const r = await runCli(['clients', 'show', '-abcdefghijklmnopqrstuvwxyz0123'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(/unknown option/);
    expect(r.stderr).toMatch(/-abcdefghijklmnopqrstuvwxyz0123/);
    // A misspelt option next to an id is still refused as a usage error.
    expect((await runCli(['clients', 'show', '--jsn', 'abc'], env)).code).toBe(2);
  });

  test('an id that begins with a short option of the program or the command ("-V", "-h") is read as the id by every command that takes one', async () => {
    // CI once saw `clients show <id> --json` print the version: the generated id began with "-V", which commander read
    // as the program's -V. Ids are base64url, so one in 4,096 begins so.
    for (const id of ['-Vabcdefghijklmnopqrstuvwxyz012', '-habcdefghijklmnopqrstuvwxyz012', '-Jabcdefghijklmnopqrstuvwxyz012']) {
      for (const command of [['clients', 'show'], ['clients', 'disable'], ['clients', 'enable'], ['clients', 'delete'], ['clients', 'rotate-secret'], ['clients', 'iat', 'revoke']]) {
        const r = await runCli([...command, id, '--json'], env);
        expect({ command, id, code: r.code }).toEqual({ command, id, code: 1 });
        expect(r.stdout).not.toMatch(/^\d+\.\d+\.\d+/); // not the version
        expect(r.stdout).not.toMatch(/Usage:/); // not the help
        // Looked up as an id: a client is named in the refusal; an initial access token (which may be the token
        // itself) is not echoed.
        if (command.includes('iat')) expect(JSON.parse(r.stdout)).toMatchObject({ error: 'not_found', error_description: expect.stringMatching(/^no initial access token has that id/) });
        else expect(r.stderr).toContain(id);
      }
    }
  });

  test('--json is accepted as on every command (the answer is JSON on stdout either way)', async () => {
    const c = await registerClient();
    const r = await runCli(['clients', 'show', c.id, '--json'], env);
    expect({ id: c.id, code: r.code, stdout: r.stdout.slice(0, 20) }).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\{/) });
    expect(JSON.parse(r.stdout)).toMatchObject({ client_id: c.id });
    const list = await runCli(['clients', 'iat', 'list', '--json'], env);
    expect(list.code).toBe(0);
    expect(Array.isArray(JSON.parse(list.stdout))).toBe(true);
  });

  test('disable through the CLI takes effect at once in both servers; show, enable, rotate-secret and delete do what they say', async () => {
    const c = await registerClient();
    const jwt = (await tokenRequest(a.url, c)).body.access_token as string;
    const disabled = await runCli(['clients', 'disable', c.id], env);
    expect([disabled.code, disabled.stderr]).toEqual([0, expect.stringContaining('disabled')]);
    expect(JSON.parse(disabled.stdout)).toMatchObject({ client_id: c.id, disabled: true });
    expect(disabled.stderr).toContain(`using the SQLite store in ${env.AGENTAUTH_DATA_DIR}`);
    expect((await tokenRequestAtB(c)).status).toBe(401);
    expect((await tokenRequest(a.url, c)).status).toBe(401);
    expect((await introspectAtB(jwt)).active).toBe(false);
    // Asked again: the answer says it was disabled already, and the line says nothing changed rather than "disabled".
    const again = await runCli(['clients', 'disable', c.id], env);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ client_id: c.id, disabled: true, already_disabled: true });
    expect(again.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`^agentauth: client ${c.id} was disabled already \\(since \\S+\\): it stays disabled`));
    expect(JSON.parse(disabled.stdout)).not.toHaveProperty('already_disabled');
    // verify names the disable that revoked the token once, not the repeat that changed nothing.
    const verified = await runCli(['verify', jwt, '--json'], env);
    const facts = (JSON.parse(verified.stdout) as { revocation?: string[]; facts?: string[] });
    expect(JSON.stringify(facts).match(new RegExp(`client ${c.id} disabled at`, 'g'))).toHaveLength(1);

    const shown = await runCli(['clients', 'show', c.id], env);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({ client_id: c.id, disabled: true });
    expect(shown.stdout).not.toContain('hmac-sha256');

    expect((await runCli(['clients', 'enable', c.id], env)).code).toBe(0);
    expect((await tokenRequestAtB(c)).status).toBe(200);
    const enabledAgain = await runCli(['clients', 'enable', c.id], env);
    expect(JSON.parse(enabledAgain.stdout)).toMatchObject({ client_id: c.id, disabled: false, already_enabled: true });
    expect(enabledAgain.stderr.trim().split('\n').at(-1)).toBe(`agentauth: client ${c.id} was not disabled; nothing changed`);

    const rotated = await runCli(['clients', 'rotate-secret', c.id], env);
    expect(rotated.code).toBe(0);
    const secret = (JSON.parse(rotated.stdout) as { client_secret: string }).client_secret;
    expect((await tokenRequest(a.url, c)).status).toBe(401);
    expect((await tokenRequestAtB({ id: c.id, secret })).status).toBe(200);

    const list = await runCli(['clients', 'list'], env);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ client_id: string }>).map((v) => v.client_id)).toContain(c.id);
    expect(list.stdout).not.toContain(secret);
    expect(list.stdout).not.toContain('hmac-sha256');

    expect((await runCli(['clients', 'delete', c.id], env)).code).toBe(0);
    expect((await tokenRequest(a.url, { id: c.id, secret })).status).toBe(401);
  });

  test('an unknown client exits 1, a malformed id 2, a client of the configuration file 1, each saying why', async () => {
    const unknown = await runCli(['clients', 'show', 'no-such-client'], env);
    expect([unknown.code, unknown.stderr.trim().split('\n').at(-1)]).toEqual([1, 'agentauth: no client no-such-client']);
    expect((await runCli(['clients', 'delete', 'no-such-client'], env)).code).toBe(1);
    const malformed = await runCli(['clients', 'disable', '$ne'], env);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/client id must be/);
    // A usage error is said before any store is opened: the same with no store at all, and no store line.
    for (const args of [['clients', 'show', '$x'], ['clients', 'rotate-secret', '$x'], ['clients', 'iat', 'revoke', 'a/b']]) {
      const early = await runCli(args, { AGENTAUTH_DATA_DIR: join(tempDir(), 'nothing-here') });
      expect({ args, code: early.code, stderr: early.stderr }).toEqual({ args, code: 2, stderr: expect.stringMatching(/^agentauth: (client id must be|an initial access token id is)[^\n]*\n$/) });
    }
    const configured = await runCli(['clients', 'delete', RS_CLIENT.id], env);
    expect(configured.code).toBe(1);
    expect(configured.stderr).toMatch(/declared in the configuration file/);
    expect((await runCli(['clients', 'iat', 'revoke', 'AAAAAAAAAAAAAAAAAAAAAA'], env)).code).toBe(1);

    // Under --json the refusal is a JSON answer on stdout too, with the exit code it ends with.
    const cases = [
      [['clients', 'show', 'no-such-client', '--json'], 1, 'not_found'],
      [['clients', 'show', '$x', '--json'], 2, 'invalid_request'],
      [['clients', 'delete', RS_CLIENT.id, '--json'], 1, 'conflict'],
      [['clients', 'iat', 'revoke', 'AAAAAAAAAAAAAAAAAAAAAA', '--json'], 1, 'not_found'],
    ] as const;
    for (const [args, code, error] of cases) {
      const r = await runCli([...args], env);
      expect({ args, code: r.code }).toEqual({ args, code });
      expect(JSON.parse(r.stdout)).toEqual({ error, error_description: expect.any(String), exit_code: code });
    }
  });
});

describe('audit records', () => {
  test('every admin action is recorded with its actor (cli, or admin_api and the remote address)', async () => {
    const records = await auditRecords();
    const of = (type: string) => records.filter((r) => r.type === type);
    for (const type of ['client.disabled', 'client.enabled', 'client.secret_rotated', 'client.deleted', 'registration.iat_revoked']) {
      expect([type, of(type).some((r) => r.details.actor === 'cli')]).toEqual([type, true]);
      expect([type, of(type).some((r) => r.details.actor === 'admin_api' && r.details.remote_address === '127.0.0.1')]).toEqual([type, true]);
    }
    for (const r of [...of('client.disabled'), ...of('client.deleted')]) expect(typeof r.client_id).toBe('string');
    expect(JSON.stringify(records)).not.toContain('hmac-sha256');
  });
});

describe('configuration', () => {
  test('an admin port without an admin token refuses to start (exit 2, naming the settings)', async () => {
    const r = await runCli(['start'], { ...envB, PORT: String(await freePort()), AGENTAUTH_ADMIN_TOKEN: undefined, AGENTAUTH_CONFIG: writeConfig(tempDir(), { ...baseConfig(), admin: { port: await freePort() } }) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/admin\.port: the admin listener needs an admin token; set AGENTAUTH_ADMIN_TOKEN or admin\.tokenFile/);
  });

  test('a short admin token is refused', async () => {
    const r = await runCli(['start'], { ...envB, PORT: String(await freePort()), AGENTAUTH_ADMIN_TOKEN: 'too-short' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/AGENTAUTH_ADMIN_TOKEN: the admin token must be at least 32 characters/);
  });
});

describe('on MongoDB (MONGODB_URI)', () => {
  let as: AgentServer;
  let adminUrl: string;
  beforeAll(async () => {
    const adminPort = await freePort();
    as = await startAgentServer(baseConfig({ registration: { mode: 'token' }, admin: { port: adminPort } }), { AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN });
    adminUrl = `http://127.0.0.1:${adminPort}`;
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  test('disable through the admin API, list and delete through the CLI, on the shared database', async () => {
    const iat = await runCli(['clients', 'iat', 'create'], as.env);
    expect(iat.code).toBe(0);
    const reg = await register(as.server.url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' }, { headers: { authorization: `Bearer ${iat.stdout.trim()}` } });
    expect(reg.status).toBe(201);
    const c = { id: reg.body.client_id as string, secret: reg.body.client_secret as string };
    const jwt = await tokenRequest(as.server.url, c);
    expect(jwt.status).toBe(200);

    expect((await admin(adminUrl, 'GET', '/admin/clients', 'not-the-admin-token')).status).toBe(401);
    expect((await admin(adminUrl, 'POST', `/admin/clients/${encodeURIComponent(c.id)}/disable`)).status).toBe(200);
    const refused = await tokenRequest(as.server.url, c);
    expect([refused.status, refused.body.error]).toEqual([401, 'invalid_client']);
    expect((await introspectAt(as.server.url, jwt.body.access_token as string)).active).toBe(false);

    const list = await runCli(['clients', 'list'], as.env);
    expect(list.code).toBe(0);
    expect(list.stderr).toContain(`using the MongoDB database ${as.dbName}`);
    expect(JSON.parse(list.stdout)).toEqual(expect.arrayContaining([expect.objectContaining({ client_id: c.id, disabled: true })]));
    expect((await runCli(['clients', 'list'], { ...as.env, AGENTAUTH_KEK: undefined })).code).toBe(2);

    expect((await runCli(['clients', 'delete', c.id], as.env)).code).toBe(0);
    expect((await admin(adminUrl, 'GET', `/admin/clients/${encodeURIComponent(c.id)}`)).status).toBe(404);
    const iats = await runCli(['clients', 'iat', 'list'], as.env);
    expect(iats.code).toBe(0);
    expect(iats.stdout).not.toContain(iat.stdout.trim());
  });
});

describe('shutdown', () => {
  test('SIGTERM closes the admin listener with the public one, keep-alive connections included, and exits 0', async () => {
    const adminPort = await freePort();
    const s = await startServer({ ...env, AGENTAUTH_CONFIG: writeConfig(tempDir(), { ...baseConfig({ registration: { mode: 'token' } }), admin: { port: adminPort } }) });
    const url = `http://127.0.0.1:${adminPort}`;
    // fetch keeps the connection alive after the answer.
    expect((await admin(url, 'GET', '/admin/clients')).status).toBe(200);
    expect(await s.stop('SIGTERM')).toBe(0);
    await expect(fetch(`${url}/admin/health`)).rejects.toThrow();
  });
});
