import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { JWK } from 'jose';

import { baseConfig, RESOURCE } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { logLines, newKek, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * With ISSUER set, every URL agentauth builds and every check that compares one (a DPoP proof's `htu`, a client
 * assertion's `aud`, discovery's endpoints, the wallet page's links) uses the issuer's origin, whatever Host,
 * X-Forwarded-Host or X-Forwarded-Proto the request carries. Before, they followed the request: a client assertion
 * or DPoP proof made for another server (`https://evil.example/token`) was accepted here when sent with
 * `Host: evil.example`, so a server that received one could use it to obtain tokens as the client.
 */

type SigningKey = Parameters<SignJWT['sign']>[0];
const now = () => Math.floor(Date.now() / 1000);
const CLIENT_ID = 'jwt-agent';

interface Answer { status: number; body: Record<string, unknown> }

/** A request with exactly these headers, Host included (fetch does not let a caller choose Host). */
function send(port: number, method: string, path: string, headers: Record<string, string>, body = ''): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers: { ...headers, ...(body ? { 'content-length': String(Buffer.byteLength(body)) } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const assertion = (key: SigningKey, aud: string) =>
  new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES256' })
    .setIssuer(CLIENT_ID).setSubject(CLIENT_ID).setAudience(aud).setIssuedAt().setExpirationTime('60s')
    .sign(key);

const dpopProof = (key: { privateKey: SigningKey; jwk: JWK }, htu: string) =>
  new SignJWT({ htm: 'POST', htu, iat: now(), jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk })
    .sign(key.privateKey);

describe('ISSUER binds every URL the server builds or checks', () => {
  let clientKey: SigningKey;
  let proofKey: { privateKey: SigningKey; jwk: JWK };
  const servers: RunningServer[] = [];

  /** A server on 127.0.0.1 whose ISSUER is `issuer` (or none), with a private_key_jwt client. */
  async function start(issuer: string | undefined, extraEnv: Record<string, string> = {}): Promise<RunningServer> {
    const config = baseConfig();
    config.clients = [
      ...(config.clients as unknown[]),
      { client_id: 'web-agent', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: ['http://127.0.0.1:65000/callback'], scope: 'read' },
      { client_id: CLIENT_ID, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ ...(await exportJWK(clientPublic)), alg: 'ES256', use: 'sig' }] }, grant_types: ['client_credentials'] },
    ];
    const port = await freePort();
    const dir = tempDir();
    const env = {
      AGENTAUTH_CONFIG: writeConfig(dir, config),
      AGENTAUTH_DATA_DIR: `${dir}/data`,
      AGENTAUTH_KEK: newKek(),
      HOST: '127.0.0.1',
      PORT: String(port),
      ...(issuer === undefined ? {} : { ISSUER: issuer.replace('<port>', String(port)) }),
      ...extraEnv,
    };
    const server = await startServer(env, port);
    servers.push(server);
    return server;
  }
  let clientPublic: Parameters<typeof exportJWK>[0];

  beforeAll(async () => {
    const client = await generateKeyPair('ES256');
    clientKey = client.privateKey as SigningKey;
    clientPublic = client.publicKey;
    const proof = await generateKeyPair('ES256', { extractable: true });
    proofKey = { privateKey: proof.privateKey as SigningKey, jwk: await exportJWK(proof.publicKey) };
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  const tokenRequest = async (port: number, headers: Record<string, string>, aud: string, dpop?: string) =>
    send(port, 'POST', '/token', { 'content-type': 'application/x-www-form-urlencoded', ...(dpop ? { dpop } : {}), ...headers }, new URLSearchParams({
      grant_type: 'client_credentials',
      resource: RESOURCE,
      scope: 'read',
      client_id: CLIENT_ID,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await assertion(clientKey, aud),
    }).toString());

  describe.each([
    ['directly', {}],
    ['behind a trusted proxy (TRUST_PROXY=true)', { TRUST_PROXY: 'true' }],
  ] as const)('ISSUER set, %s', (_label, extraEnv) => {
    let server: RunningServer;
    let issuer: string;
    beforeAll(async () => {
      server = await start('http://127.0.0.1:<port>', extraEnv);
      issuer = `http://127.0.0.1:${server.port}`;
    });

    // Every way a request can name another origin: its Host header, an absolute-form target (below), and behind a
    // trusted proxy X-Forwarded-Host and X-Forwarded-Proto.
    const spellings: Array<[string, Record<string, string>]> = [
      ['Host', { host: 'evil.example' }],
      ['Host with a port', { host: 'evil.example:8443' }],
      ['X-Forwarded-Host', { 'x-forwarded-host': 'evil.example' }],
      ['X-Forwarded-Host and -Proto', { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' }],
    ];

    test.each(spellings)('discovery lists the issuer\'s URLs whatever %s names', async (_name, headers) => {
      const res = await send(server.port, 'GET', '/.well-known/openid-configuration', { host: `127.0.0.1:${server.port}`, ...headers });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ issuer, token_endpoint: `${issuer}/token`, jwks_uri: `${issuer}/jwks`, registration_endpoint: `${issuer}/reg` });
    });

    test.each(spellings)('a client assertion made for another server is refused whatever %s names', async (name, headers) => {
      const other = name === 'X-Forwarded-Host and -Proto' ? 'https://evil.example/token' : `http://${headers.host ?? headers['x-forwarded-host']}/token`;
      const res = await tokenRequest(server.port, { host: `127.0.0.1:${server.port}`, ...headers }, other);
      expect(res.status).toBe(401);
      expect(res.body.error).toBe('invalid_client');
      expect(res.body).not.toHaveProperty('access_token');
    });

    test.each(spellings)('a DPoP proof made for another server is refused whatever %s names', async (name, headers) => {
      const other = name === 'X-Forwarded-Host and -Proto' ? 'https://evil.example/token' : `http://${headers.host ?? headers['x-forwarded-host']}/token`;
      const res = await tokenRequest(server.port, { host: `127.0.0.1:${server.port}`, ...headers }, issuer, await dpopProof(proofKey, other));
      expect(res.status).toBe(400);
      // The URL named is the issuer's token endpoint, never one built from the request's Host or X-Forwarded-* fields.
      expect(res.body).toMatchObject({ error: 'invalid_dpop_proof', error_description: `DPoP proof htu mismatch: the proof's htu must be ${issuer}/token (RFC 9449 section 4.3)` });
    });

    test('an absolute-form target naming another host builds no URL from it', async () => {
      const proof = await dpopProof(proofKey, 'http://evil.example/token');
      const body = new URLSearchParams({
        grant_type: 'client_credentials', resource: RESOURCE, scope: 'read', client_id: CLIENT_ID,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(clientKey, 'http://evil.example/token'),
      }).toString();
      const res = await send(server.port, 'POST', 'http://evil.example/token', { host: `127.0.0.1:${server.port}`, 'content-type': 'application/x-www-form-urlencoded', dpop: proof }, body);
      expect(res.status).toBe(401);
      expect(res.body.error).toBe('invalid_client');
      const meta = await send(server.port, 'GET', 'http://evil.example/.well-known/openid-configuration', { host: `127.0.0.1:${server.port}` });
      expect(meta.body.token_endpoint).toBe(`${issuer}/token`);
    });

    test('the issuer\'s own URLs are accepted, whatever Host the request carries', async () => {
      for (const host of [`127.0.0.1:${server.port}`, 'internal-name:3000']) {
        const byTokenUrl = await tokenRequest(server.port, { host }, `${issuer}/token`, await dpopProof(proofKey, `${issuer}/token`));
        expect(byTokenUrl.status).toBe(200);
        expect(byTokenUrl.body.token_type).toBe('DPoP');
        const byIssuer = await tokenRequest(server.port, { host }, issuer);
        expect(byIssuer.status).toBe(200);
      }
    });

    test('none of this logged an error', () => {
      expect(logLines(server.output()).filter((l) => l.level === 'error' || l.level === 'fatal')).toEqual([]);
    });
  });

  describe('ISSUER not set (a development server: http://localhost:<PORT>)', () => {
    let server: RunningServer;
    beforeAll(async () => {
      server = await start(undefined);
    });

    test('URLs follow the Host the request names, so that 127.0.0.1 and localhost both work', async () => {
      for (const host of [`127.0.0.1:${server.port}`, `localhost:${server.port}`]) {
        const meta = await send(server.port, 'GET', '/.well-known/openid-configuration', { host });
        expect(meta.body).toMatchObject({ issuer: `http://localhost:${server.port}`, token_endpoint: `http://${host}/token` });
        const res = await tokenRequest(server.port, { host }, `http://${host}/token`, await dpopProof(proofKey, `http://${host}/token`));
        expect(res.status).toBe(200);
      }
    });

    test('the server says at start that URLs follow the request until ISSUER is set', () => {
      expect(logLines(server.output()).some((l) => l.level === 'warn' && /ISSUER is not set/.test(String(l.msg)))).toBe(true);
    });
  });

  describe('cookies', () => {
    /** The Set-Cookie lines of an authorization request sent over plain http (TLS ended at a proxy agentauth does not trust). */
    async function cookiesOfAuthorization(issuer: string): Promise<string[]> {
      const server = await start(issuer);
      const params = new URLSearchParams({
        client_id: 'web-agent', response_type: 'code', redirect_uri: 'http://127.0.0.1:65000/callback', scope: 'read',
        resource: RESOURCE, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', state: 's',
      });
      const res = await new Promise<{ status: number; cookies: string[] }>((resolve, reject) => {
        httpRequest({ host: '127.0.0.1', port: server.port, path: `/auth?${params}`, headers: { host: 'as.example.test' } }, (r) => {
          r.resume().on('end', () => resolve({ status: r.statusCode!, cookies: r.headers['set-cookie'] ?? [] }));
        }).on('error', reject).end();
      });
      expect(res.status).toBe(303);
      expect(res.cookies.length).toBeGreaterThan(0);
      return res.cookies;
    }

    test('with an https ISSUER, every cookie is Secure, whatever the connection (no TRUST_PROXY)', async () => {
      const cookies = await cookiesOfAuthorization('https://as.example.test');
      for (const cookie of cookies) expect(cookie).toMatch(/; secure(;|$)/i);
    });

    test('with an http ISSUER (a development server), none is', async () => {
      const cookies = await cookiesOfAuthorization('http://127.0.0.1:<port>');
      for (const cookie of cookies) expect(cookie).not.toMatch(/; secure(;|$)/i);
    });
  });
});
