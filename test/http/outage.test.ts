import { randomBytes } from 'node:crypto';

import { freePort, startFerretdb } from '../support/ferretdb.js';
import type { FerretdbProcess } from '../support/ferretdb.js';
import { startOnOwnDatabase } from '../support/own-database.js';
import type { RunningServer } from '../support/server.js';
import { watchStalls } from '../support/stalls.js';
import { openLoginPage } from '../support/user-agent.js';

const SECRET = 'outage-client-secret-0123456789abcdef0123';
/** storage.timeoutMs in this test: every storage call gives up after it. */
const STORAGE_TIMEOUT_MS = 1000;
/** The bound we promise (docs/operations.md): storage.timeoutMs + 1 s. */
const BOUND_MS = STORAGE_TIMEOUT_MS + 1000;
/** Latencies are net of the times this process stood still (test/support/stalls.ts), as in storage-faults.test.ts. */
const stalls = watchStalls();
afterAll(() => stalls.stop());

async function tokenRequest(url: string) {
  const started = Date.now();
  const res = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`svc:${SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=read',
    signal: AbortSignal.timeout(30_000),
  });
  const body = (await res.json()) as Record<string, unknown>;
  const ended = Date.now();
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body, ms: ended - started - stalls.overlap(started, ended) };
}

async function readyz(url: string) {
  const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(30_000) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** The admin listener's open health route: no credential, the same answer a monitor polling it gets. */
async function adminHealth(adminUrl: string) {
  const res = await fetch(`${adminUrl}/admin/health`, { signal: AbortSignal.timeout(30_000) });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Record<string, unknown> };
}

async function until<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, withinMs: number): Promise<{ value: T; ms: number }> {
  const started = Date.now();
  for (;;) {
    const value = await fn();
    if (ok(value)) return { value, ms: Date.now() - started };
    if (Date.now() - started > withinMs) throw new Error(`${what} not reached within ${withinMs} ms (last: ${JSON.stringify(value)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('MongoDB outage and recovery (a dedicated FerretDB stopped and restarted inside the test)', () => {
  let db: FerretdbProcess;
  let server: RunningServer;
  let adminUrl: string;

  beforeAll(async () => {
    const adminPort = await freePort();
    adminUrl = `http://127.0.0.1:${adminPort}`;
    ({ db, server } = await startOnOwnDatabase('outage', SECRET, STORAGE_TIMEOUT_MS, { port: adminPort, token: randomBytes(32).toString('base64url') }));
  });

  afterAll(async () => {
    await server?.stop();
    await db?.stop();
  });

  test('503 within storage.timeoutMs + 1 s once the server is down, never 200, and recovery without a restart', async () => {
    expect((await readyz(server.url)).status).toBe(200);
    expect(await adminHealth(adminUrl)).toEqual({ status: 200, retryAfter: null, body: { status: 'ok', storage: 'ok' } });
    expect((await tokenRequest(server.url)).status).toBe(200);

    await db.stop();

    // From the moment the server is gone, no token is issued: the first request already gets 503
    // temporarily_unavailable (never a 200, never a hang, never a 500), within the bound.
    const first = await tokenRequest(server.url);
    expect(first.status).toBe(503);
    expect(first.ms).toBeLessThanOrEqual(BOUND_MS);
    expect(first.body.error).toBe('temporarily_unavailable');
    expect(first.retryAfter).toBe('5');

    // Storage is now known to be down, and the gate answers before any route runs: a browser loading a page gets the
    // page, an API caller the JSON error.
    for (const accept of ['text/html,application/xhtml+xml,*/*;q=0.8', '*/*']) {
      const res = await fetch(`${server.url}/auth?client_id=any`, { headers: { accept }, redirect: 'manual', signal: AbortSignal.timeout(30_000) });
      expect({ accept, status: res.status, type: res.headers.get('content-type') }).toEqual({ accept, status: 503, type: accept === '*/*' ? 'application/json; charset=utf-8' : 'text/html; charset=utf-8' });
    }

    const ready = await readyz(server.url);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ status: 'unavailable', storage: 'unreachable' });
    // The admin listener's health route says so too, in its status code: it answered 200 "status":"ok" (with
    // "storage":"unreachable" in the body), so a monitor checking the code saw no outage.
    expect(await adminHealth(adminUrl)).toEqual({ status: 503, retryAfter: '5', body: { status: 'unavailable', storage: 'unreachable' } });

    // While it stays down, every answer is a prompt 503: never a 200, never a 500, never a hang.
    for (let i = 0; i < 5; i += 1) {
      const r = await tokenRequest(server.url);
      expect(r.status).toBe(503);
      expect(r.ms).toBeLessThanOrEqual(BOUND_MS);
    }
    // Discovery and JWKS need no storage: resource servers can keep verifying tokens, whatever the spelling the
    // router takes (these got 503 while only the exact paths were let through).
    for (const path of ['/jwks', '/JWKS', '/jwks/', '/.well-known/openid-configuration', '/.well-known/openid-configuration/', '/.WELL-KNOWN/openid-configuration', '/.well-known/oauth-authorization-server', '/.well-known/oauth-authorization-server/']) {
      expect({ path, status: (await fetch(`${server.url}${path}`)).status }).toEqual({ path, status: 200 });
    }
    expect((await fetch(`${server.url}/jwks`, { method: 'HEAD' })).status).toBe(200);
    // So are the pages' stylesheet and scripts, which the page saying storage is down loads.
    for (const [method, path] of [['GET', '/interaction-assets/style.css'], ['HEAD', '/interaction-assets/login.js']] as const) {
      expect({ method, path, status: (await fetch(`${server.url}${path}`, { method })).status }).toEqual({ method, path, status: 200 });
    }
    expect((await fetch(`${server.url}/interaction-assets/style.css`, { method: 'POST' })).status).toBe(503);
    // A browser-based client: its preflight needs no storage (it was a 503, which a browser reports as a network error,
    // not as the outage), and the 503 itself is readable cross-origin, Retry-After included.
    const origin = 'https://agent-ui.example';
    for (const path of ['/token', '/TOKEN', '/token/introspection/']) {
      const preflight = await fetch(`${server.url}${path}`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
      expect({ path, status: preflight.status, allow: preflight.headers.get('access-control-allow-origin') }).toEqual({ path, status: 204, allow: origin });
    }
    const crossOrigin = await fetch(`${server.url}/token`, { method: 'POST', headers: { origin, 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=client_credentials' });
    expect(crossOrigin.status).toBe(503);
    expect(crossOrigin.headers.get('access-control-allow-origin')).toBe(origin);
    expect(crossOrigin.headers.get('access-control-expose-headers')).toContain('Retry-After');
    expect(crossOrigin.headers.get('retry-after')).toBe('5');

    // Same port, same files: the server comes back and agentauth recovers on its own.
    db = await startFerretdb({ port: db.port, dir: db.dir });
    await until('readyz 200', () => readyz(server.url), (r) => r.status === 200, 15_000);
    await until('token 200', () => tokenRequest(server.url), (r) => r.status === 200, 15_000);
    expect(await adminHealth(adminUrl)).toEqual({ status: 200, retryAfter: null, body: { status: 'ok', storage: 'ok' } });
    expect(server.child.exitCode).toBeNull();
    expect(server.output()).toContain('storage reachable again');
  });

  // These routes raised the outage where oidc-provider's error handling does not reach (agentauth's own routes, the
  // session save after the endpoint answered): a 500 with a stack trace in the log, and for /auth and /session/end
  // after twice the timeout, since the request's second storage call waited it out again.
  test('a request that meets a hung database on any route gets 503 within the bound, never 500: /auth, /session/end, /wallet/nonce, the login page', async () => {
    const reg = await fetch(`${server.url}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'urn:agentauth:params:oauth:grant-type:wallet-signature'], scope: 'read' }),
    });
    expect(reg.status).toBe(201);
    const clientId = ((await reg.json()) as { client_id: string }).client_id;
    const authorize = new URL(`${server.url}/auth`);
    for (const [k, v] of Object.entries({ client_id: clientId, response_type: 'code', redirect_uri: 'http://127.0.0.1:65000/cb', scope: 'read', resource: 'https://api.example.com', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })) authorize.searchParams.set(k, v);
    const { agent, pageUrl } = await openLoginPage(authorize);
    // What a browser sends when a person follows a link or loads a page: it gets a page, not JSON.
    const browser = { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' };
    const routes: Array<[string, () => Promise<Response>, 'json' | 'page']> = [
      ['GET /auth', () => fetch(authorize, { redirect: 'manual', signal: AbortSignal.timeout(30_000) }), 'json'],
      ['GET /auth (a browser)', () => fetch(authorize, { redirect: 'manual', headers: browser, signal: AbortSignal.timeout(30_000) }), 'page'],
      ['GET /session/end', () => agent.fetch(`${server.url}/session/end`, { signal: AbortSignal.timeout(30_000) }), 'json'],
      ['POST /wallet/nonce', () => fetch(`${server.url}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `client_id=${clientId}`, signal: AbortSignal.timeout(30_000) }), 'json'],
      ['GET /interaction/<uid>', () => agent.fetch(pageUrl, { signal: AbortSignal.timeout(30_000) }), 'json'],
      ['GET /interaction/<uid> (a browser)', () => agent.fetch(pageUrl, { headers: browser, signal: AbortSignal.timeout(30_000) }), 'page'],
    ];
    for (const [route, send, kind] of routes) {
      await until('readyz 200', () => readyz(server.url), (r) => r.status === 200, 15_000);
      await db.pause();
      try {
        // The first request after the hang: nothing has marked storage down yet.
        const started = Date.now();
        const res = await send();
        const ended = Date.now();
        const ms = ended - started - stalls.overlap(started, ended);
        expect({ route, status: res.status }).toEqual({ route, status: 503 });
        expect(ms).toBeLessThanOrEqual(BOUND_MS);
        expect(res.headers.get('retry-after')).toBe('5');
        const text = await res.text();
        if (kind === 'page') {
          expect({ route, type: res.headers.get('content-type') }).toEqual({ route, type: 'text/html; charset=utf-8' });
          expect(text).toContain('<h1>Temporarily unavailable</h1>');
          expect(text).toContain('cannot reach its storage right now');
        } else {
          expect({ route, body: JSON.parse(text) as unknown }).toMatchObject({ route, body: { error: 'temporarily_unavailable', error_description: 'the authorization server cannot reach its storage; retry shortly' } });
        }
      } finally {
        db.resume();
      }
    }
    expect(server.output()).not.toContain('unhandled error');
    // Leave the server serving, as the next test expects: storage is marked down until its next good ping.
    await until('readyz 200', () => readyz(server.url), (r) => r.status === 200, 15_000);
  });

  test('a database down long enough that agentauth replaces its MongoDB client: every store follows the new client, tokens and their audit records come back', async () => {
    expect((await tokenRequest(server.url)).status).toBe(200);
    const replacedBefore = server.output().split('replaced the MongoDB client').length - 1;
    // Pings fail for max(5 s, 3 × storage.timeoutMs) before the client is replaced: stay down past that.
    await db.kill();
    await until('the MongoDB client replaced', async () => server.output().split('replaced the MongoDB client').length - 1, (n) => n > replacedBefore, 20_000);
    db = await startFerretdb({ port: db.port, dir: db.dir });
    await until('readyz 200', () => readyz(server.url), (r) => r.status === 200, 15_000);
    // CI once saw /readyz 200 and every token 503 for good here: the stores kept calling the first, closed client
    // (MongoNotConnectedError on the audit record) while the ping used the new one.
    const { value } = await until('token 200', () => tokenRequest(server.url), (r) => r.status === 200, 15_000);
    expect(value.body.access_token).toEqual(expect.any(String));
    for (let i = 0; i < 5; i += 1) expect((await tokenRequest(server.url)).status).toBe(200);
    expect(server.output()).not.toContain('MongoNotConnectedError');
  });
});
