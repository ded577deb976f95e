import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';

import { MAX_BEARER_TTL } from '../../server/resource-servers.js';
import { mongoUri } from '../support/storages.js';
import { logLines, newKek, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const RESOURCE = 'https://api.example.com';
const SECRET = 'a-very-long-client-secret-0123456789abcdef';
const CONFIG = {
  resourceServers: [
    { identifier: RESOURCE, scopes: ['read', 'write'], accessTokenTTL: 600 },
    { identifier: 'https://other.example.com', scopes: ['other'] },
  ],
  clients: [{ client_id: 'svc-1', client_secret: SECRET, grant_types: ['client_credentials'], tier: 'long' }],
  // A tier allowing 15-minute access tokens: only a sender-constrained token may use more than five minutes of it.
  tiers: { long: { accessTokenTTL: 900, refreshTokenIdleTTL: 3600, refreshTokenAbsoluteTTL: 86400, dpop: 'optional', dpopNonce: false } },
};

async function clientCredentials(url: string, body: Record<string, string>, extraHeaders: Record<string, string> = {}) {
  const res = await fetch(`${url}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`svc-1:${SECRET}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      ...extraHeaders,
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', ...body }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const backends = [
  ['embedded', () => ({})],
  ['mongodb', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('tokens'), AGENTAUTH_KEK: newKek() })],
] as const;

describe.each(backends)('tokens on the %s store', (_name, storeEnv) => {
  let env: Record<string, string>;
  let server: RunningServer | undefined;

  beforeAll(() => {
    const dir = tempDir();
    env = { AGENTAUTH_CONFIG: writeConfig(dir, CONFIG), AGENTAUTH_DATA_DIR: `${dir}/data`, ...storeEnv() };
  });

  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  test('client_credentials gives an ES256 at+jwt with jti and aud that still verifies against /jwks after a restart', async () => {
    server = await startServer(env);
    const issuer = server.url;
    const { status, body } = await clientCredentials(issuer, { resource: RESOURCE, scope: 'read' });
    expect(status).toBe(200);
    expect(body.token_type).toBe('Bearer');
    // A bearer token never lives more than five minutes, whatever the resource server asks for.
    expect(body.expires_in).toBe(MAX_BEARER_TTL);
    const token = body.access_token as string;
    const header = decodeProtectedHeader(token);
    expect(header).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });

    const firstJwks = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: Array<{ kid: string; d?: string }> };
    expect(firstJwks.keys.map((k) => k.kid)).toEqual([header.kid]);
    expect(firstJwks.keys.every((k) => k.d === undefined)).toBe(true);

    const verify = async () =>
      jwtVerify(token, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer, audience: RESOURCE, typ: 'at+jwt' });
    const { payload } = await verify();
    expect(payload).toMatchObject({ client_id: 'svc-1', sub: 'svc-1', scope: 'read', aud: RESOURCE });
    expect(typeof payload.jti).toBe('string');
    expect(payload.exp! - payload.iat!).toBe(MAX_BEARER_TTL);

    // Neither the secret nor the token may appear in the logs.
    expect(server.output()).not.toContain(SECRET);
    expect(server.output()).not.toContain(token);
    const requestLine = logLines(server.output()).find((l) => l.msg === 'request' && l.path === '/token');
    expect(requestLine).toMatchObject({ method: 'POST', status: 200 });
    expect(typeof requestLine?.ms).toBe('number');

    expect(await server.stop()).toBe(0);
    server = await startServer(env, server.port);
    expect(server.output()).not.toContain('generated the first signing key');
    const secondJwks = (await (await fetch(`${issuer}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(secondJwks.keys.map((k) => k.kid)).toEqual([header.kid]);
    await expect(verify()).resolves.toBeDefined();
  });

  test('a DPoP-bound token carries cnf.jkt and the resource server TTL; the five-minute cap is for bearer tokens only', async () => {
    server = await startServer(env);
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const proof = await new SignJWT({ htm: 'POST', htu: `${server.url}/token`, jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .setIssuedAt()
      .sign(privateKey);
    const { status, body } = await clientCredentials(server.url, { resource: RESOURCE, scope: 'read' }, { DPoP: proof });
    expect(status).toBe(200);
    expect(body.token_type).toBe('DPoP');
    expect(body.expires_in).toBe(600);
    const { payload } = await jwtVerify(body.access_token as string, createRemoteJWKSet(new URL(`${server.url}/jwks`)), {
      issuer: server.url,
      audience: RESOURCE,
    });
    expect(payload.cnf).toEqual({ jkt: await calculateJwkThumbprint(jwk) });
  });

  test('an unknown resource gets invalid_target; several resource servers and no resource gets invalid_target', async () => {
    server = await startServer(env);
    const unknown = await clientCredentials(server.url, { resource: 'https://evil.example.com', scope: 'read' });
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe('invalid_target');
    // The description echoes the resource in RFC 6749 section 5.2's characters, bounded: a tab, a line feed, a quote,
    // a backslash and a non-ASCII letter are percent-escaped (the quote becomes '), and a long value is cut.
    const odd = await clientCredentials(server.url, { resource: 'https://x.example.com/\t\n"\\\u00fc', scope: 'read' });
    expect(odd).toMatchObject({ status: 400, body: { error: 'invalid_target', error_description: "unknown resource: https://x.example.com/%09%0A'%5C%C3%BC is not a resource server of this authorization server" } });
    const long = await clientCredentials(server.url, { resource: `https://x.example.com/${'\u00fc'.repeat(3000)}`, scope: 'read' });
    const description = String(long.body.error_description);
    expect({ status: long.status, error: long.body.error, ascii: /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/.test(description), length: description.length, end: description.slice(-3) })
      .toEqual({ status: 400, error: 'invalid_target', ascii: true, length: 600, end: '...' });
    const none = await clientCredentials(server.url, { scope: 'read' });
    expect(none.status).toBe(400);
    expect(none.body.error).toBe('invalid_target');
    expect(none.body.error_description).toMatch(/resource parameter is required/);
    // OpenID scopes alone name no resource either: there is no person for userinfo, so no token without an audience.
    for (const scope of ['openid', 'openid profile']) {
      const oidcOnly = await clientCredentials(server.url, { scope });
      expect({ scope, status: oidcOnly.status, error: oidcOnly.body.error }).toEqual({ scope, status: 400, error: 'invalid_target' });
    }
  });

  test('client_credentials for OpenID scopes only, with one resource server, is a token for that resource server', async () => {
    const dir = tempDir();
    server = await startServer({ ...env, AGENTAUTH_CONFIG: writeConfig(dir, { ...CONFIG, resourceServers: [CONFIG.resourceServers[0]] }) });
    const { status, body } = await clientCredentials(server.url, { scope: 'openid' });
    expect(status).toBe(200);
    const token = body.access_token as string;
    expect(token.split('.')).toHaveLength(3);
    expect(JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString())).toMatchObject({ aud: RESOURCE, client_id: 'svc-1' });
    expect(body.scope).toBeUndefined();
  });

  test('wrong client secret gets invalid_client; the token endpoint never answers 500 to malformed input', async () => {
    server = await startServer(env);
    const wrong = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('svc-1:not-the-secret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com',
    });
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: string }).error).toBe('invalid_client');

    const hostile = [
      'grant_type=client_credentials&client_id[$gt]=&client_secret[$ne]=x',
      'grant_type=client_credentials&client_id=%24where&client_secret=x',
      'grant_type=authorization_code&code[$gt]=&client_id=svc-1&client_secret=x',
      'grant_type=refresh_token&refresh_token=%24ne&client_id=svc-1',
      'grant_type=client_credentials&client_id=a&client_id=b',
      '{"grant_type":{"$gt":""}}',
    ];
    for (const body of hostile) {
      const res = await fetch(`${server.url}/token`, {
        method: 'POST',
        headers: { 'content-type': body.startsWith('{') ? 'application/json' : 'application/x-www-form-urlencoded' },
        body,
      });
      expect(res.status).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      const json = (await res.json()) as { error: string };
      expect(['invalid_request', 'invalid_client', 'unsupported_grant_type', 'invalid_grant']).toContain(json.error);
      expect(JSON.stringify(json)).not.toMatch(/at .*\.js:\d+/);
    }
  });
});
