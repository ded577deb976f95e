import { createHash, randomBytes } from 'node:crypto';

import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AuditRecord } from '../../adapters/types.js';
import { freePort } from '../support/ferretdb.js';
import { mongoUri } from '../support/storages.js';
import { runCli, startConfigured, uniqueDbName } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * `agentauth clients iat create --grant-types ... --scope ...` (and POST /admin/iats with `grant_types` and `scope`):
 * the clients an initial access token registers may register only those grant types and scopes, and their own RFC 7592
 * updates cannot widen them (server/policies/registration-limits.ts).
 */

const ADMIN_TOKEN = randomBytes(32).toString('base64url');
const API = 'https://api.example.com';
const CONFIG = { registration: { mode: 'token' }, resourceServers: [{ identifier: API, scopes: ['read', 'write'] }] };
const MACHINE = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' };
const LIMITS_FIELD = 'agentauth_registration_limits';

type Env = Record<string, string>;
type Json = Record<string, unknown>;
const backends: Array<[string, () => Env]> = [
  ['SQLite', () => ({})],
  ['MongoDB (FerretDB)', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('iat-limits') })],
];

const fingerprintOf = (token: string) => createHash('sha256').update(token).digest('base64url').slice(0, 22);

describe.each(backends)('initial access tokens that limit grant types and scopes, on %s', (_name, storeEnv) => {
  let env: Env;
  let server: RunningServer;
  let adminUrl: string;

  beforeAll(async () => {
    const adminPort = await freePort();
    adminUrl = `http://127.0.0.1:${adminPort}`;
    ({ env, server } = await startConfigured({ ...CONFIG, admin: { port: adminPort } }, { ...storeEnv(), AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN }));
  });

  afterAll(async () => {
    await server?.stop();
  });

  async function createIat(...args: string[]): Promise<Json> {
    const r = await runCli(['clients', 'iat', 'create', '--json', ...args], env);
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    return JSON.parse(r.stdout) as Json;
  }

  const register = async (iat: string, metadata: Json) => {
    const res = await fetch(`${server.url}/reg`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${iat}` }, body: JSON.stringify(metadata) });
    return { status: res.status, body: (await res.json()) as Json };
  };

  const clientCount = async () => (JSON.parse((await runCli(['clients', 'list'], env)).stdout) as unknown[]).length;

  const token = async (client: Json, scope: string) => {
    const res = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${client.client_id as string}:${client.client_secret as string}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: API, scope }),
    });
    return { status: res.status, body: (await res.json()) as Json };
  };

  async function auditEvents(): Promise<AuditRecord[]> {
    const r = await runCli(['audit', 'export'], env);
    expect(r.code).toBe(0);
    return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AuditRecord);
  }

  test('a registration outside the limits is refused, naming them, and uses none of the token; within them the client gets the limits', async () => {
    const created = await createIat('--grant-types', 'client_credentials', '--scope', 'read', '--uses', '1');
    expect(created).toMatchObject({ uses: 1, grant_types: ['client_credentials'], scope: 'read' });
    const iat = created.initial_access_token as string;
    const before = await clientCount();

    const refusals: Array<[Json, RegExp]> = [
      [{ ...MACHINE, grant_types: ['authorization_code'], redirect_uris: ['https://agent.example.com/cb'] }, /^grant_types may only contain client_credentials: the initial access token this client registers with allows only those \(got 'authorization_code'\)$/],
      [{ token_endpoint_auth_method: 'client_secret_basic', redirect_uris: ['https://agent.example.com/cb'] }, /\(got 'authorization_code', the default when grant_types is left out\)$/],
      [{ ...MACHINE, scope: 'read write' }, /^scope contains 'write': the initial access token this client registers with allows only read \(leave scope out to get all of those\)$/],
      [{ ...MACHINE, scope: 'openid' }, /^scope contains 'openid': /],
    ];
    for (const [metadata, description] of refusals) {
      const res = await register(iat, metadata);
      expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_client_metadata' });
      expect(res.body.error_description).toMatch(description);
    }
    // The client cannot name limits of its own.
    const own = await register(iat, { ...MACHINE, [LIMITS_FIELD]: { grant_types: ['client_credentials'] } });
    expect(own.body).toEqual({ error: 'invalid_client_metadata', error_description: `${LIMITS_FIELD} is set by the authorization server from the initial access token, not chosen by the client` });
    expect(await clientCount()).toBe(before);

    // Within them (scope left out: the limits' scope, never "any scope"): the one registration the token allows.
    const ok = await register(iat, MACHINE);
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ grant_types: ['client_credentials'], scope: 'read', [LIMITS_FIELD]: { grant_types: ['client_credentials'], scope: 'read' } });
    expect(await clientCount()).toBe(before + 1);

    // The token endpoint holds the client to its scope (oidc-provider's client scope check).
    expect((await token(ok.body, 'read')).status).toBe(200);
    expect(await token(ok.body, 'write')).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });
  });

  test("the client's own RFC 7592 updates cannot widen its limits, nor change or drop them; a faithful echo is taken", async () => {
    const { initial_access_token: iat } = await createIat('--grant-types', 'client_credentials,authorization_code,refresh_token', '--scope', 'read');
    const created = await register(iat as string, { ...MACHINE });
    expect(created.status).toBe(201);
    const uri = created.body.registration_client_uri as string;
    let rat = created.body.registration_access_token as string;
    const read = async () => {
      const res = await fetch(uri, { headers: { authorization: `Bearer ${rat}` } });
      expect(res.status).toBe(200);
      const { registration_access_token: next, ...view } = (await res.json()) as Json;
      rat = next as string;
      return view;
    };
    const put = async (body: Json) => {
      const res = await fetch(uri, { method: 'PUT', headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const answer = (await res.json()) as Json;
      if (res.status === 200) rat = answer.registration_access_token as string;
      return { status: res.status, body: answer };
    };

    const current = await read();
    expect(current[LIMITS_FIELD]).toEqual({ grant_types: ['client_credentials', 'authorization_code', 'refresh_token'], scope: 'read' });
    const refused: Array<[Json, string | RegExp]> = [
      [{ ...current, grant_types: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'] }, /^grant_types may only contain client_credentials, authorization_code, refresh_token: the initial access token this client registered with allows only those/],
      [{ ...current, scope: 'read write' }, /^scope contains 'write': the initial access token this client registered with allows only read/],
      [{ ...current, [LIMITS_FIELD]: { grant_types: ['client_credentials'], scope: 'read write' } }, `${LIMITS_FIELD} is assigned by the authorization server and cannot be changed by the client`],
    ];
    for (const [body, description] of refused) {
      const res = await put(body);
      expect({ status: res.status, error: res.body.error }).toEqual({ status: 400, error: 'invalid_client_metadata' });
      expect(res.body.error_description).toMatch(description);
    }
    // Within the limits: taken. An update that leaves scope out keeps the limits' scope (it would otherwise be "any").
    const { scope: _scope, [LIMITS_FIELD]: _limits, ...withoutScope } = current;
    const widened = await put({ ...withoutScope, grant_types: ['client_credentials', 'authorization_code'], response_types: ['code'], redirect_uris: ['https://agent.example.com/cb'] });
    expect(widened.status).toBe(200);
    expect(widened.body).toMatchObject({ grant_types: ['client_credentials', 'authorization_code'], scope: 'read', [LIMITS_FIELD]: { scope: 'read' } });
    // The limits survive the update and a faithful echo of the read response.
    const after = await read();
    expect((await put(after)).status).toBe(200);
    expect((await read())[LIMITS_FIELD]).toEqual({ grant_types: ['client_credentials', 'authorization_code', 'refresh_token'], scope: 'read' });
  });

  test('the limits are listed and audited with the token; a token without them registers any grant type the server allows', async () => {
    const created = await createIat('--grant-types', 'client_credentials', '--scope', 'read write');
    const id = fingerprintOf(created.initial_access_token as string);
    const listed = JSON.parse((await runCli(['clients', 'iat', 'list'], env)).stdout) as Json[];
    expect(listed.find((t) => t.id === id)).toMatchObject({ grant_types: ['client_credentials'], scope: 'read write', uses: null });
    const record = (await auditEvents()).find((e) => e.type === 'registration.iat_created' && e.details.iat_id === id);
    expect(record?.details).toEqual({ actor: 'cli', iat_id: id, tier: 'standard', expires_at: expect.any(String), uses: null, grant_types: ['client_credentials'], scope: 'read write' });

    const plain = await createIat();
    expect(plain).toMatchObject({ grant_types: null, scope: null });
    const any = await register(plain.initial_access_token as string, { grant_types: ['authorization_code'], redirect_uris: ['https://agent.example.com/cb'], token_endpoint_auth_method: 'none' });
    expect(any.status).toBe(201);
    expect(any.body).not.toHaveProperty(LIMITS_FIELD);
  });

  const admin = (method: string, path: string, body?: Json) =>
    fetch(`${adminUrl}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });

  test('POST /admin/iats takes grant_types and scope, as RFC 7591 spells them', async () => {
    const res = await admin('POST', '/admin/iats', { grant_types: ['client_credentials'], scope: 'write' });
    expect(res.status).toBe(201);
    const created = (await res.json()) as Json;
    expect(created).toMatchObject({ grant_types: ['client_credentials'], scope: 'write', uses: null });
    const listed = (await (await admin('GET', '/admin/iats')).json()) as { initial_access_tokens: Json[] };
    expect(listed.initial_access_tokens.find((t) => t.id === created.id)).toMatchObject({ grant_types: ['client_credentials'], scope: 'write' });
    const ok = await register(created.initial_access_token as string, MACHINE);
    expect(ok.body).toMatchObject({ scope: 'write' });
    expect((await register(created.initial_access_token as string, { ...MACHINE, scope: 'read' })).status).toBe(400);
  });

  test.each([
    ['grant_types not an array', { grant_types: 'client_credentials' }, 'grant_types must be an array of strings'],
    ['an empty grant_types', { grant_types: [] }, 'grant_types: name one or more grant types'],
    ['a grant type the server does not let clients register', { grant_types: ['password'] }, 'grant_types: "password" is not a grant type clients may register here (registration.allowedGrantTypes: '],
    ['a grant type twice', { grant_types: ['client_credentials', 'client_credentials'] }, 'grant_types: names client_credentials twice'],
    ['scope not a string', { scope: ['read'] }, 'scope must be a string of space-separated scopes'],
    ['a scope no resource server defines', { scope: 'read admin' }, 'scope: "admin" is not a scope of this server (scopes: openid, read, write)'],
    ['scopes not separated by single spaces', { scope: 'read  write' }, 'scope: name one or more scopes, separated by single spaces'],
  ])('POST /admin/iats with %s is refused with invalid_request saying so, and makes no token', async (_name, body, description) => {
    const count = async () => ((await (await admin('GET', '/admin/iats')).json()) as { initial_access_tokens: unknown[] }).initial_access_tokens.length;
    const before = await count();
    const res = await admin('POST', '/admin/iats', body);
    expect(res.status).toBe(400);
    const answer = (await res.json()) as { error: string; error_description: string };
    expect(answer.error).toBe('invalid_request');
    expect(answer.error_description.startsWith(description)).toBe(true);
    expect(await count()).toBe(before);
  });

  test('--grant-types and --scope are checked before anything is stored: a wrong one is a usage error naming the option', async () => {
    const before = (JSON.parse((await runCli(['clients', 'iat', 'list'], env)).stdout) as unknown[]).length;
    const bad: Array<[string[], string]> = [
      [['--grant-types', 'password'], '--grant-types: "password" is not a grant type clients may register here'],
      [['--grant-types', 'client_credentials,'], '--grant-types: name one or more grant types, separated by commas'],
      [['--scope', 'admin'], '--scope: "admin" is not a scope of this server (scopes: openid, read, write)'],
      [['--scope', 'read read'], '--scope: names read twice'],
    ];
    for (const [args, message] of bad) {
      const r = await runCli(['clients', 'iat', 'create', ...args], env);
      expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(r.stderr).toContain(message);
    }
    expect(JSON.parse((await runCli(['clients', 'iat', 'list'], env)).stdout)).toHaveLength(before);
  });
});

describe('limits the store hands back damaged', () => {
  test('a token whose limits record cannot be read registers no client (fail closed) and lists as allowing no grant type', async () => {
    const { env, server } = await startConfigured(CONFIG);
    try {
      const created = JSON.parse((await runCli(['clients', 'iat', 'create', '--json'], env)).stdout) as { initial_access_token: string };
      const id = fingerprintOf(created.initial_access_token);
      // Another process writes something else where the token's limits would be: what the store hands back is checked.
      const storage = new SqliteStorage({ dataDir: env.AGENTAUTH_DATA_DIR! });
      await storage.init();
      try {
        await storage.nonces.issue(`iat-limits:${id}`, 600, '{"grant_types":"client_credentials"}');
      } finally {
        await storage.close();
      }
      const res = await fetch(`${server.url}/reg`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${created.initial_access_token}` }, body: JSON.stringify(MACHINE) });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: 'invalid_token', error_description: 'the limits recorded for this initial access token cannot be read, so it registers no client: ask the operator for a new one' });
      const listed = JSON.parse((await runCli(['clients', 'iat', 'list'], env)).stdout) as Json[];
      expect(listed.find((t) => t.id === id)).toMatchObject({ grant_types: [], scope: null });
      expect(JSON.parse((await runCli(['clients', 'list'], env)).stdout)).toEqual([]);
    } finally {
      await server.stop();
    }
  });
});
