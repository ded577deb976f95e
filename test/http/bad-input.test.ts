import { connect } from 'node:net';
import type { Socket } from 'node:net';

import { Wallet } from 'ethers';
import { MongoClient } from 'mongodb';
import * as oidc from 'openid-client';

import { authorizeWithWallet, UserAgent } from '../support/user-agent.js';
import { baseConfig, insecure, introspect, OPAQUE_RESOURCE, REDIRECT, register, RESOURCE, RS_CLIENT, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { logLines } from '../support/server.js';
import { mongoUri } from '../support/storages.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';
import { sentBack } from '../support/sent-back.js';

/**
 * Design invariant 5: bad input gets an RFC-shaped 4xx with a useful description, never a 500, and changes no state.
 * Every request here is malformed in one way (its path, its Host, its size, its redirect URIs, its refresh target);
 * each case checks the status, the error body and that nothing was stored or used up.
 */

const GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const agentKey = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');
const userKey = new Wallet('0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e');
const MIB3 = 3 * 1024 * 1024;

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A keep-alive HTTP/1.1 connection driven by hand: requests are written as raw bytes, responses parsed by length. */
class RawConnection {
  readonly socket: Socket;
  #buffer = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  ended = false;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, d]);
      this.#wake();
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.#wake();
    });
    this.socket.on('close', () => {
      this.ended = true;
      this.#wake();
    });
    // Writes still in flight when the server closes (the rest of a refused body) fail; the answer was already read.
    this.socket.on('error', () => undefined);
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  async #until(ready: () => boolean): Promise<void> {
    while (!ready()) {
      if (this.ended) throw new Error(`connection closed; received ${JSON.stringify(this.#buffer.toString('latin1').slice(0, 200))}`);
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** The next response on this connection (Content-Length framed, as every agentauth answer is). */
  async response(): Promise<RawResponse> {
    await this.#until(() => this.#buffer.includes('\r\n\r\n'));
    const headEnd = this.#buffer.indexOf('\r\n\r\n');
    const [statusLine, ...lines] = this.#buffer.subarray(0, headEnd).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    await this.#until(() => this.#buffer.length >= headEnd + 4 + length);
    const body = this.#buffer.subarray(headEnd + 4, headEnd + 4 + length).toString('utf8');
    this.#buffer = this.#buffer.subarray(headEnd + 4 + length);
    return { status: Number(statusLine!.split(' ')[1]), headers, body };
  }

  /** Resolves once the server has closed the connection. */
  async closedByServer(): Promise<void> {
    await new Promise<void>((resolve) => {
      if (this.ended) return resolve();
      const check = () => (this.ended ? resolve() : this.#waiters.push(check));
      this.#waiters.push(check);
    });
  }

  /** Bytes received and not yet parsed as a response. */
  unread(): string {
    return this.#buffer.toString('latin1');
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** One request on a fresh connection (lets a test send what fetch refuses to: any Host, any path). */
async function raw(port: number, method: string, path: string, headers: Record<string, string> = {}, body = ''): Promise<RawResponse> {
  const conn = new RawConnection(port);
  try {
    const all = { host: `localhost:${port}`, ...headers, ...(body ? { 'content-length': String(Buffer.byteLength(body)) } : {}) };
    conn.write(`${method} ${path} HTTP/1.1\r\n${Object.entries(all).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`);
    return await conn.response();
  } finally {
    conn.destroy();
  }
}

function expectOAuthError(res: { status: number; headers: Record<string, string>; body: string }, status: number, error: string, description?: RegExp): Record<string, unknown> {
  expect(res.status).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  const body = JSON.parse(res.body) as Record<string, unknown>;
  expect(body.error).toBe(error);
  expect(typeof body.error_description).toBe('string');
  if (description) expect(body.error_description).toMatch(description);
  return body;
}

describe('bad input gets an RFC-shaped 4xx, never a 500, and changes nothing', () => {
  let as: AgentServer;
  let issuer: string;
  let port: number;
  let mongo: MongoClient;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 1000 } } }));
    issuer = as.server.url;
    port = as.server.port;
    mongo = await new MongoClient(mongoUri()).connect();
  });
  afterAll(async () => {
    await as?.server.stop();
    await mongo?.close();
  });

  const clients = () => mongo.db(as.dbName).collection('oidc_Client');
  const storedClient = async (id: string) => {
    const doc = await clients().findOne({ _id: id as never });
    return doc ? (JSON.parse(doc.payload as string) as Record<string, unknown>) : undefined;
  };

  describe('malformed percent-escapes in the path', () => {
    let clientId: string;
    let rat: string;

    beforeAll(async () => {
      const created = await register(issuer, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
      expect(created.status).toBe(201);
      clientId = created.body.client_id as string;
      rat = created.body.registration_access_token as string;
    });

    // The generic path check answers these before any route (oidc-provider would decode them leniently).
    test.each([
      ['GET', '/reg/%ZZ'],
      ['PUT', '/reg/%ZZ'],
      ['DELETE', '/reg/%ZZ'],
      ['DELETE', '/REG/%ZZ/'],
      ['GET', '/reg/%'],
      ['DELETE', '/reg/%C0%AE'],
    ])('%s %s is 400 invalid_request, and no client is read, changed or deleted', async (method, path) => {
      const before = await clients().countDocuments();
      const body = method === 'PUT' ? JSON.stringify({ client_id: clientId, redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read write' }) : '';
      const res = await raw(port, method, path, { authorization: `Bearer ${rat}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body);
      expectOAuthError(res, 400, 'invalid_request', /malformed percent-escape/);
      expect(await clients().countDocuments()).toBe(before);
      expect((await storedClient(clientId))?.scope).toBe('read');
    });

    test.each([
      ['GET', '/interaction/%ZZ'],
      ['POST', '/interaction/%ZZ/login'],
      ['POST', '/interaction/abc%ZZ/confirm'],
      ['GET', '/Interaction/%ZZ/'],
      ['GET', '/interaction-assets/%ZZ'],
      ['GET', '/auth/%ZZ'],
      ['GET', '/session/end/%ZZ'],
      ['POST', '/token/%ZZ'],
      ['GET', '/%ZZ'],
      ['GET', '/.well-known/openid-configuration%ZZ'],
    ])('%s %s is 400 invalid_request', async (method, path) => {
      expectOAuthError(await raw(port, method, path), 400, 'invalid_request', /malformed percent-escape/);
    });

    test('malformed escapes in a query or a form body are refused by the endpoint with a 4xx', async () => {
      const auth = await raw(port, 'GET', '/auth?client_id=%ZZ&response_type=code&x=%');
      expect(auth.status).toBe(400);
      expect(JSON.parse(auth.body)).toMatchObject({ error: 'invalid_client' });
      const token = await raw(port, 'POST', '/token', { 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=%ZZ&client_id=%ZZ');
      expect(token.status).toBeGreaterThanOrEqual(400);
      expect(token.status).toBeLessThan(500);
      expect(typeof JSON.parse(token.body).error).toBe('string');
      const basic = await raw(port, 'POST', '/token', { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic JVpaOiVaWg==' }, 'grant_type=client_credentials');
      // RFC 6749 §5.2: credentials in the Authorization header the server cannot read fail client authentication.
      expectOAuthError(basic, 401, 'invalid_client', /must each be application\/x-www-form-urlencoded before base64/);
    });
  });

  describe('a method or path no endpoint takes', () => {
    test.each([
      ['GET', '/token', 'POST, OPTIONS'],
      ['PUT', '/TOKEN/', 'POST, OPTIONS'],
      ['GET', '/tOkEn', 'POST, OPTIONS'],
      ['GET', '/reg', 'POST'],
      ['POST', '/jwks', 'GET, HEAD, OPTIONS'],
      ['DELETE', '/token/introspection', 'POST, OPTIONS'],
      ['GET', '/token/revocation/', 'POST, OPTIONS'],
      ['POST', '/.well-known/openid-configuration', 'GET, HEAD, OPTIONS'],
      ['POST', '/.well-known/oauth-authorization-server', 'GET, HEAD, OPTIONS'],
      // agentauth's own: the probes and the key archive.
      ['POST', '/healthz', 'GET, HEAD'],
      ['DELETE', '/readyz', 'GET, HEAD'],
      ['PUT', '/keys', 'GET, HEAD'],
    ])('%s %s: 405 invalid_request as JSON, Allow naming what is served there (%s)', async (method, path, allow) => {
      const res = await raw(port, method, path);
      const body = expectOAuthError(res, 405, 'invalid_request', new RegExp(`^${method} is not accepted at ${path.replace(/[.]/g, '\\.')}; use `));
      expect(res.headers.allow).toBe(allow);
      expect(body.error_description).toMatch(/; use (GET|POST)$/);
    });

    test('a path nothing routes: 404 not_found as JSON, not a text page', async () => {
      for (const path of ['/nope', '/interaction-assets/nope.js', '/token/x', '/healthz/']) {
        expectOAuthError(await raw(port, 'GET', path), 404, 'not_found', /^there is no endpoint at GET \//);
      }
    });
  });

  test('an authorization request for a client_id that does not exist says so, naming it, on the page and in JSON', async () => {
    const path = `/auth?${new URLSearchParams({ client_id: 'nobody-<b>', response_type: 'code', scope: 'openid', redirect_uri: REDIRECT })}`;
    const page = await fetch(`${issuer}${path}`, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(400);
    const html = await page.text();
    // It said "Client is invalid". The id is escaped on the page.
    expect(html).toContain('No client is registered with client_id &#39;nobody-&lt;b&gt;&#39; on this authorization server (invalid_client).');
    const json = await fetch(`${issuer}${path}`, { headers: { accept: 'application/json' } });
    expect(await json.json()).toEqual({ error: 'invalid_client', error_description: "no client is registered with client_id 'nobody-<b>' on this authorization server", iss: issuer });
  });

  describe('a form body sent without a Content-Type', () => {
    const basic = `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`;
    const form = `grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read`;

    test('is 400 saying to send its Content-Type, on every route that reads a form and every spelling of it; nothing is issued', async () => {
      // oidc-provider read such a body as none, and named a parameter that had been sent ("missing required parameter 'grant_type'").
      for (const path of ['/token', '/TOKEN', '/token/', '/token/introspection', '/Token/Introspection/', '/token/revocation', '/request', '/me', '/session/end/confirm']) {
        for (const headers of [{ authorization: basic }, { authorization: basic, 'content-type': '' }] as Array<Record<string, string>>) {
          const res = await raw(port, 'POST', path, headers, path.toLowerCase().startsWith('/token') && !path.toLowerCase().includes('/token/') ? form : 'token=x&client_id=x');
          expect({ path, ...expectOAuthError(res, 400, 'invalid_request') }).toMatchObject({ path, error_description: expect.stringMatching(/^the request body has no Content-Type header: send it as application\/x-www-form-urlencoded/) });
        }
      }
      // The same body with its Content-Type is served; one with no body and no Content-Type gets the route's own answer.
      expect((await raw(port, 'POST', '/token', { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, form)).status).toBe(200);
      expectOAuthError(await raw(port, 'POST', '/token', { authorization: basic, 'content-length': '0' }), 400, 'invalid_request', /grant_type/);
      // A chunked body may be empty, which the route serves: it is left to the route (here, an empty one to /token).
      const conn = new RawConnection(port);
      try {
        conn.write(`POST /token HTTP/1.1\r\nhost: localhost:${port}\r\nauthorization: ${basic}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`);
        expectOAuthError(await conn.response(), 400, 'invalid_request', /grant_type/);
      } finally {
        conn.destroy();
      }
    });

    test('other routes are left to their own rules: registration names the JSON it wants, a path nothing routes is 404', async () => {
      const reg = await raw(port, 'POST', '/reg', {}, '{"redirect_uris":["https://a.example/cb"]}');
      expect(reg.status).toBe(400);
      expect(JSON.parse(reg.body).error_description).not.toMatch(/x-www-form-urlencoded/);
      expect((await raw(port, 'POST', '/nowhere', {}, 'a=b')).status).toBe(404);
    });
  });

  describe('header fields that must come once, and query strings that are not UTF-8', () => {
    const send = async (head: string) => {
      const conn = new RawConnection(port);
      try {
        conn.write(head);
        return await conn.response();
      } finally {
        conn.destroy();
      }
    };

    test('two Host fields (RFC 9112 section 3.2) are 400 invalid_request, on every kind of endpoint, and not cacheable', async () => {
      for (const path of ['/.well-known/openid-configuration', '/jwks', '/auth', '/session/end']) {
        const res = await send(`GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nHost: evil.example\r\n\r\n`);
        expectOAuthError(res, 400, 'invalid_request', /^the request has 2 Host header fields: send exactly one/);
        expect(res.headers['cache-control']).toBe('no-store');
      }
    });

    test('two Authorization fields are 400 invalid_request whichever comes first (Node kept the first), and no token is issued', async () => {
      const body = `grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read`;
      const good = `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`;
      const bad = `Basic ${Buffer.from(`${RS_CLIENT.id}:wrong`).toString('base64')}`;
      for (const [first, second] of [[good, bad], [bad, good]]) {
        const res = await send(`POST /token HTTP/1.1\r\nHost: localhost:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: ${first}\r\nAuthorization: ${second}\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        expectOAuthError(res, 400, 'invalid_request', /^the request has 2 Authorization header fields/);
      }
    });

    test('descriptions in RFC 6749 section 5.2 characters from every layer: refusals made before any route, a userinfo challenge, an error redirect', async () => {
      const RFC6749 = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
      const early = [
        await raw(port, 'POST', '/token', { 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'gzip' }, 'x=1'),
        await raw(port, 'POST', '/token', { 'content-type': 'application/x-www-form-urlencoded; charset="a\\b"' }, 'x=1'),
        await raw(port, 'GET', '/jwks', { host: 'a"b' }),
        await raw(port, 'GET', '/jwks', { host: 'caf\u00e9' }),
      ];
      for (const res of early) {
        const body = JSON.parse(res.body) as { error_description: string };
        expect({ status: res.status, description: body.error_description, ok: RFC6749.test(body.error_description) }).toMatchObject({ ok: true });
        expect(res.headers['cache-control']).toBe('no-store');
      }
      // userinfo writes a Bearer challenge around its body parser: it says what the body says.
      const me = await fetch(`${issuer}/me`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `access_token=abc${'&'.repeat(1000)}` });
      const meBody = (await me.json()) as { error_description: string };
      expect(meBody.error_description).toMatch(/^the request body has more than 1000 parameters/);
      expect(me.headers.get('www-authenticate')).toContain(`error_description="${meBody.error_description}"`);
      // At /auth the error goes back to the client's redirect URI, with the description in those characters too (by
      // the page's link: this client registered itself, server/http/untrusted-redirects.ts).
      const created = await register(issuer, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', scope: 'read' });
      const auth = await fetch(`${issuer}/auth?${new URLSearchParams({ client_id: created.body.client_id as string, response_type: 'code', redirect_uri: REDIRECT, scope: 'read', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: 'https://x.example/"\n\u00fc' })}`, { redirect: 'manual' });
      const sent = await sentBack(auth);
      expect(sent.searchParams.get('error')).toBe('invalid_target');
      expect(RFC6749.test(sent.searchParams.get('error_description')!)).toBe(true);
    });

    test('Expect: an unknown expectation is a JSON 417; 100-continue gets its 100 only for a body an endpoint could take', async () => {
      const unknown = await raw(port, 'POST', '/token', { expect: 'x-anything', 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=client_credentials');
      expectOAuthError(unknown, 417, 'invalid_request', /^the Expect header names an expectation this server does not meet/);
      expect(unknown.headers['content-security-policy']).toBeDefined();

      const tooLarge = new RawConnection(port);
      try {
        tooLarge.write(`POST /token HTTP/1.1\r\nHost: localhost:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n`);
        // No 100 Continue: the refusal comes first, and the body is never sent.
        expectOAuthError(await tooLarge.response(), 413, 'invalid_request');
      } finally {
        tooLarge.destroy();
      }

      const body = `grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read`;
      const fine = new RawConnection(port);
      try {
        fine.write(`POST /token HTTP/1.1\r\nHost: localhost:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`);
        expect((await fine.response()).status).toBe(100);
        fine.write(body);
        expect((await fine.response()).status).toBe(200);
      } finally {
        fine.destroy();
      }
    });

    test('a query string whose escapes are not UTF-8 is 400 (state would not come back as sent); a % that starts no escape is left alone', async () => {
      for (const path of ['/auth?client_id=x&state=ab%FFcd', '/session/end?state=%FF', '/.well-known/openid-configuration?x=%C3', '/interaction/x?y=%ED%A0%80']) {
        expectOAuthError(await raw(port, 'GET', path), 400, 'invalid_request', /^the query string holds percent-escapes that do not decode to UTF-8/);
      }
      expect((await raw(port, 'GET', '/.well-known/openid-configuration?x=%ZZ&y=100%&z=%C3%A9')).status).toBe(200);
      // A person's browser at /auth gets a page saying so.
      const page = await raw(port, 'GET', '/auth?client_id=x&state=%E9', { accept: 'text/html' });
      expect({ status: page.status, type: page.headers['content-type'] }).toEqual({ status: 400, type: expect.stringMatching(/^text\/html/) });
      expect(page.body).toContain('do not decode to UTF-8');
    });
  });

  describe('Host header', () => {
    test.each([
      ['a space', 'GET', '/session/end', 'a b'],
      ['a space, on discovery', 'GET', '/.well-known/openid-configuration', 'a b'],
      ['a slash', 'GET', '/.well-known/oauth-authorization-server', 'a/b'],
      ['user info', 'POST', '/token', 'user@localhost'],
      ['a port out of range', 'GET', '/jwks', 'localhost:99999'],
      ['an unclosed IPv6 bracket', 'GET', '/session/end', '[::1'],
      ['a non-numeric port', 'GET', '/healthz', 'localhost:http'],
      ['an out-of-range IPv4 address', 'GET', '/auth', '999.0.0.1'],
    ])('with %s is 400 invalid_request naming the header (%s %s)', async (_label, method, path, host) => {
      const res = await raw(port, method, path, { host });
      expectOAuthError(res, 400, 'invalid_request', /^the Host header must be a host name or IP address with an optional port/);
    });

    test('an empty Host header, or none (HTTP/1.0 or 1.1), is 400 invalid_request: no endpoint URL is built from it; the probes still answer', async () => {
      for (const path of ['/.well-known/openid-configuration', '/token', '/reg', '/jwks']) {
        const res = await raw(port, 'GET', path, { host: '' });
        expectOAuthError(res, 400, 'invalid_request', /^the Host header must name this server \(RFC 9112 section 3\.2\)/);
      }
      for (const version of ['1.0', '1.1']) {
        const conn = new RawConnection(port);
        try {
          conn.write(`GET /.well-known/openid-configuration HTTP/${version}\r\n\r\n`);
          expectOAuthError(await conn.response(), 400, 'invalid_request', /^the Host header must name this server/);
        } finally {
          conn.destroy();
        }
      }
      expect((await raw(port, 'GET', '/healthz', { host: '' })).status).toBe(200);
      expect((await raw(port, 'GET', '/readyz', { host: '' })).status).toBe(200);
      // Only what the probes themselves answer is exempt: other spellings and methods reach URL-building routes.
      for (const [method, path] of [['GET', '/HEALTHZ'], ['GET', '/healthz/'], ['POST', '/readyz']] as const) {
        expectOAuthError(await raw(port, method, path, { host: '' }), 400, 'invalid_request', /^the Host header must name this server/);
      }
    });

    test('a valid Host with a port is served', async () => {
      expect((await raw(port, 'GET', '/healthz', { host: `127.0.0.1:${port}` })).status).toBe(200);
      expect((await raw(port, 'GET', '/.well-known/openid-configuration', { host: `[::1]:${port}` })).status).toBe(200);
    });

    test('forwarded headers are ignored unless the proxy is trusted', async () => {
      const res = await raw(port, 'GET', '/.well-known/openid-configuration', { 'x-forwarded-host': 'a b', 'x-forwarded-proto': 'javascript' });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body).token_endpoint).toBe(`http://localhost:${port}/token`);
    });

    describe('behind a trusted proxy (TRUST_PROXY=true)', () => {
      let proxied: AgentServer;
      beforeAll(async () => {
        proxied = await startAgentServer(baseConfig(), { TRUST_PROXY: 'true' });
      });
      afterAll(async () => {
        await proxied?.server.stop();
      });

      test.each([
        ['X-Forwarded-Host', { 'x-forwarded-host': 'a b' }, /^the X-Forwarded-Host header must be a host name/],
        ['X-Forwarded-Host', { 'x-forwarded-host': 'evil.example:http, auth.example.com' }, /^the X-Forwarded-Host header must be a host name/],
        ['X-Forwarded-Proto', { 'x-forwarded-proto': 'a b' }, /^the X-Forwarded-Proto header must be http or https \(got 'a b'\)/],
        ['X-Forwarded-Proto', { 'x-forwarded-proto': 'javascript' }, /^the X-Forwarded-Proto header must be http or https/],
      ])('a malformed %s is 400 invalid_request', async (_name, headers, description) => {
        const res = await raw(proxied.server.port, 'GET', '/session/end', headers);
        expectOAuthError(res, 400, 'invalid_request', description);
      });

      test('an X-Forwarded-Host that names no host (empty first value) is refused like an empty Host', async () => {
        const res = await raw(proxied.server.port, 'GET', '/.well-known/openid-configuration', { 'x-forwarded-host': ', auth.example.com' });
        expectOAuthError(res, 400, 'invalid_request', /^the Host header must name this server \(RFC 9112 section 3\.2\)/);
        // A blank X-Forwarded-Host is no forwarded host at all: the Host header is used, as Koa does.
        const blank = await raw(proxied.server.port, 'GET', '/.well-known/openid-configuration', { 'x-forwarded-host': ' ' });
        expect(blank.status).toBe(200);
        expect(JSON.parse(blank.body).token_endpoint).toBe(`http://localhost:${proxied.server.port}/token`);
      });

      test('well-formed forwarded headers are used for the endpoint URLs', async () => {
        const res = await raw(proxied.server.port, 'GET', '/.well-known/openid-configuration', { 'x-forwarded-host': 'auth.example.com', 'x-forwarded-proto': 'https' });
        expect(res.status).toBe(200);
        expect(JSON.parse(res.body).token_endpoint).toBe('https://auth.example.com/token');
      });

      test('none of these made the proxied server log an error', () => {
        expect(logLines(proxied.server.output()).filter((l) => l.level === 'error' || l.event === 'server_error')).toEqual([]);
      });
    });
  });

  describe("requests Node's HTTP parser refuses", () => {
    test('a request line and headers over 16 KiB get 431 with a JSON error saying what to do, and the connection is closed', async () => {
      const conn = new RawConnection(port);
      try {
        conn.write(`GET /auth?state=${'a'.repeat(20_000)} HTTP/1.1\r\nhost: localhost:${port}\r\n\r\n`);
        const res = await conn.response();
        expectOAuthError(res, 431, 'invalid_request', /^the request line and header fields exceed the 16384 bytes this server reads: send long parameters in a POST body/);
        expect(res.headers['x-content-type-options']).toBe('nosniff');
        expect(res.headers.connection).toBe('close');
        await conn.closedByServer();
      } finally {
        conn.destroy();
      }
    });

    test.each([
      ['a method with a character no method has', 'G@T /jwks HTTP/1.1'],
      ['a header line without a colon', 'GET /jwks HTTP/1.1\r\nnot a header'],
    ])('%s gets 400 with a JSON error naming what the parser saw', async (_label, head) => {
      const conn = new RawConnection(port);
      try {
        conn.write(`${head}\r\nhost: localhost:${port}\r\n\r\n`);
        const res = await conn.response();
        expectOAuthError(res, 400, 'invalid_request', /^the request is not valid HTTP\/1\.1 \([A-Za-z ]+\)$/);
        await conn.closedByServer();
      } finally {
        conn.destroy();
      }
      expect((await raw(port, 'GET', '/healthz')).status).toBe(200);
    });
  });

  describe('absolute-form request targets (RFC 9112 §3.2.2)', () => {
    const regBody = JSON.stringify({ client_name: 'absolute-form', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });

    test.each([
      ['an unclosed IPv6 bracket', 'GET', '/healthz', (p: number) => `http://[::1:${p}/healthz`, /^the request target must name a host name or IP address/],
      ['a port out of range', 'GET', '/.well-known/openid-configuration', () => 'http://evil.example:70000/.well-known/openid-configuration', /^the request target must name a host name or IP address/],
      ['no host', 'GET', '/.well-known/openid-configuration', () => 'http:///.well-known/openid-configuration', /^the request target must name a host name or IP address/],
      ['user information', 'GET', '/.well-known/openid-configuration', (p: number) => `http://user:pw@localhost:${p}/.well-known/openid-configuration`, /^the request target must not carry user information/],
      ['another scheme', 'POST', '/token', () => 'ftp://evil.example/token', /^the request target's scheme must be this connection's \(http\), got 'ftp'/],
      ['https, on a server reached over http', 'POST', '/token', (p: number) => `https://localhost:${p}/token`, /^the request target's scheme must be this connection's \(http\), got 'https'/],
    ])('with %s is 400 invalid_request, not a 500 (%s %s)', async (_label, method, _path, target, description) => {
      const res = await raw(port, method, target(port), {}, method === 'POST' ? 'grant_type=client_credentials' : '');
      expectOAuthError(res, 400, 'invalid_request', description);
      expect(res.headers['x-request-id']).toBeDefined();
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    });

    test('a registration sent to a refused target stores no client, and a read of one leaves its registration access token usable', async () => {
      const before = await clients().countDocuments();
      const res = await raw(port, 'POST', 'http://evil.example:70000/reg', { 'content-type': 'application/json' }, regBody);
      expectOAuthError(res, 400, 'invalid_request');
      expect(await clients().countDocuments()).toBe(before);

      const { status, body } = await register(issuer, JSON.parse(regBody));
      expect(status).toBe(201);
      const path = new URL(body.registration_client_uri as string).pathname;
      const refused = await raw(port, 'GET', `http://evil.example:70000${path}`, { authorization: `Bearer ${body.registration_access_token as string}` });
      expectOAuthError(refused, 400, 'invalid_request');
      const read = await fetch(body.registration_client_uri as string, { headers: { authorization: `Bearer ${body.registration_access_token as string}` } });
      expect(read.status).toBe(200);
    });

    test('a well-formed one is served as its path, under the host it names (which replaces the Host header), with the path as sent', async () => {
      const same = await raw(port, 'GET', `http://localhost:${port}/.well-known/openid-configuration`, { host: 'ignored.example' });
      expect(same.status).toBe(200);
      expect(JSON.parse(same.body).token_endpoint).toBe(`http://localhost:${port}/token`);
      const upper = await raw(port, 'GET', `HTTP://LOCALHOST:${port}/healthz`);
      expect(upper.status).toBe(200);
      const query = await raw(port, 'GET', `http://localhost:${port}?x=1`);
      expectOAuthError(query, 404, 'not_found', /at GET \/$/);
      // Dot segments are not resolved away: the same 404 as the origin-form spelling, not the token endpoint.
      const dots = await raw(port, 'GET', `http://localhost:${port}/a/../jwks`);
      const dotsOrigin = await raw(port, 'GET', '/a/../jwks');
      expect([dots.status, JSON.parse(dots.body).error]).toEqual([dotsOrigin.status, JSON.parse(dotsOrigin.body).error]);
      expect(dots.status).toBe(404);
    });

    test('none of these made the server log an error', () => {
      expect(logLines(as.server.output()).filter((l) => l.level === 'error' || l.event === 'server_error')).toEqual([]);
    });
  });

  describe('oversized request bodies', () => {
    const big = Buffer.alloc(MIB3, 'a');

    /** Sends a second request on the same connection and expects it answered (the refused body was drained). */
    async function sameConnectionServes(conn: RawConnection): Promise<void> {
      conn.write(`GET /healthz HTTP/1.1\r\nhost: localhost:${port}\r\n\r\n`);
      const next = await conn.response();
      expect(next.status).toBe(200);
      expect(JSON.parse(next.body)).toEqual({ status: 'ok' });
    }

    test.each([
      ['/token', 'application/x-www-form-urlencoded'],
      ['/TOKEN/', 'application/x-www-form-urlencoded'],
      ['/reg', 'application/json'],
      ['/interaction/abc/login', 'application/x-www-form-urlencoded'],
    ])('a declared 3 MiB body to %s is refused with 413, and the next request on the same connection is answered', async (path, type) => {
      const before = await clients().countDocuments();
      const conn = new RawConnection(port);
      try {
        conn.write(`POST ${path} HTTP/1.1\r\nhost: localhost:${port}\r\ncontent-type: ${type}\r\ncontent-length: ${big.length}\r\n\r\n`);
        conn.write(big);
        const res = await conn.response();
        expectOAuthError(res, 413, 'invalid_request', /exceeds the 65536 bytes/);
        expect(res.headers.connection).toBe('keep-alive');
        await sameConnectionServes(conn);
      } finally {
        conn.destroy();
      }
      expect(await clients().countDocuments()).toBe(before);
    });

    test.each([
      ['/token', 'application/x-www-form-urlencoded'],
      ['/token/introspection', 'application/x-www-form-urlencoded'],
      ['/reg', 'application/json'],
    ] as const)('a chunked 3 MiB body (no Content-Length) to %s is refused part-read with 413, and the next request on the same connection is answered', async (path, type) => {
      const before = await clients().countDocuments();
      const conn = new RawConnection(port);
      try {
        conn.write(`POST ${path} HTTP/1.1\r\nhost: localhost:${port}\r\ncontent-type: ${type}\r\ntransfer-encoding: chunked\r\n\r\n`);
        conn.write(`${big.length.toString(16)}\r\n`);
        conn.write(big);
        conn.write('\r\n0\r\n\r\n');
        const res = await conn.response();
        // oidc-provider's parser stops at its own limit (56 KiB); the answer says so, as a 413 like the others.
        expectOAuthError(res, 413, 'invalid_request', /exceeds the 57344 bytes this endpoint accepts/);
        await sameConnectionServes(conn);
      } finally {
        conn.destroy();
      }
      expect(await clients().countDocuments()).toBe(before);
    });

    test.each([
      ['/reg', 'application/json', 'gzip', JSON.stringify({ client_name: 'gz', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' })],
      ['/REG/', 'application/json', 'br', JSON.stringify({ client_name: 'br', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' })],
      ['/token', 'application/x-www-form-urlencoded', 'deflate', 'grant_type=client_credentials'],
    ] as const)('a body with Content-Encoding to %s (%s, %s) gets 415 with Accept-Encoding: identity, and nothing is stored', async (path, type, encoding, body) => {
      const before = await clients().countDocuments();
      const res = await raw(port, 'POST', path, { 'content-type': type, 'content-encoding': encoding }, body);
      expectOAuthError(res, 415, 'invalid_request', new RegExp(`^the request body is encoded \\(Content-Encoding: '${encoding}'\\); this server accepts unencoded bodies only$`));
      expect(res.headers['accept-encoding']).toBe('identity');
      expect(await clients().countDocuments()).toBe(before);
    });

    test.each([
      ['/reg', 'application/json', 'gzip, chunked', JSON.stringify({ client_name: 'te', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' })],
      ['/REG/', 'application/json', 'deflate,chunked', JSON.stringify({ client_name: 'te', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' })],
      ['/token', 'application/x-www-form-urlencoded', 'foo, Chunked', 'grant_type=client_credentials'],
    ] as const)('a body sent with another transfer coding before chunked to %s (%s, %s) gets 501, nothing is stored, and the connection serves the next request', async (path, type, codings, body) => {
      const before = await clients().countDocuments();
      const conn = new RawConnection(port);
      try {
        const chunk = Buffer.from(body);
        conn.write(`POST ${path} HTTP/1.1\r\nhost: localhost:${port}\r\ncontent-type: ${type}\r\ntransfer-encoding: ${codings}\r\n\r\n${chunk.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
        const res = await conn.response();
        expectOAuthError(res, 501, 'invalid_request', /^the request body has a transfer coding this server does not decode \(Transfer-Encoding: '(gzip|deflate|foo)'\); send it with chunked alone or a Content-Length \(RFC 9112 section 6\.1\)$/);
        await sameConnectionServes(conn);
      } finally {
        conn.destroy();
      }
      expect(await clients().countDocuments()).toBe(before);
    });

    test.each([
      ['/reg', 'application/json; charset=utf-16le', Buffer.from(JSON.stringify({ client_name: 'u16', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' }), 'utf16le')],
      ['/REG/', 'application/json; charset=latin1', JSON.stringify({ client_name: 'l1', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' })],
      ['/token', 'application/x-www-form-urlencoded; charset=bogus', 'grant_type=client_credentials'],
      ['/token/introspection', 'application/x-www-form-urlencoded;charset="ISO-8859-1"', 'token=abc'],
    ] as const)('a body to %s declared in another charset (%s) gets 415 saying to send utf-8, and nothing is stored', async (path, type, body) => {
      const before = await clients().countDocuments();
      const conn = new RawConnection(port);
      try {
        const bytes = Buffer.from(body);
        conn.write(Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\nhost: localhost:${port}\r\ncontent-type: ${type}\r\ncontent-length: ${bytes.length}\r\n\r\n`), bytes]));
        expectOAuthError(await conn.response(), 415, 'invalid_request', /^the request body's charset is not supported \(charset='[a-z0-9-]+'\): send it as utf-8$/);
      } finally {
        conn.destroy();
      }
      expect(await clients().countDocuments()).toBe(before);
    });

    test('a body declared as utf-8 or us-ascii, in any spelling, is read', async () => {
      const metadata = JSON.stringify({ client_name: 'charset', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
      for (const type of ['application/json; charset=UTF-8', 'application/json;charset="utf8"', 'application/json; charset=us-ascii']) {
        expect((await raw(port, 'POST', '/reg', { 'content-type': type }, metadata)).status).toBe(201);
      }
    });

    // Between oidc-provider's limit (56 KiB) and the server's (64 KiB) the answer was "failed to parse the request body".
    test.each([
      ['/token', 'application/x-www-form-urlencoded', `grant_type=client_credentials&x=${'a'.repeat(60_000)}`],
      ['/token/revocation', 'application/x-www-form-urlencoded', `token=${'a'.repeat(60_000)}`],
      ['/reg', 'application/json', JSON.stringify({ client_name: 'a'.repeat(60_000), grant_types: ['client_credentials'] })],
      ['/reg', 'application/json; charset=utf-8', JSON.stringify({ client_name: 'a'.repeat(60_000), grant_types: ['client_credentials'] })],
    ] as const)('a declared 60 KB body to %s (%s) gets 413 naming the 56 KiB limit, and nothing is stored', async (path, type, body) => {
      const before = await clients().countDocuments();
      const res = await raw(port, 'POST', path, { 'content-type': type }, body);
      expectOAuthError(res, 413, 'invalid_request', /^the request body exceeds the 57344 bytes this endpoint accepts$/);
      expect(await clients().countDocuments()).toBe(before);
    });

    test.each([
      ['{"client_name":', /^the request body is not valid JSON$/],
      ['{"client_name": "x",}', /^the request body is not valid JSON$/],
    ])('a registration body that is not JSON (%s) says so', async (body, description) => {
      const res = await raw(port, 'POST', '/reg', { 'content-type': 'application/json' }, body);
      expectOAuthError(res, 400, 'invalid_request', description);
    });

    test('a body far beyond what is drained gets its answer, then its connection is closed; a new connection is served', async () => {
      const conn = new RawConnection(port);
      try {
        const declared = 64 * 1024 * 1024;
        conn.write(`POST /token HTTP/1.1\r\nhost: localhost:${port}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: ${declared}\r\n\r\n`);
        const answer = conn.response();
        for (let sent = 0; sent < declared; sent += big.length) conn.write(big.subarray(0, Math.min(big.length, declared - sent)));
        // Were the whole 64 MiB drained, this request would be answered on the same connection.
        conn.write(`GET /healthz HTTP/1.1\r\nhost: localhost:${port}\r\n\r\n`);
        expectOAuthError(await answer, 413, 'invalid_request', /exceeds the 65536 bytes/);
        await conn.closedByServer();
        expect(conn.unread()).toBe('');
      } finally {
        conn.destroy();
      }
      expect((await raw(port, 'GET', '/healthz')).status).toBe(200);
    });

    test('a small refused request keeps its connection: the next request on the same socket is answered', async () => {
      const conn = new RawConnection(port);
      try {
        const body = 'grant_type=client_credentials';
        conn.write(`POST /token HTTP/1.1\r\nhost: localhost:${port}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
        const first = await conn.response();
        expect(first.status).toBeGreaterThanOrEqual(400);
        expect(first.status).toBeLessThan(500);
        expect(first.headers.connection).toBe('keep-alive');
        await sameConnectionServes(conn);
      } finally {
        conn.destroy();
      }
    });
  });

  describe('redirect URIs at registration', () => {
    const valid = { token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] };

    test.each([
      ['a trailing newline', 'https://client.example.com/cb\n', /printable ASCII.*U\+000A/],
      ['a NUL character', 'https://client.example.com/c\u0000b', /printable ASCII.*U\+0000/],
      ['a malformed percent-escape', 'https://client.example.com/%ZZ', /malformed percent-escape at '%ZZ'/],
      ['full-width host characters', 'https://\uff43\uff4c\uff49\uff45\uff4e\uff54.example.com/cb', /printable ASCII.*U\+FF43/],
      ['an upper-case host', 'https://CLIENT.example.com/cb', /normalised form: register 'https:\/\/client\.example\.com\/cb'/],
      ['the default port', 'https://client.example.com:443/cb', /normalised form/],
      ['no path', 'https://client.example.com', /normalised form: register 'https:\/\/client\.example\.com\/'/],
      ['dot segments', 'http://127.0.0.1:65000/x/../callback', /normalised form: register 'http:\/\/127\.0\.0\.1:65000\/callback'/],
      ['2,001 characters', `https://client.example.com/${'a'.repeat(2001 - 'https://client.example.com/'.length)}`, /must contain URIs of at most 2000 characters \(one has 2001\)/],
      ['50,000 characters', `https://client.example.com/${'a'.repeat(50_000)}`, /must contain URIs of at most 2000 characters/],
    ])('%s is refused with invalid_redirect_uri naming the problem, and nothing is stored', async (_label, uri, description) => {
      const before = await clients().countDocuments();
      const res = await register(issuer, { ...valid, redirect_uris: [REDIRECT, uri] });
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_redirect_uri');
      expect(res.body.error_description).toMatch(/^redirect_uris /);
      expect(res.body.error_description).toMatch(description);
      expect(await clients().countDocuments()).toBe(before);
    });

    test('a redirect URI of 2,000 characters is accepted', async () => {
      const uri = `https://client.example.com/${'a'.repeat(2000 - 'https://client.example.com/'.length)}`;
      const res = await register(issuer, { ...valid, redirect_uris: [uri] });
      expect(res.status).toBe(201);
      expect(res.body.redirect_uris).toEqual([uri]);
    });

    test('post_logout_redirect_uris meet the same rules', async () => {
      const before = await clients().countDocuments();
      const res = await register(issuer, { ...valid, redirect_uris: [REDIRECT], post_logout_redirect_uris: ['https://client.example.com/bye\n'] });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ error: 'invalid_redirect_uri' });
      expect(res.body.error_description).toMatch(/^post_logout_redirect_uris must be printable ASCII/);
      expect(await clients().countDocuments()).toBe(before);
    });

    test('an RFC 7592 update to a bad redirect URI is refused and the stored URIs stay as they were', async () => {
      const created = await register(issuer, { ...valid, redirect_uris: [REDIRECT] });
      expect(created.status).toBe(201);
      const id = created.body.client_id as string;
      const res = await fetch(created.body.registration_client_uri as string, {
        method: 'PUT',
        headers: { authorization: `Bearer ${created.body.registration_access_token as string}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: id, ...valid, redirect_uris: ['https://client.example.com/cb\u0000'] }),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toBe('invalid_redirect_uri');
      expect((await storedClient(id))?.redirect_uris).toEqual([REDIRECT]);
    });
  });

  describe('registration bodies built to break the code that reads them', () => {
    const valid = { token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: [REDIRECT] };
    const deep = (n: number) => `${'['.repeat(n)}"x"${']'.repeat(n)}`;
    /** The valid body with `field` set to a value nested `n` levels deep (written by hand: JSON.stringify would overflow). */
    const withDeep = (field: string, n: number, extra: Record<string, unknown> = {}) => `${JSON.stringify({ ...valid, ...extra }).slice(0, -1)},${JSON.stringify(field)}:${deep(n)}}`;
    const post = (url: string, method: string, body: string, auth?: string) =>
      fetch(url, { method, headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) }, body }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, unknown> }));

    test.each(['id_token_signed_response_alg', 'token_exchange_resources', 'client_name', 'require_auth_time'])('%s nested 5,000 deep: 400 invalid_client_metadata, nothing stored', async (field) => {
      const before = await clients().countDocuments();
      const res = await post(`${issuer}/reg`, 'POST', withDeep(field, 5000));
      expect(res).toEqual({ status: 400, body: { error: 'invalid_client_metadata', error_description: 'the request body nests more than 16 levels deep; client metadata nests 4 at most' } });
      expect(await clients().countDocuments()).toBe(before);
    });

    test('jwks keys nested deep, and an RFC 7592 update with a deep echoed field, are refused the same way', async () => {
      const jwks = `${JSON.stringify({ ...valid, token_endpoint_auth_method: 'private_key_jwt' }).slice(0, -1)},"jwks":{"keys":[{"kty":"EC","alg":${deep(5000)}}]}}`;
      expect((await post(`${issuer}/reg`, 'POST', jwks)).body.error).toBe('invalid_client_metadata');
      const created = await register(issuer, valid);
      expect(created.status).toBe(201);
      const update = await post(created.body.registration_client_uri as string, 'PUT', withDeep('require_auth_time', 5000, { client_id: created.body.client_id }), created.body.registration_access_token as string);
      expect(update.status).toBe(400);
      expect(update.body.error).toBe('invalid_client_metadata');
      // The refused update changed nothing: the token still reads the registration.
      const read = await fetch(created.body.registration_client_uri as string, { headers: { authorization: `Bearer ${created.body.registration_access_token as string}` } });
      expect(read.status).toBe(200);
    });

    test('a member named twice (in any spelling of the name, at any depth) is 400 invalid_request naming it, on every spelling of the route, and nothing is stored', async () => {
      const body = JSON.stringify(valid).slice(0, -1);
      const cases: Array<[string, string, string]> = [
        // Which redirect URI would count is a parser's guess: oidc-provider's took the last.
        ['/reg', `${body},"redirect_uris":["https://evil.example/cb"]}`, 'redirect_uris'],
        ['/REG', `${body},"redirect\\u005furis":["https://evil.example/cb"]}`, 'redirect_uris'],
        ['/Reg/', `${body},"token_endpoint_auth_method":"client_secret_basic"}`, 'token_endpoint_auth_method'],
        ['/reg', `${JSON.stringify({ ...valid, token_endpoint_auth_method: 'private_key_jwt' }).slice(0, -1)},"jwks":{"keys":[{"kty":"EC","crv":"P-256","crv":"P-384"}]}}`, 'crv'],
      ];
      for (const [path, text, name] of cases) {
        const before = await clients().countDocuments();
        const res = await post(`${issuer}${path}`, 'POST', text);
        expect({ path, text, ...res }).toEqual({ path, text, status: 400, body: { error: 'invalid_request', error_description: `the request body names '${name}' twice in one object` } });
        expect(await clients().countDocuments()).toBe(before);
      }
    });

    test('bytes that are not UTF-8 are 400 invalid_request saying so, not U+FFFD in a stored name', async () => {
      const before = await clients().countDocuments();
      for (const bytes of [[0xff], [0xc3], [0xed, 0xa0, 0x80]]) {
        const text = JSON.stringify({ ...valid, client_name: 'Agent X' });
        const at = Buffer.byteLength(text.slice(0, text.indexOf('X')));
        const body = Buffer.concat([Buffer.from(text.slice(0, text.indexOf('X'))), Buffer.from(bytes), Buffer.from(text).subarray(at + 1)]);
        const res = await fetch(`${issuer}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        expect({ bytes, status: res.status, body: (await res.json()) as unknown }).toEqual({ bytes, status: 400, body: { error: 'invalid_request', error_description: 'the request body is not valid UTF-8' } });
      }
      expect(await clients().countDocuments()).toBe(before);
    });

    test('an RFC 7592 update with a member named twice, or not UTF-8, is refused the same way, and its token still reads the registration', async () => {
      const created = await register(issuer, valid);
      expect(created.status).toBe(201);
      const uri = created.body.registration_client_uri as string;
      const token = created.body.registration_access_token as string;
      const update = JSON.stringify({ ...valid, client_id: created.body.client_id }).slice(0, -1);
      const twice = await post(uri, 'PUT', `${update},"redirect_uris":["https://evil.example/cb"]}`, token);
      expect(twice).toEqual({ status: 400, body: { error: 'invalid_request', error_description: "the request body names 'redirect_uris' twice in one object" } });
      const notUtf8 = await fetch(uri, { method: 'PUT', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: Buffer.concat([Buffer.from(`${update},"client_name":"A`), Buffer.from([0xff]), Buffer.from('"}')]) });
      expect(notUtf8.status).toBe(400);
      expect(await notUtf8.json()).toEqual({ error: 'invalid_request', error_description: 'the request body is not valid UTF-8' });
      expect((await storedClient(created.body.client_id as string))?.redirect_uris).toEqual([REDIRECT]);
      const read = await fetch(uri, { headers: { authorization: `Bearer ${token}` } });
      expect(read.status).toBe(200);
    });

    test('field names Object.prototype has (constructor, toString, __proto__) are unsupported fields, named as such', async () => {
      for (const field of ['constructor', 'toString', 'valueOf', 'hasOwnProperty']) {
        const res = await post(`${issuer}/reg`, 'POST', `${JSON.stringify(valid).slice(0, -1)},${JSON.stringify(field)}:1}`);
        expect({ field, ...res }).toEqual({ field, status: 400, body: { error: 'invalid_client_metadata', error_description: `${field} is not a supported client metadata field` } });
      }
    });
  });

  describe('names people read, at registration', () => {
    const valid = { token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: [REDIRECT] };

    test.each([
      ['client_name', 'a NUL character', 'Agent\u0000', /^client_name must not contain control.*U\+0000/],
      ['client_name', 'a newline (a line of its own in the wallet\'s sign-in message)', 'Agent\nURI: https://evil.example', /^client_name must not contain control.*U\+000A/],
      ['client_name', 'a right-to-left override', 'Evil Corp\u202E gnikcaB', /^client_name must not contain .*bidirectional.*U\+202E/],
      ['client_name', 'a line separator', 'Agent\u2028Two', /U\+2028/],
      ['client_name', 'a lone surrogate', 'Agent \ud800', /^client_name must be Unicode text/],
      ['client_name', 'only spaces', '   ', /^client_name must not be blank/],
      ['client_name', 'a zero-width space (two names that read the same)', 'Agent\u200B', /^client_name must not contain invisible characters \(found U\+200B\)/],
      ['client_name', 'a soft hyphen', 'Pay\u00ADPal', /^client_name must not contain invisible characters \(found U\+00AD\)/],
      ['client_name', 'only a Hangul filler (shows nothing)', '\u3164', /^client_name must not contain invisible characters \(found U\+3164\)/],
      ['client_name', 'a Hangul filler between letters', 'Goo\u3164gle', /^client_name must not contain invisible characters \(found U\+3164\)/],
      ['client_name', 'tag characters spelling hidden ASCII', 'Acme\u{E0049}\u{E0067}\u{E006E}', /^client_name must not contain invisible characters \(found U\+E0049\)/],
      ['client_name', 'only braille blanks', '\u2800\u2800\u2800', /^client_name must not be blank/],
      ['client_name', 'U+FFFD (bytes that were not UTF-8)', 'Agent \uFFFD', /^client_name must not contain U\+FFFD/],
      ['client_name', 'a private-use character', 'Agent \uE000', /^client_name must not contain unassigned, private-use or noncharacter code points \(found U\+E000\)/],
      ['client_name', 'a noncharacter', 'Agent \uFDD0', /found U\+FDD0/],
      ['client_name', 'a stack of combining marks', `Agent a${'\u0301'.repeat(20)}`, /^client_name must not stack more than 5 combining marks/],
      ['client_name', 'a leading space', ' Agent', /^client_name must not begin or end with white space/],
      ['client_name', '201 emoji', '\u{1F916}'.repeat(201), /^client_name must be a string of 1 to 200 characters/],
      ['client_name', '201 characters', 'a'.repeat(201), /^client_name must be a string of 1 to 200 characters/],
      ['software_id', 'a DEL character', 'id\u007f', /^software_id must not contain control.*U\+007F/],
      ['software_version', 'a C1 control', '1.0\u0085', /^software_version must not contain control.*U\+0085/],
    ])('%s with %s is refused with invalid_client_metadata naming the character, and nothing is stored', async (field, _label, value, description) => {
      const before = await clients().countDocuments();
      const res = await register(issuer, { ...valid, [field]: value });
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_client_metadata');
      expect(res.body.error_description).toMatch(description);
      expect(await clients().countDocuments()).toBe(before);
    });

    test('contacts: at most 20 addresses, each readable text', async () => {
      const before = await clients().countDocuments();
      const many = await register(issuer, { ...valid, contacts: Array.from({ length: 21 }, (_, i) => `ops${i}@example.com`) });
      expect(many.status).toBe(400);
      expect(many.body).toMatchObject({ error: 'invalid_client_metadata', error_description: 'contacts may list at most 20 addresses' });
      const control = await register(issuer, { ...valid, contacts: ['ops@example.com\r\nBcc: x@example.com'] });
      expect(control.status).toBe(400);
      expect(control.body.error_description).toMatch(/^contacts entries must not contain control.*U\+000D/);
      expect(await clients().countDocuments()).toBe(before);
    });

    test('200 characters are 200 user-perceived characters in any script: 200 emoji, 66 Devanagari conjuncts of three code points', async () => {
      for (const name of ['\u{1F916}'.repeat(200), '\u0915\u094D\u0937'.repeat(66), '\u2764\uFE0F Team \u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}']) {
        const res = await register(issuer, { ...valid, client_name: name });
        expect(res.status).toBe(201);
        expect(res.body.client_name).toBe(name);
      }
    });

    test('names in any script, emoji included, are accepted as sent', async () => {
      // Accents, Japanese, Arabic, an emoji, and an emoji ZWJ sequence (U+200D is kept).
      const name = 'Agent \u00e9t\u00e9 \u30a8\u30fc\u30b8\u30a7\u30f3\u30c8 \u0627\u0644\u0648\u0643\u064a\u0644 \ud83e\udd16 \ud83d\udc69\u200d\ud83d\udcbb';
      const res = await register(issuer, { ...valid, client_name: name, contacts: ['ops@example.com'] });
      expect(res.status).toBe(201);
      expect(res.body.client_name).toBe(name);
      expect((await storedClient(res.body.client_id as string))?.client_name).toBe(name);
    });

    test('a client stored with such a name before this rule (a legacy record) is shown by its id on the login page and in the wallet\'s message', async () => {
      const created = await register(issuer, { ...valid, scope: 'read', client_name: 'Agent' });
      expect(created.status).toBe(201);
      const id = created.body.client_id as string;
      const legacy = { ...(await storedClient(id)), client_name: 'Bank\u202E tneilC' };
      await clients().updateOne({ _id: id as never }, { $set: { payload: JSON.stringify(legacy) } });
      const url = new URL(`${issuer}/auth`);
      for (const [k, v] of Object.entries({ client_id: id, response_type: 'code', redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })) url.searchParams.set(k, v);
      const agent = new UserAgent();
      const res = await agent.fetch(url);
      const page = await agent.fetch(new URL(res.headers.get('location')!, issuer));
      const html = await page.text();
      expect(page.status).toBe(200);
      expect(html).not.toContain('\u202E');
      expect(html).toContain(`<title>Sign in – ${id}</title>`);
      expect(html).toContain(`"clientName":"${id}"`);
    });

    test('an RFC 7592 update without client_id in the body is told it is required; a wrong one keeps the mismatch; neither changes anything', async () => {
      const created = await register(issuer, { ...valid, client_name: 'Agent' });
      expect(created.status).toBe(201);
      const id = created.body.client_id as string;
      const token = created.body.registration_access_token as string;
      const put = async (body: Record<string, unknown>) => {
        const res = await fetch(created.body.registration_client_uri as string, {
          method: 'PUT',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      // It said "provided client_id does not match the authenticated client's one", as if it named another client.
      expect(await put({ ...valid, client_name: 'Renamed' })).toEqual({
        status: 400,
        body: { error: 'invalid_request', error_description: `client_id is required in the body of an update and must equal the registered client_id (${id}) (RFC 7592 section 2.2)` },
      });
      expect(await put({ client_id: 'another-client', ...valid, client_name: 'Renamed' })).toEqual({
        status: 400,
        body: { error: 'invalid_request', error_description: "provided client_id does not match the authenticated client's one" },
      });
      expect((await storedClient(id))?.client_name).toBe('Agent');
      // The registration access token was not used up by either: the same token makes the update.
      const ok = await put({ client_id: id, ...valid, client_name: 'Renamed' });
      expect(ok.status).toBe(200);
      expect(ok.body.client_name).toBe('Renamed');
    });

    test('an RFC 7592 update to a name with a control character is refused and the stored name stays', async () => {
      const created = await register(issuer, { ...valid, client_name: 'Agent' });
      expect(created.status).toBe(201);
      const id = created.body.client_id as string;
      const res = await fetch(created.body.registration_client_uri as string, {
        method: 'PUT',
        headers: { authorization: `Bearer ${created.body.registration_access_token as string}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: id, ...valid, client_name: 'Agent\u0000' }),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toBe('invalid_client_metadata');
      expect((await storedClient(id))?.client_name).toBe('Agent');
    });
  });

  describe('security headers on every page, whatever the spelling', () => {
    const expectPageHeaders = (headers: Headers) => {
      expect(headers.get('content-security-policy')).toMatch(/^default-src 'none';\s*script-src 'self'/);
      expect(headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
      expect(headers.get('x-frame-options')).toBe('DENY');
      expect(headers.get('referrer-policy')).toBe('same-origin');
      expect(headers.get('x-content-type-options')).toBe('nosniff');
    };

    test.each(['/session/end', '/SESSION/END', '/session/end/', '/Session/End/'])('GET %s (no session: the auto-submitting form) carries them, with its inline script hashed into the CSP', async (path) => {
      const res = await fetch(`${issuer}${path}`, { headers: { accept: 'text/html' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expectPageHeaders(res.headers);
      // The only inline script oidc-provider writes is allowed by its hash, nothing else.
      expect(res.headers.get('content-security-policy')).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/=]+';/);
      expect(await res.text()).toContain('action="http://localhost');
    });

    test('the logout confirmation and success pages (oidc-provider hooks) carry them and fit the CSP', async () => {
      const config = await oidc.dynamicClientRegistration(
        new URL(issuer),
        { client_name: 'Logout agent', redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' },
        oidc.None(),
        insecure,
      );
      const verifier = oidc.randomPKCECodeVerifier();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT,
        scope: 'read',
        resource: RESOURCE,
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
      });
      const { agent } = await authorizeWithWallet(url, REDIRECT, { wallet: userKey });

      // The last spelling goes on to sign out.
      for (const path of ['/SESSION/END/', '/session/end']) {
        const page = await agent.fetch(`${issuer}${path}?client_id=${encodeURIComponent(config.clientMetadata().client_id)}`, { headers: { accept: 'text/html' } });
        expect(page.status).toBe(200);
        expectPageHeaders(page.headers);
        const html = await page.text();
        expect(html).toContain('Sign out?');
        expect(html).toContain('Logout agent');
        expect(html).not.toMatch(/<style|fonts\.googleapis|<script/);
        if (path !== '/session/end') continue;
        const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
        expect(xsrf).toBeDefined();
        const confirm = await agent.fetch(`${issuer}/Session/End/Confirm/`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
          body: new URLSearchParams({ xsrf: xsrf!, logout: 'yes' }).toString(),
        });
        expect(confirm.status).toBe(303);
        expectPageHeaders(confirm.headers);
        const success = await agent.fetch(new URL(confirm.headers.get('location')!, issuer), { headers: { accept: 'text/html' } });
        expect(success.status).toBe(200);
        expectPageHeaders(success.headers);
        const done = await success.text();
        expect(done).toContain('Signed out');
        expect(done).not.toMatch(/<style|fonts\.googleapis|<script/);
      }
    });

    test('oidc-provider error pages: HTML for browsers with the headers, JSON for everything else', async () => {
      for (const path of ['/session/end?client_id=nobody', '/SESSION/END/?client_id=nobody', '/auth?client_id=nobody&response_type=code']) {
        const page = await fetch(`${issuer}${path}`, { headers: { accept: 'text/html,application/xhtml+xml' } });
        expect(page.status).toBe(400);
        expect(page.headers.get('content-type')).toMatch(/^text\/html/);
        expectPageHeaders(page.headers);
        const html = await page.text();
        expect(html).toContain('Request refused');
        expect(html).toContain('(invalid_client)');
        expect(html).not.toMatch(/<style|<script/);

        const json = await fetch(`${issuer}${path}`, { headers: { accept: 'application/json' } });
        expect(json.status).toBe(400);
        expect(await json.json()).toMatchObject({ error: 'invalid_client' });
      }
    });

    test('JSON answers and agentauth-level refusals carry them too', async () => {
      expectPageHeaders((await fetch(`${issuer}/.well-known/openid-configuration`)).headers);
      const refused = await raw(port, 'GET', '/session/end', { host: 'a b' });
      expect(refused.headers['x-frame-options']).toBe('DENY');
    });
  });

  describe('request objects and request_uri values this server does not take', () => {
    let clientId: string;
    let basic: string;
    let par: string;
    const pushed = () => mongo.db(as.dbName).collection('oidc_PushedAuthorizationRequest');
    const params = (extra: Record<string, string>) => ({
      client_id: clientId,
      response_type: 'code',
      scope: 'read',
      resource: RESOURCE,
      redirect_uri: REDIRECT,
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
      state: 'st',
      ...extra,
    });
    const REQUEST_OBJECT = 'eyJhbGciOiJub25lIn0.eyJzY29wZSI6InJlYWQifQ.';
    const FOREIGN_URI = 'https://client.example/request.jwt';
    const NOT_SUPPORTED = /^request objects \(the request parameter\) are not supported by this authorization server: send the authorization parameters themselves, or push them to the pushed authorization request endpoint (\S+) and send the request_uri it returns \(RFC 9126\)$/;
    const URI_NOT_SUPPORTED = /^request_uri must be one issued by this server's pushed authorization request endpoint (\S+) \(RFC 9126\): a request_uri pointing to a request object elsewhere is not supported \(request_uri_parameter_supported is false\)$/;

    beforeAll(async () => {
      const created = await register(issuer, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
      clientId = created.body.client_id as string;
      basic = `Basic ${Buffer.from(`${clientId}:${created.body.client_secret as string}`).toString('base64')}`;
      const discovery = (await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
      // What the descriptions below point to is what discovery advertises: PAR on, request objects off, no foreign request_uri.
      par = discovery.pushed_authorization_request_endpoint as string;
      expect(par).toBe(`${issuer}/request`);
      expect(discovery.request_parameter_supported).not.toBe(true);
      expect(discovery.request_uri_parameter_supported).toBe(false);
    });

    // (POST /auth is not routed: oidc-provider's enableHttpPostMethods is off.)
    test.each([
      ['/auth', 'request', 'request_not_supported', REQUEST_OBJECT, NOT_SUPPORTED],
      ['/AUTH/', 'request', 'request_not_supported', REQUEST_OBJECT, NOT_SUPPORTED],
      ['/auth', 'request_uri', 'request_uri_not_supported', FOREIGN_URI, URI_NOT_SUPPORTED],
      ['/Auth/', 'request_uri', 'request_uri_not_supported', FOREIGN_URI, URI_NOT_SUPPORTED],
    ])('GET %s with %s: sent back to the client with %s and a description naming the PAR endpoint', async (path, name, error, value, description) => {
      // (By the page's link: this client registered itself, server/http/untrusted-redirects.ts.)
      const res = await fetch(`${issuer}${path}?${new URLSearchParams(params({ [name]: value }))}`, { redirect: 'manual' });
      const location = await sentBack(res);
      expect(`${location.origin}${location.pathname}`).toBe(REDIRECT);
      // It said only error=request_not_supported (or request_uri_not_supported).
      expect(location.searchParams.get('error')).toBe(error);
      expect(location.searchParams.get('state')).toBe('st');
      const said = location.searchParams.get('error_description') ?? '';
      expect(said).toMatch(description);
      expect(description.exec(said)![1]).toBe(par);
    });

    test('without a client to redirect to, the description is in the JSON body and on the page', async () => {
      const path = `/auth?${new URLSearchParams({ client_id: 'nobody', response_type: 'code', request: REQUEST_OBJECT })}`;
      const json = await fetch(`${issuer}${path}`, { headers: { accept: 'application/json' } });
      expect(json.status).toBe(400);
      expect(await json.json()).toEqual({ error: 'request_not_supported', error_description: expect.stringMatching(NOT_SUPPORTED), iss: issuer });
      const page = await fetch(`${issuer}${path}`, { headers: { accept: 'text/html' } });
      expect(page.status).toBe(400);
      // It said "The request was refused (request_not_supported)."
      expect(await page.text()).toContain(`Request objects (the request parameter) are not supported by this authorization server: send the authorization parameters themselves, or push them to the pushed authorization request endpoint ${par} and send the request_uri it returns (RFC 9126) (request_not_supported).`);
      // A request_uri is looked at after the client (an unknown one is invalid_client): a known client, no redirect_uri.
      const uri = await fetch(`${issuer}/auth?${new URLSearchParams({ client_id: clientId, response_type: 'code', request_uri: FOREIGN_URI })}`, { headers: { accept: 'application/json' } });
      expect(uri.status).toBe(400);
      expect(await uri.json()).toEqual({ error: 'request_uri_not_supported', error_description: expect.stringMatching(URI_NOT_SUPPORTED), iss: issuer });
    });

    test.each([
      ['request', REQUEST_OBJECT, 'request_not_supported', 'request objects (the request parameter) are not supported by this authorization server: push the authorization parameters themselves, as form parameters of this request (RFC 9126 section 2.1)'],
      ['request_uri', 'urn:ietf:params:oauth:request_uri:abc', 'request_uri_not_supported', 'request_uri is not accepted at the pushed authorization request endpoint: push the authorization parameters themselves; this endpoint answers with the request_uri to send to the authorization endpoint (RFC 9126 section 2.1)'],
      ['request_uri', FOREIGN_URI, 'request_uri_not_supported', 'request_uri is not accepted at the pushed authorization request endpoint: push the authorization parameters themselves; this endpoint answers with the request_uri to send to the authorization endpoint (RFC 9126 section 2.1)'],
    ])('PAR with %s (%s) is 400 %s saying what to push instead, and nothing is pushed', async (name, value, error, description) => {
      const before = await pushed().countDocuments();
      for (const path of ['/request', '/REQUEST/']) {
        const res = await fetch(`${issuer}${path}`, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params({ [name]: value })) });
        expect(res.status).toBe(400);
        // It said only { error }.
        expect(await res.json()).toEqual({ error, error_description: description });
      }
      expect(await pushed().countDocuments()).toBe(before);
    });

    test('what PAR issues is still taken at /auth, and a PAR request_uri that is unknown is still invalid_request_uri', async () => {
      const res = await fetch(`${issuer}/request`, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params({})) });
      expect(res.status).toBe(201);
      const { request_uri: requestUri } = (await res.json()) as { request_uri: string };
      const used = await fetch(`${issuer}/auth?${new URLSearchParams({ client_id: clientId, request_uri: requestUri })}`, { redirect: 'manual' });
      expect(used.status).toBe(303);
      expect(used.headers.get('location')).toMatch(/^\/interaction\//);
      const unknown = await fetch(`${issuer}/auth?${new URLSearchParams({ client_id: clientId, request_uri: 'urn:ietf:params:oauth:request_uri:unknown', redirect_uri: REDIRECT })}`, { redirect: 'manual' });
      const location = await sentBack(unknown);
      expect(location.searchParams.get('error')).toBe('invalid_request_uri');
      expect(location.searchParams.get('error_description')).toBe('request_uri is invalid, expired, or was already used');
    });
  });

  describe('a refresh request the refresh token cannot serve leaves the token usable', () => {
    let client: oidc.Configuration;

    beforeAll(async () => {
      client = await oidc.dynamicClientRegistration(
        new URL(issuer),
        { grant_types: [GRANT, 'refresh_token'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', scope: 'read write files' },
        oidc.None(),
        insecure,
      );
    });

    async function walletTokens(dpop: oidc.DPoPHandle) {
      const signed = await signedSiwe(issuer, agentKey, { address: agentKey.address, nonce: await fetchNonce(issuer, client.clientMetadata().client_id) });
      return oidc.genericGrantRequest(client, GRANT, { ...signed, resource: RESOURCE, scope: 'read' }, { DPoP: dpop });
    }

    test.each([
      ['another configured resource', { resource: OPAQUE_RESOURCE }, 'invalid_target', new RegExp(`^resource ${OPAQUE_RESOURCE} was not granted to this refresh token; it covers ${RESOURCE}$`)],
      ['an unknown resource', { resource: 'https://unknown.example.com' }, 'invalid_target', /was not granted to this refresh token/],
      ['a scope it was not granted', { resource: RESOURCE, scope: 'write' }, 'invalid_scope', /refresh token missing requested scope/],
    ])('naming %s is refused, and the same refresh token then still works once (no reuse, grant intact)', async (_label, params, error, description) => {
      const dpop = oidc.getDPoPHandle(client, await oidc.randomDPoPKeyPair('ES256'));
      const tokens = await walletTokens(dpop);
      const refreshToken = tokens.refresh_token!;
      expect(typeof refreshToken).toBe('string');

      await expect(oidc.refreshTokenGrant(client, refreshToken, params, { DPoP: dpop })).rejects.toMatchObject({
        error,
        error_description: expect.stringMatching(description),
        status: 400,
      });
      // Not used up: still active, and a correct refresh succeeds and rotates it.
      expect(await introspect(issuer, refreshToken)).toMatchObject({ active: true });
      const refreshed = await oidc.refreshTokenGrant(client, refreshToken, { resource: RESOURCE }, { DPoP: dpop });
      expect(refreshed.refresh_token).not.toBe(refreshToken);
      // The grant was not revoked as a reuse: the first access token and the rotated refresh token are still good.
      expect(await introspect(issuer, tokens.access_token)).toMatchObject({ active: true });
      await expect(oidc.refreshTokenGrant(client, refreshed.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).resolves.toBeDefined();
    });

    test('two resources in one refresh request are invalid_target and the token is not used up', async () => {
      const dpop = oidc.getDPoPHandle(client, await oidc.randomDPoPKeyPair('ES256'));
      const tokens = await walletTokens(dpop);
      const params = new URLSearchParams([['resource', RESOURCE], ['resource', OPAQUE_RESOURCE]]);
      await expect(oidc.refreshTokenGrant(client, tokens.refresh_token!, params, { DPoP: dpop })).rejects.toMatchObject({
        error: 'invalid_target',
        error_description: expect.stringMatching(/^name one resource per refresh request/),
      });
      await expect(oidc.refreshTokenGrant(client, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).resolves.toBeDefined();
    });
  });

  test('none of the above made the server log an unhandled error or a server_error', () => {
    const errors = logLines(as.server.output()).filter((l) => l.level === 'error' || l.event === 'server_error' || l.msg === 'unhandled error');
    expect(errors).toEqual([]);
  });
});
