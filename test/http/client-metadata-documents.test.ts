import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';

import { Wallet } from 'ethers';
import { createRemoteJWKSet, jwtVerify } from 'jose';

import { baseConfig, basicAuth, introspect, OPAQUE_RESOURCE, REDIRECT, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { guideBlock, guideDir, replaceExactly, toJavaScript, typeProblems } from '../support/guide.js';
import { makeTestPki, startCimdServer, startDocumentServer, testSwitchFor } from '../support/metadata-documents.js';
import type { DocumentServer, TestPki } from '../support/metadata-documents.js';
import { logLines } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { authorizeWithWallet, openLoginPage } from '../support/user-agent.js';

// Client ID metadata documents end to end: agentauth started through the test-only entry point
// (test/support/cimd-server.mjs) that hands the fetcher a test CA, a resolver for made-up names and permission to
// connect to 127.0.0.1; the documents come from a local https server.

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const EXCHANGER = { id: 'exchanger', secret: 'exchanger-secret-0123456789abcdefghijklmn' };
const RS_CLIENT_CONFIG = { client_id: RS_CLIENT.id, client_secret: RS_CLIENT.secret, grant_types: ['client_credentials'] };

const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');

const pkce = () => {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
};

function authorizationUrl(issuer: string, clientId: string, challenge: string, redirectUri = REDIRECT): URL {
  const url = new URL(`${issuer}/auth`);
  for (const [k, v] of Object.entries({
    client_id: clientId, response_type: 'code', redirect_uri: redirectUri, scope: 'read', resource: RESOURCE,
    state: randomBytes(8).toString('hex'), code_challenge: challenge, code_challenge_method: 'S256',
  })) url.searchParams.set(k, v);
  return url;
}

/** What the token endpoint answers a request naming `clientId` (the client is resolved before the grant is looked at). */
async function tokenEndpoint(issuer: string, clientId: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code: 'not-a-code', redirect_uri: REDIRECT, code_verifier: 'x'.repeat(43), client_id: clientId }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('client ID metadata documents (https client_id URLs) over HTTP', () => {
  let pki: TestPki;
  let docs: DocumentServer;
  let on: RunningServer;
  let off: RunningServer;
  let allowList: RunningServer;
  const doc = (path: string, extra: Record<string, unknown> = {}, name = 'agent.test') => ({
    client_id: docs.url(name, path),
    client_name: 'Metadata test agent',
    redirect_uris: [REDIRECT],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    scope: 'read',
    ...extra,
  });

  beforeAll(async () => {
    pki = makeTestPki();
    docs = await startDocumentServer(pki);
    // loopback.test resolves to a loopback address the test switch does not permit.
    const testSwitch = testSwitchFor(pki);
    const limits = { timeoutMs: 1000, deniedHosts: ['denied.test'] };
    [on, off, allowList] = await Promise.all([
      startCimdServer(
        baseConfig({
          clientIdMetadataDocuments: limits,
          // A resource server's own client that exchanges the tokens it receives (RFC 8693).
          clients: [RS_CLIENT_CONFIG, { client_id: EXCHANGER.id, client_secret: EXCHANGER.secret, grant_types: [EXCHANGE] }],
          tokenExchange: { rules: [{ clients: [EXCHANGER.id], from: [RESOURCE], to: [RESOURCE] }] },
        }),
        testSwitch,
        docs.port,
      ),
      startCimdServer(baseConfig({ clientIdMetadataDocuments: { enabled: false } }), testSwitch, docs.port),
      startCimdServer(baseConfig({ clientIdMetadataDocuments: { allowedHosts: ['*.allowed.test'] } }), testSwitch, docs.port),
    ]);
  });

  afterAll(async () => {
    await Promise.all([on?.stop(), off?.stop(), allowList?.stop()]);
    await docs?.close();
  });

  test('discovery advertises client_id_metadata_document_supported in both metadata documents, and not when off', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const meta = (await (await fetch(`${on.url}${path}`)).json()) as Record<string, unknown>;
      expect(meta.client_id_metadata_document_supported).toBe(true);
      const offMeta = (await (await fetch(`${off.url}${path}`)).json()) as Record<string, unknown>;
      expect(offMeta).not.toHaveProperty('client_id_metadata_document_supported');
    }
  });

  test('authorization code + PKCE with a metadata-document client (public, no DPoP) gets tokens', async () => {
    const path = '/happy/client.json';
    docs.serveJson(path, doc(path), { 'cache-control': 'max-age=600' });
    const clientId = docs.url('agent.test', path);
    const { verifier, challenge } = pkce();
    const outcome = await authorizeWithWallet(authorizationUrl(on.url, clientId, challenge), REDIRECT, { wallet });
    const code = outcome.callback.searchParams.get('code');
    expect(code).toEqual(expect.any(String));
    const res = await fetch(`${on.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT, code_verifier: verifier, client_id: clientId, resource: RESOURCE }),
    });
    const tokens = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(200);
    expect(tokens.token_type).toBe('Bearer');
    const { payload } = await jwtVerify(String(tokens.access_token), createRemoteJWKSet(new URL(`${on.url}/jwks`)), { issuer: on.url, audience: RESOURCE });
    expect(payload.client_id).toBe(clientId);
    expect(payload.sub).toBe(`did:pkh:eip155:1:${wallet.address}`);
    // The whole flow (authorization, login, consent, token) fetched the document once: max-age=600 was honoured.
    expect(docs.hits(path)).toBe(1);
    // The pages named the host that published the document; its only redirect is on 127.0.0.1, so they warned.
    expect(outcome.pages.length).toBeGreaterThanOrEqual(2);
    for (const html of outcome.pages) {
      expect(html).toContain(`published by <strong class="client-host">agent.test:${docs.port}</strong>`);
      expect(html).toContain('id="localhost-warning"');
    }
    const fetched = logLines(on.output()).filter((l) => l.event === 'client_metadata_document.fetched' && l.client_id === clientId);
    expect(fetched).toEqual([expect.objectContaining({ cache_seconds: 600 })]);
  });

  /** A metadata-document client's access token for RESOURCE, through the code flow; the document is served no-store. */
  async function documentClientToken(path: string): Promise<string> {
    docs.serveJson(path, doc(path), { 'cache-control': 'no-store' });
    const clientId = docs.url('agent.test', path);
    const { verifier, challenge } = pkce();
    const outcome = await authorizeWithWallet(authorizationUrl(on.url, clientId, challenge), REDIRECT, { wallet });
    const res = await fetch(`${on.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: outcome.callback.searchParams.get('code')!, redirect_uri: REDIRECT, code_verifier: verifier, client_id: clientId, resource: RESOURCE }),
    });
    expect(res.status).toBe(200);
    return String(((await res.json()) as Record<string, unknown>).access_token);
  }

  test('a token of a client whose document can no longer be used introspects as inactive (200), not as an error', async () => {
    const path = '/introspected.json';
    const clientId = docs.url('agent.test', path);
    const token = await documentClientToken(path);
    expect(await introspect(on.url, token)).toEqual(expect.objectContaining({ active: true, client_id: clientId }));
    docs.serve(path, { status: 404 });
    expect(await introspect(on.url, token)).toEqual({ active: false });
  });

  test('exchanged as a subject token (RFC 8693), a token whose client\'s document can no longer be used is inactive, not the exchanger\'s invalid_client', async () => {
    const path = '/exchanged.json';
    const token = await documentClientToken(path);
    const exchange = async () => {
      const res = await fetch(`${on.url}/token`, {
        method: 'POST',
        headers: { authorization: basicAuth(EXCHANGER.id, EXCHANGER.secret), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: EXCHANGE, subject_token: token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token', resource: RESOURCE }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    expect((await exchange()).status).toBe(200);
    docs.serve(path, { status: 404 });
    expect(await exchange()).toEqual({ status: 400, body: { error: 'invalid_request', error_description: 'subject_token is not an active access token of this server (expired, revoked, or not one)' } });
  });

  test('a refused document is the caller\'s invalid_client naming why: 401 with a Basic challenge when it came in an Authorization header (RFC 6749 §5.2), also at introspection', async () => {
    const clientId = docs.url('agent.test', '/nowhere.json');
    docs.serve('/nowhere.json', { status: 404 });
    const reason = `client_id ${clientId} is a client ID metadata document URL that cannot be used: fetching the client ID metadata document answered HTTP 404, not 200`;
    for (const path of ['/token', '/token/introspection']) {
      const form: Record<string, string> = path === '/token' ? { grant_type: 'client_credentials' } : { token: 'x' };
      const basic = await fetch(`${on.url}${path}`, {
        method: 'POST',
        headers: { authorization: basicAuth(clientId, 'secret'), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form),
      });
      expect([path, basic.status, await basic.json()]).toEqual([path, 401, { error: 'invalid_client', error_description: reason }]);
      expect(basic.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client"/);
      // Named in the body (a public client): 400, still naming why (it was a bare 401 at introspection).
      const named = await fetch(`${on.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ ...form, client_id: clientId }) });
      expect([path, named.status, await named.json()]).toEqual([path, 400, { error: 'invalid_client', error_description: reason }]);
    }
  });

  test('so do its opaque tokens (an opaque resource\'s access token, its refresh token), introspected by a resource server', async () => {
    // oidc-provider's own introspection reads the token's client for a person's token introspected by another client,
    // and took it as found: a 500 server_error for a document that can no longer be used.
    const path = '/opaque-introspected.json';
    docs.serveJson(path, doc(path, { scope: 'files' }), { 'cache-control': 'no-store' });
    const clientId = docs.url('agent.test', path);
    const { verifier, challenge } = pkce();
    const url = authorizationUrl(on.url, clientId, challenge);
    url.searchParams.set('scope', 'files');
    url.searchParams.set('resource', OPAQUE_RESOURCE);
    const outcome = await authorizeWithWallet(url, REDIRECT, { wallet });
    const res = await fetch(`${on.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: outcome.callback.searchParams.get('code')!, redirect_uri: REDIRECT, code_verifier: verifier, client_id: clientId, resource: OPAQUE_RESOURCE }),
    });
    const tokens = (await res.json()) as Record<string, string>;
    expect(res.status).toBe(200);
    expect(tokens.access_token).not.toContain('.');
    for (const token of [tokens.access_token!, tokens.refresh_token!]) expect(await introspect(on.url, token)).toEqual(expect.objectContaining({ active: true, client_id: clientId }));
    docs.serve(path, { status: 404 });
    // introspect() throws on anything but a 200.
    for (const token of [tokens.access_token!, tokens.refresh_token!]) expect(await introspect(on.url, token)).toEqual({ active: false });
    // Served again, the client is one again, and so its tokens are active.
    docs.serveJson(path, doc(path, { scope: 'files' }), { 'cache-control': 'no-store' });
    expect(await introspect(on.url, tokens.access_token!)).toEqual(expect.objectContaining({ active: true }));
  });

  test('no-store documents are fetched again on every request; cacheable ones are not', async () => {
    docs.serveJson('/nostore.json', doc('/nostore.json'), { 'cache-control': 'no-store' });
    docs.serveJson('/cached.json', doc('/cached.json'), { 'cache-control': 'public, max-age=300' });
    for (const [path, expected] of [['/nostore.json', 2], ['/cached.json', 1]] as const) {
      for (let i = 0; i < 2; i += 1) {
        const res = await fetch(authorizationUrl(on.url, docs.url('agent.test', path), pkce().challenge), { redirect: 'manual' });
        expect(res.status).toBe(303);
        expect(new URL(res.headers.get('location')!, on.url).pathname).toMatch(/^\/interaction\//);
      }
      expect(docs.hits(path)).toBe(expected);
    }
  });

  test('a document whose redirect URIs are not all on localhost gets the host line and no warning', async () => {
    const path = '/web.json';
    const redirect = 'https://app.agent.test/callback';
    docs.serveJson(path, doc(path, { redirect_uris: [redirect, REDIRECT] }));
    const { agent, data, pageUrl } = await openLoginPage(authorizationUrl(on.url, docs.url('agent.test', path), pkce().challenge));
    expect(data.uid).toEqual(expect.any(String));
    const html = await (await agent.fetch(pageUrl)).text();
    expect(html).toContain('class="client-host">agent.test:');
    expect(html).not.toContain('localhost-warning');
  });

  test.each([
    ['a private IP literal', 'https://10.0.0.1/client.json', /10\.0\.0\.1, which is in a special-use IPv4 range \(private\)/],
    ['an IPv6 loopback literal', 'https://[::1]/x', /::1, which is in a special-use IPv6 range \(loopback\)/],
    ['a cloud metadata address', 'https://169.254.169.254/latest/client.json', /linkLocal/],
  ])('%s as client_id is refused with invalid_client, never fetched', async (_what, clientId, reason) => {
    const { status, body } = await tokenEndpoint(on.url, clientId);
    expect(status).toBe(400);
    expect(body.error).toBe('invalid_client');
    expect(body.error_description).toMatch(reason);
  });

  test('a name that resolves to loopback (not permitted by the test switch) is refused and never reached', async () => {
    docs.serveJson('/loop.json', doc('/loop.json', {}, 'loopback.test'));
    const { status, body } = await tokenEndpoint(on.url, docs.url('loopback.test', '/loop.json'));
    expect(status).toBe(400);
    expect(body.error).toBe('invalid_client');
    expect(body.error_description).toMatch(/loopback\.test of the client_id URL resolves to 127\.0\.0\.2, which is in a special-use IPv4 range \(loopback\)/);
    expect(docs.hits('/loop.json')).toBe(0);
  });

  test('a redirect to a private address is not followed', async () => {
    docs.serve('/moved.json', { status: 302, headers: { location: 'https://10.0.0.1/client.json' } });
    const { status, body } = await tokenEndpoint(on.url, docs.url('agent.test', '/moved.json'));
    expect(status).toBe(400);
    expect(body.error).toBe('invalid_client');
    expect(body.error_description).toMatch(/answered 302 \(a redirect to https:\/\/10\.0\.0\.1\/client\.json\); redirects are not followed/);
  });

  test('an oversized body is refused', async () => {
    docs.serveJson('/big.json', doc('/big.json', { client_name: 'x'.repeat(150), contacts: Array.from({ length: 400 }, (_, i) => `admin${i}@agent.test`) }));
    const { status, body } = await tokenEndpoint(on.url, docs.url('agent.test', '/big.json'));
    expect(status).toBe(400);
    expect(body.error_description).toMatch(/larger than 5120 bytes/);
  });

  test('a body trickled slowly is cut off at the time limit', async () => {
    docs.serve('/slow.json', { body: JSON.stringify(doc('/slow.json')), trickleMs: 40 });
    const { status, body } = await tokenEndpoint(on.url, docs.url('agent.test', '/slow.json'));
    expect(status).toBe(400);
    expect(body.error_description).toMatch(/took longer than 1000 ms/);
  });

  test('fetches at once are bounded (maxConcurrentFetches): one more is answered 503 without a fetch, a request for a document being fetched shares it, and fetching resumes when they end', async () => {
    const busy = await startCimdServer(baseConfig({ clientIdMetadataDocuments: { timeoutMs: 1000, maxConcurrentFetches: 2 } }), testSwitchFor(pki), docs.port);
    try {
      // Two documents trickled past the time limit hold both fetches for a second.
      const slow = (path: string) => {
        docs.serve(path, { body: JSON.stringify(doc(path)), trickleMs: 40 });
        return docs.url('agent.test', path);
      };
      const [a, b] = [slow('/busy/a.json'), slow('/busy/b.json')];
      docs.serveJson('/busy/c.json', doc('/busy/c.json'));
      const c = docs.url('agent.test', '/busy/c.json');
      const held = [tokenEndpoint(busy.url, a), tokenEndpoint(busy.url, b)];
      for (let i = 0; i < 100 && (docs.hits('/busy/a.json') === 0 || docs.hits('/busy/b.json') === 0); i += 1) await new Promise((r) => setTimeout(r, 10));
      expect([docs.hits('/busy/a.json'), docs.hits('/busy/b.json')]).toEqual([1, 1]);

      const res = await fetch(`${busy.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: 'not-a-code', redirect_uri: REDIRECT, code_verifier: 'x'.repeat(43), client_id: c }),
      });
      expect({ status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() }).toEqual({
        status: 503,
        retryAfter: expect.stringMatching(/^[1-9][0-9]*$/),
        body: { error: 'temporarily_unavailable', error_description: 'the authorization server is fetching as many client ID metadata documents as it allows at once; retry shortly' },
      });
      expect(docs.hits('/busy/c.json')).toBe(0);
      // A request naming a document already being fetched waits for that fetch (no second one, no refusal).
      const shared = tokenEndpoint(busy.url, a);
      const answers = await Promise.all([...held, shared]);
      for (const answer of answers) {
        expect(answer.status).toBe(400);
        expect(answer.body.error_description).toMatch(/took longer than 1000 ms/);
      }
      expect(docs.hits('/busy/a.json')).toBe(1);
      expect(logLines(busy.output()).filter((l) => l.event === 'client_metadata_document.busy')).toHaveLength(1);

      // Both fetches ended: the next document is fetched (its client is known; the made-up code is what is refused).
      const after = await tokenEndpoint(busy.url, c);
      expect(after.body.error).toBe('invalid_grant');
      expect(docs.hits('/busy/c.json')).toBe(1);
    } finally {
      await busy.stop();
    }
  });

  test('a document whose client_id differs from its URL is refused', async () => {
    docs.serveJson('/mismatch.json', doc('/other.json'));
    const { status, body } = await tokenEndpoint(on.url, docs.url('agent.test', '/mismatch.json'));
    expect(status).toBe(400);
    expect(body.error).toBe('invalid_client');
    expect(body.error_description).toMatch(/the client_id in the document \('.*\/other\.json'\) must equal the URL it is served from/);
  });

  test('the authorization endpoint answers a refused document with a 400 page naming the reason (no redirect, no 500)', async () => {
    docs.serveJson('/mismatch2.json', doc('/other.json'));
    const res = await fetch(authorizationUrl(on.url, docs.url('agent.test', '/mismatch2.json'), pkce().challenge), { headers: { accept: 'text/html' }, redirect: 'manual' });
    expect(res.status).toBe(400);
    const html = await res.text();
    expect(html).toContain('must equal the URL it is served from');
    expect(html).toContain('(invalid_client)');
    expect(docs.hits('/mismatch2.json')).toBe(1);
  });

  test.each([
    ['client_credentials', { grant_types: ['client_credentials'], response_types: [], redirect_uris: [] }, /grant_types may only contain authorization_code and refresh_token/],
    ['client_secret_basic', { token_endpoint_auth_method: 'client_secret_basic' }, /client_secret_basic uses a shared secret/],
    ['a client_secret', { client_secret: 's'.repeat(40) }, /client_secret must not appear/],
    ['private_key_jwt', { token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'a', y: 'b' }] } }, /must be 'none'/],
    ['an http redirect off loopback', { redirect_uris: ['http://agent.test/cb'] }, /redirect_uris must use https, or http on a loopback host/],
    ['an unknown scope', { scope: 'admin' }, /scope contains 'admin', which no resource server/],
  ])('a document asking for %s is refused by the registration policy', async (what, extra, reason) => {
    const path = `/policy-${what.replace(/\W+/g, '-')}.json`;
    docs.serveJson(path, doc(path, extra));
    const { status, body } = await tokenEndpoint(on.url, docs.url('agent.test', path));
    expect(status).toBe(400);
    expect(body.error).toBe('invalid_client');
    expect(body.error_description).toMatch(reason);
  });

  test('denied hosts are refused without a fetch; with allowedHosts only matching hosts are fetched', async () => {
    docs.serveJson('/d.json', doc('/d.json', {}, 'denied.test'));
    const denied = await tokenEndpoint(on.url, docs.url('denied.test', '/d.json'));
    expect(denied.body.error_description).toMatch(/host denied\.test is denied by this authorization server/);
    expect(docs.hits('/d.json')).toBe(0);

    docs.serveJson('/a.json', doc('/a.json', {}, 'sub.allowed.test'));
    docs.serveJson('/n.json', doc('/n.json', {}, 'agent.test'));
    const refused = await tokenEndpoint(allowList.url, docs.url('agent.test', '/n.json'));
    expect(refused.body.error_description).toMatch(/host agent\.test is not among the hosts/);
    expect(docs.hits('/n.json')).toBe(0);
    const res = await fetch(authorizationUrl(allowList.url, docs.url('sub.allowed.test', '/a.json'), pkce().challenge), { redirect: 'manual' });
    expect(res.status).toBe(303);
    expect(docs.hits('/a.json')).toBe(1);
  });

  test('a document on a port allowedPorts does not list is refused without a connection, whatever listens there', async () => {
    docs.serveJson('/port.json', doc('/port.json'));
    // The test servers allow 443 and the document server's port (the default is 443 alone).
    for (const port of [docs.port + 1, 22]) {
      const clientId = `https://agent.test:${port}/port.json`;
      const { status, body } = await tokenEndpoint(on.url, clientId);
      expect(status).toBe(400);
      expect(body.error).toBe('invalid_client');
      expect(body.error_description).toBe(
        `client_id ${clientId} is a client ID metadata document URL that cannot be used: port ${port} is not among the ports this authorization server fetches client ID metadata documents on (clientIdMetadataDocuments.allowedPorts: 443, ${docs.port})`,
      );
    }
    expect(docs.hits('/port.json')).toBe(0);
  });

  test('with the feature off a URL client_id is an unknown client, and nothing is fetched', async () => {
    docs.serveJson('/off.json', doc('/off.json'));
    const { status, body } = await tokenEndpoint(off.url, docs.url('agent.test', '/off.json'));
    expect(status).toBe(401);
    expect(body.error).toBe('invalid_client');
    expect(docs.hits('/off.json')).toBe(0);
  });

  test('the server logged every refusal with its reason and never a server error', () => {
    const lines = logLines(on.output());
    expect(lines.filter((l) => l.event === 'server_error')).toEqual([]);
    expect(lines.filter((l) => l.event === 'client_metadata_document.refused').length).toBeGreaterThan(5);
  });
});

/**
 * docs/agents.md ("### With the MCP TypeScript SDK") shows an `OAuthClientProvider` that the guide says this test runs.
 * It does: the fragment is type-checked against the installed SDK, then its object itself (the block as JavaScript,
 * with the `stored` and `openBrowser` the fragment leaves to the reader supplied here) is what auth() is given below.
 */
const SDK_GUIDE_BLOCK = guideBlock('agents.md', '### With the MCP TypeScript SDK');
/** What the fragment uses without declaring it: a store that starts empty, and a way to open the person's browser. */
const SDK_GUIDE_PRELUDE = `import type { OAuthClientInformationMixed, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
declare global {
  const stored: { client?: OAuthClientInformationMixed; tokens?: OAuthTokens; verifier?: string };
  function openBrowser(url: URL): void;
}
`;
/** The guide's clientMetadataUrl, the one value the test replaces (see guideProvider). */
const SDK_GUIDE_DOCUMENT_URL = 'https://agent.example.com/oauth/client.json';

describe('the MCP TypeScript SDK (auth() with clientMetadataUrl) against a metadata-document client', () => {
  const DOCUMENT_PATH = new URL(SDK_GUIDE_DOCUMENT_URL).pathname;
  /** The scopes the guide's clientMetadata asks for: the stand-in MCP server's, at agentauth and in its RFC 9728 metadata. */
  const SCOPES = ['read', 'write'];
  const ACCESS_TTL = 3;
  /** The fragment's `stored` (empty at first, as the prelude declares it) and every URL its `openBrowser` was given. */
  const stored: { client?: OAuthClientInformationMixed; tokens?: OAuthTokens; verifier?: string } = {};
  const opened: URL[] = [];
  const openBrowser = (url: URL) => { opened.push(url); };
  const requests: string[] = [];
  const fetchFn = async (url: string | URL, init?: RequestInit) => {
    const res = await fetch(url, init);
    requests.push(`${init?.method ?? 'GET'} ${new URL(String(url)).pathname} ${res.status}`);
    return res;
  };
  let provider: OAuthClientProvider;
  /** What an MCP server that verifies locally does with a token: signature, issuer, audience, expiry. */
  const accepted = async (token: string) =>
    jwtVerify(token, createRemoteJWKSet(new URL(`${as.url}/jwks`)), { issuer: as.url, audience: resource }).then(
      () => true,
      () => false,
    );
  let pki: TestPki;
  let docs: DocumentServer;
  let as: RunningServer;
  let prm: Server;
  let resource: string;

  /**
   * The guide's provider object: its block as JavaScript, evaluated with this test's `stored` and `openBrowser`. One
   * substitution: clientMetadataUrl names the same path on this test's local https document server (agent.test, which
   * the test switch resolves to 127.0.0.1), because agentauth must fetch the document, and agent.example.com is not
   * ours. Everything else (clientMetadata, the redirect URI, the callbacks) is the guide's.
   */
  function guideProvider(documentUrl: string): OAuthClientProvider {
    // The type-only import leaves `export {};` behind, and nothing else of a module.
    const js = toJavaScript(SDK_GUIDE_BLOCK).replace(/^export \{\};\n/m, '');
    if (/^\s*(import|export)\b/m.test(js)) throw new Error(`the guide's block is no longer a plain object definition:\n${js}`);
    const body = replaceExactly(js, `'${SDK_GUIDE_DOCUMENT_URL}'`, JSON.stringify(documentUrl), "docs/agents.md's MCP SDK provider (its clientMetadataUrl)");
    const evaluate = new Function('stored', 'openBrowser', `${body}\nreturn provider;`);
    // Its type is held to OAuthClientProvider by the type-check test below.
    return evaluate(stored, openBrowser) as OAuthClientProvider;
  }

  beforeAll(async () => {
    pki = makeTestPki();
    docs = await startDocumentServer(pki);
    // A stand-in MCP server that only serves its RFC 9728 metadata naming agentauth (filled in once it runs).
    let issuer = '';
    prm = createServer((req, res) => {
      if ((req.url ?? '').startsWith('/.well-known/oauth-protected-resource')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ resource, authorization_servers: [issuer], scopes_supported: SCOPES }));
      } else res.writeHead(404).end();
    });
    await new Promise<void>((r) => prm.listen(0, '127.0.0.1', r));
    resource = `http://127.0.0.1:${(prm.address() as AddressInfo).port}/mcp`;
    // Access tokens for the MCP server live ACCESS_TTL seconds, so that the test below outlives several of them.
    as = await startCimdServer(baseConfig({ resourceServers: [{ identifier: resource, scopes: SCOPES, accessTokenTTL: ACCESS_TTL }] }), testSwitchFor(pki), docs.port);
    issuer = as.url;
  });

  afterAll(async () => {
    await as?.stop();
    await docs?.close();
    if (prm) await new Promise((r) => prm.close(r));
  });

  test('the guide\'s provider (docs/agents.md) type-checks as the installed SDK\'s OAuthClientProvider, with only `stored` and `openBrowser` declared', () => {
    // The annotation is what makes the check mean something: without it, any object would pass.
    expect(SDK_GUIDE_BLOCK).toContain('const provider: OAuthClientProvider = {');
    const dir = guideDir('mcp-sdk-guide', { 'provider.ts': SDK_GUIDE_BLOCK, 'prelude.ts': SDK_GUIDE_PRELUDE });
    try {
      expect(typeProblems([join(dir, 'provider.ts'), join(dir, 'prelude.ts')])).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('with the guide\'s provider, the SDK uses the URL as client_id (no registration), and authorization code + PKCE gets an access token for the MCP server', async () => {
    const clientMetadataUrl = docs.url('agent.test', DOCUMENT_PATH);
    provider = guideProvider(clientMetadataUrl);
    expect(provider.clientMetadataUrl).toBe(clientMetadataUrl);
    // The hosted document: the guide's clientMetadata with client_id, as the guide's comment says to keep them.
    docs.serveJson(DOCUMENT_PATH, { client_id: clientMetadataUrl, ...provider.clientMetadata }, { 'cache-control': 'max-age=3600' });
    expect(await auth(provider, { serverUrl: resource, fetchFn })).toBe('REDIRECT');
    expect(requests.some((r) => r.startsWith('POST /reg'))).toBe(false);
    // What the guide's comment says saveClientInformation gets: { client_id: <the URL>, issuer } (the issuer as the
    // MCP server's metadata names it).
    expect(stored.client).toEqual({ client_id: clientMetadataUrl, issuer: as.url });
    expect(opened).toHaveLength(1);
    const url = opened[0]!;
    expect(url.searchParams.get('client_id')).toBe(clientMetadataUrl);
    expect(url.searchParams.get('redirect_uri')).toBe('http://127.0.0.1:8765/callback'); // the guide's
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(url.searchParams.get('resource')).toBe(resource);
    expect(stored.verifier).toEqual(expect.any(String));

    const outcome = await authorizeWithWallet(url, String(provider.redirectUrl), { wallet });
    const code = outcome.callback.searchParams.get('code');
    expect(code).toEqual(expect.any(String));
    expect(await auth(provider, { serverUrl: resource, authorizationCode: code!, fetchFn })).toBe('AUTHORIZED');
    const { payload } = await jwtVerify(stored.tokens!.access_token, createRemoteJWKSet(new URL(`${as.url}/jwks`)), { issuer: as.url, audience: resource });
    expect(payload.client_id).toBe(clientMetadataUrl);
    expect(payload.scope).toBe(SCOPES.join(' '));
    expect(docs.hits(DOCUMENT_PATH)).toBe(1);
  });

  test('then it keeps refreshing without the person, for longer than several access-token lifetimes: a public client without DPoP, rotating refresh tokens', async () => {
    expect(stored.tokens?.refresh_token).toEqual(expect.any(String)); // a public, bearer client got a refresh token
    expect(stored.tokens!.token_type).toMatch(/^bearer$/i);
    expect(stored.tokens!.expires_in).toBeLessThanOrEqual(ACCESS_TTL);
    const started = Date.now();
    const refreshTokens = [stored.tokens!.refresh_token!];
    for (let round = 0; round < 3; round++) {
      const old = stored.tokens!;
      // Wait until the access token has expired: the MCP server refuses it from then on.
      await new Promise((resolve) => setTimeout(resolve, (ACCESS_TTL + 1) * 1000));
      expect(await accepted(old.access_token)).toBe(false);
      // The SDK's auth() sees the saved refresh token and refreshes: no authorization request, no wallet, no page.
      const before = requests.length;
      expect(await auth(provider, { serverUrl: resource, fetchFn })).toBe('AUTHORIZED');
      expect(requests.slice(before).filter((r) => r.startsWith('POST /token'))).toEqual(['POST /token 200']);
      expect(requests.slice(before).some((r) => r.startsWith('GET /auth') || r.startsWith('POST /reg'))).toBe(false);
      const fresh = stored.tokens!;
      expect(fresh.access_token).not.toBe(old.access_token);
      expect(await accepted(fresh.access_token)).toBe(true);
      // Rotation: a new refresh token every time.
      expect(fresh.refresh_token).toEqual(expect.any(String));
      expect(refreshTokens).not.toContain(fresh.refresh_token);
      refreshTokens.push(fresh.refresh_token!);
    }
    expect(Date.now() - started).toBeGreaterThan(3 * ACCESS_TTL * 1000);
    expect((await introspect(as.url, stored.tokens!.access_token)).active).toBe(true);
    // The first refresh token, rotated long ago (outside the grace window), is refused, and its reuse revokes the grant.
    const reuse = await fetch(`${as.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshTokens[0]!, client_id: stored.client!.client_id }),
    });
    expect(reuse.status).toBe(400);
    expect(((await reuse.json()) as { error: string }).error).toBe('invalid_grant');
    expect((await introspect(as.url, stored.tokens!.access_token)).active).toBe(false);
  }, 60_000);
});
