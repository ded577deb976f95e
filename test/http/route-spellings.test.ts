import { createHash, randomBytes } from 'node:crypto';

import { Wallet } from 'ethers';

import { MongoStorage } from '../../adapters/mongodb.js';
import { allAuditRecords } from '../support/audit.js';
import { baseConfig, introspect, register, REDIRECT, RESOURCE, RS_CLIENT, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { runCli } from '../support/server.js';
import { mongoUri } from '../support/storages.js';
import { authorizeWithWallet } from '../support/user-agent.js';

/**
 * Design invariant 8: a rule cannot be walked around. oidc-provider's router folds path case and accepts one trailing
 * slash, and the Authorization scheme is case-insensitive (RFC 7235), so every spelling below reaches the same
 * endpoint. Each must meet exactly the rule the canonical request meets: the registration policy, the quota, the
 * rotation of registration access tokens, the revocation on delete, and the token.issued audit record.
 */
const REG_SPELLINGS = ['/reg', '/REG', '/Reg', '/reg/', '/REG/', '/rEg/'];
const SCHEMES = ['Bearer', 'bearer', 'BEARER', 'bEaReR'];
const TOKEN_SPELLINGS = ['/token', '/TOKEN', '/Token/', '/token/', '/tOkEn'];
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** The attacker's registration from the issue: a public client_credentials client, an http redirect, a jwks_uri. */
const ATTACK = {
  grant_types: ['client_credentials', 'authorization_code'],
  token_endpoint_auth_method: 'none',
  redirect_uris: ['http://attacker.example/cb'],
  jwks_uri: 'https://attacker.example/jwks',
};
const PUBLIC = { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] };

async function send(url: string, method: string, auth?: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method,
    headers: { ...(auth ? { authorization: auth } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** The client's configuration URI written with another spelling of the registration path. */
const respell = (issuer: string, spelling: string, clientId: string) => `${issuer}${spelling.replace(/\/$/, '')}/${encodeURIComponent(clientId)}${spelling.endsWith('/') ? '/' : ''}`;

describe('every spelling of a registration request meets the same rules (open mode)', () => {
  let as: AgentServer;
  let issuer: string;
  let storage: MongoStorage;

  beforeAll(async () => {
    // client_credentials enabled for anonymous clients (scope read) so that deletion has a token to revoke.
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 1000 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } }));
    issuer = as.server.url;
    storage = new MongoStorage({ uri: mongoUri(), dbName: as.dbName });
    await storage.init();
  });
  afterAll(async () => {
    await as?.server.stop();
    await storage?.close();
  });

  const clients = () => storage.db.collection('oidc_Client').countDocuments();

  test.each(REG_SPELLINGS)('POST %s: the attacker registration is refused with the canonical error and stores nothing', async (path) => {
    const before = await clients();
    const res = await send(`${issuer}${path}`, 'POST', undefined, ATTACK);
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_client_metadata');
    expect(res.body.error_description).toMatch(/^jwks_uri is not supported/);
    // Without the jwks_uri the next rule still applies: no client_credentials for a public, anonymous client.
    const res2 = await send(`${issuer}${path}`, 'POST', undefined, { ...ATTACK, jwks_uri: undefined });
    expect(res2.status).toBe(400);
    expect(res2.body.error).toBe('invalid_client_metadata');
    expect(res2.body.error_description).toMatch(/^grant_types client_credentials/);
    expect(await clients()).toBe(before);
  });

  test.each(REG_SPELLINGS.flatMap((p) => SCHEMES.map((s) => [p, s] as const)))('GET %s/<id> with %s: the read rotates the registration access token and hides the secret', async (path, scheme) => {
    const created = await register(issuer, { ...PUBLIC, token_endpoint_auth_method: 'client_secret_basic' });
    expect(created.status).toBe(201);
    const id = created.body.client_id as string;
    const rat = created.body.registration_access_token as string;
    const read = await send(respell(issuer, path, id), 'GET', `${scheme} ${rat}`);
    expect(read.status).toBe(200);
    expect(read.body.client_secret).toBeUndefined();
    expect(typeof read.body.registration_access_token).toBe('string');
    expect(read.body.registration_access_token).not.toBe(rat);
    // The old token is used up, whichever spelling tries it; the new one works.
    expect((await send(`${issuer}/reg/${id}`, 'GET', `Bearer ${rat}`)).status).toBe(401);
    expect((await send(respell(issuer, path, id), 'GET', `${scheme} ${rat}`)).status).toBe(401);
    expect((await send(`${issuer}/reg/${id}`, 'GET', `Bearer ${read.body.registration_access_token as string}`)).status).toBe(200);
  });

  test.each(REG_SPELLINGS.flatMap((p) => SCHEMES.map((s) => [p, s] as const)))('PUT %s/<id> with %s: unchecked metadata is refused, the token survives the refusal, a valid update rotates it', async (path, scheme) => {
    const created = await register(issuer, PUBLIC);
    const id = created.body.client_id as string;
    const rat = created.body.registration_access_token as string;
    const url = respell(issuer, path, id);
    for (const bad of [
      { ...ATTACK, client_id: id },
      { ...PUBLIC, client_id: id, redirect_uris: ['http://attacker.example/cb'] },
      { ...PUBLIC, client_id: id, agentauth_tier: 'strict' },
    ]) {
      const res = await send(url, 'PUT', `${scheme} ${rat}`, bad);
      expect(res.status).toBe(400);
      expect(['invalid_client_metadata', 'invalid_redirect_uri']).toContain(res.body.error);
    }
    const stored = (await send(`${issuer}/reg/${id}`, 'GET', `Bearer ${rat}`)).body;
    expect(stored.redirect_uris).toEqual([REDIRECT]);
    expect(stored.jwks_uri).toBeUndefined();
    const next = stored.registration_access_token as string;
    const ok = await send(url, 'PUT', `${scheme} ${next}`, { ...PUBLIC, client_id: id, client_name: 'Renamed' });
    expect(ok.status).toBe(200);
    expect(ok.body.client_name).toBe('Renamed');
    expect(ok.body.registration_access_token).not.toBe(next);
    expect((await send(url, 'PUT', `${scheme} ${next}`, { ...PUBLIC, client_id: id })).status).toBe(401);
  });

  test.each(REG_SPELLINGS.map((p, i) => [p, SCHEMES[i % SCHEMES.length]!] as const))('DELETE %s/<id> with %s: revokes every token the client held and writes the audit record', async (path, scheme) => {
    const created = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    const id = created.body.client_id as string;
    const rat = created.body.registration_access_token as string;
    const tokenRes = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${id}:${created.body.client_secret as string}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    const { access_token: token } = (await tokenRes.json()) as { access_token: string };
    expect((await introspect(issuer, token)).active).toBe(true);
    const res = await send(respell(issuer, path, id), 'DELETE', `${scheme} ${rat}`);
    expect(res.status).toBe(204);
    expect(await introspect(issuer, token)).toEqual({ active: false });
    expect(await storage.db.collection('oidc_Client').countDocuments({ _id: id as never })).toBe(0);
    expect(await storage.db.collection('oidc_RegistrationAccessToken').countDocuments({ clientId: id })).toBe(0);
    const records = await allAuditRecords(storage.audit);
    expect(records.filter((r) => r.type === 'client.deleted' && r.client_id === id)).toHaveLength(1);
  });
});

describe('the registration quota counts every spelling', () => {
  let as: AgentServer;
  afterAll(async () => {
    await as?.server.stop();
  });

  test('after the quota is used up across spellings, every spelling answers 429', async () => {
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 3, windowSeconds: 600 } } }));
    const issuer = as.server.url;
    for (const path of ['/reg', '/REG', '/Reg/']) expect((await send(`${issuer}${path}`, 'POST', undefined, PUBLIC)).status).toBe(201);
    for (const path of REG_SPELLINGS) {
      const res = await send(`${issuer}${path}`, 'POST', undefined, PUBLIC);
      expect(res.status).toBe(429);
      expect(res.body.error).toBe('temporarily_unavailable');
    }
  });
});

describe('token mode: every scheme spelling of an initial access token meets the policy', () => {
  let as: AgentServer;
  afterAll(async () => {
    await as?.server.stop();
  });

  test.each([['Bearer'], ['bearer'], ['BEARER']])('%s <IAT>: refused metadata stays refused; accepted metadata gets the token\'s tier', async (scheme) => {
    as ??= await startAgentServer(baseConfig({ registration: { mode: 'token' } }));
    const issuer = as.server.url;
    const created = await runCli(['clients', 'iat', 'create', '--tier', 'strict'], as.env);
    expect(created.code).toBe(0);
    const iat = created.stdout.trim();
    for (const path of ['/reg', '/REG/']) {
      const refused = await send(`${issuer}${path}`, 'POST', `${scheme} ${iat}`, { ...ATTACK, token_endpoint_auth_method: 'client_secret_basic' });
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe('invalid_client_metadata');
    }
    const ok = await send(`${issuer}/Reg/`, 'POST', `${scheme} ${iat}`, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ agentauth_tier: 'strict', agentauth_registration: 'initial_access_token', dpop_bound_access_tokens: true });
  });
});

describe('every spelling of the token endpoint writes the token.issued audit record', () => {
  let as: AgentServer;
  let storage: MongoStorage;
  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    storage = new MongoStorage({ uri: mongoUri(), dbName: as.dbName });
    await storage.init();
  });
  afterAll(async () => {
    await as?.server.stop();
    await storage?.close();
  });

  test.each(TOKEN_SPELLINGS)('POST %s', async (path) => {
    const res = await fetch(`${as.server.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    expect(res.status).toBe(200);
    const { access_token: token } = (await res.json()) as { access_token: string };
    const records = await allAuditRecords(storage.audit);
    const issued = records.filter((r) => r.type === 'token.issued' && r.details.sha256 === sha256(token));
    expect(issued).toHaveLength(1);
    expect(issued[0]!.client_id).toBe(RS_CLIENT.id);
    expect((await introspect(as.server.url, token)).active).toBe(true);
  });
});

describe('every spelling of the token endpoint refuses a code\'s wrong resource without using the code up', () => {
  let as: AgentServer;
  let clientId: string;
  const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    const created = await register(as.server.url, { ...PUBLIC, response_types: ['code'], scope: 'read' });
    clientId = created.body.client_id as string;
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  test.each(TOKEN_SPELLINGS)('POST %s', async (path) => {
    const verifier = randomBytes(32).toString('base64url');
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    const url = new URL(`${as.server.url}/auth`);
    url.search = new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: challenge, code_challenge_method: 'S256' }).toString();
    const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet });
    const code = callback.searchParams.get('code')!;
    const exchange = (resource: string) =>
      fetch(`${as.server.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', client_id: clientId, code, code_verifier: verifier, redirect_uri: REDIRECT, resource }),
      });
    const refused = await exchange('https://elsewhere.example.com');
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({ error: 'invalid_target', error_description: `resource https://elsewhere.example.com was not part of the authorization request; this authorization code covers ${RESOURCE}` });
    const ok = await exchange(RESOURCE);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { access_token?: string }).access_token).toEqual(expect.any(String));
  });
});
