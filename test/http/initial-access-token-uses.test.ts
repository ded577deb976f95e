import { createHash, randomBytes } from 'node:crypto';

import type { AuditRecord } from '../../adapters/types.js';
import { all, statuses } from '../support/races.js';
import { freePort } from '../support/ferretdb.js';
import { mongoUri } from '../support/storages.js';
import { runCli, startConfigured, uniqueDbName } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * `agentauth clients iat create --uses N`: an initial access token that allows N registrations, counted in the store
 * (server/initial-access-token-uses.ts), so that of any number of registrations sent at once exactly N are made, on
 * every store.
 */

const ADMIN_TOKEN = randomBytes(32).toString('base64url');
const CONFIG = { registration: { mode: 'token' }, resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }] };
const METADATA = { grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' };

type Env = Record<string, string>;
const backends: Array<[string, () => Env]> = [
  ['SQLite', () => ({})],
  ['MongoDB (FerretDB)', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('iat-uses') })],
];

describe.each(backends)('initial access tokens limited to N registrations, on %s', (_name, storeEnv) => {
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

  /** Clients registered so far in this describe, as the audit log should show them. */
  let registeredSoFar = 0;

  async function auditEvents(): Promise<AuditRecord[]> {
    const r = await runCli(['audit', 'export'], env);
    expect(r.code).toBe(0);
    return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AuditRecord);
  }

  const registeredEvents = async () => (await auditEvents()).filter((e) => e.type === 'client.registered');

  async function createIat(...args: string[]): Promise<string> {
    const r = await runCli(['clients', 'iat', 'create', ...args], env);
    expect(r.code).toBe(0);
    return r.stdout.trim();
  }

  const register = (iat: string, metadata: Record<string, unknown> = METADATA) =>
    fetch(`${server.url}/reg`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${iat}` }, body: JSON.stringify(metadata) });

  test.each([1, 2, 3])('50 registrations at once with a token for 5: exactly 5 clients, 45 told the token is used up (round %i)', async () => {
    const iat = await createIat('--uses', '5');
    const results = await all(50, () => register(iat));
    expect(statuses(results)).toBe([...Array(5).fill('201'), ...Array(45).fill('401')].join(','));
    for (const r of results.filter((x) => x.status === 401)) {
      expect(r.body).toEqual({ error: 'invalid_token', error_description: 'the initial access token allowed 5 registrations, and all of them have been made: ask the operator for a new one' });
    }
    // Five clients, each recorded as registered; a refused registration recorded nothing (the refusal comes first).
    const made = results.filter((x) => x.status === 201).map((x) => x.body.client_id as string);
    expect(new Set(made).size).toBe(5);
    registeredSoFar += 5;
    expect((await registeredEvents()).length).toBe(registeredSoFar);
    const recorded = new Set((await registeredEvents()).map((e) => e.client_id));
    expect(made.every((id) => recorded.has(id))).toBe(true);
    // A sixth, later: refused the same way, with the challenge RFC 6750 asks for.
    const later = await register(iat);
    expect(later.status).toBe(401);
    expect(later.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token"/);
  }, 60_000);

  test('a registration refused for its metadata uses none of the token; the token lists with its limit', async () => {
    const iat = await createIat('--uses', '1', '--json');
    const token = (JSON.parse(iat) as { initial_access_token: string; uses: number }).initial_access_token;
    expect(JSON.parse(iat)).toMatchObject({ uses: 1 });
    // Its creation is recorded on the CLI's chain, by fingerprint: never the token.
    const fingerprint = createHash('sha256').update(token).digest('base64url').slice(0, 22);
    const created = (await auditEvents()).filter((e) => e.type === 'registration.iat_created' && e.details.iat_id === fingerprint);
    expect(created.map((e) => e.details)).toEqual([{ actor: 'cli', iat_id: fingerprint, tier: 'standard', expires_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), uses: 1, grant_types: null, scope: null }]);
    expect(JSON.stringify(await auditEvents())).not.toContain(token);
    const refused = await register(token, { ...METADATA, grant_types: ['password'] });
    expect(refused.status).toBe(400);
    expect((await register(token)).status).toBe(201);
    expect((await register(token)).status).toBe(401);
    registeredSoFar += 1;

    const list = await runCli(['clients', 'iat', 'list'], env);
    expect(list.code).toBe(0);
    const listed = JSON.parse(list.stdout) as Array<{ id: string; uses: number | null }>;
    expect(listed.filter((t) => t.uses === 1).length).toBeGreaterThanOrEqual(1);
    // A token created without --uses allows any number (null), as every token did before the option.
    const unlimited = await createIat();
    for (let i = 0; i < 3; i += 1) expect((await register(unlimited)).status).toBe(201);
    registeredSoFar += 3;
    const again = JSON.parse((await runCli(['clients', 'iat', 'list'], env)).stdout) as Array<{ uses: number | null }>;
    expect(again.some((t) => t.uses === null)).toBe(true);
  });

  const admin = (method: string, path: string, body?: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
    fetch(`${adminUrl}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...headers }, ...(body === undefined ? {} : { body }) });

  test('the admin API makes them too: POST /admin/iats with tier, expires_in and uses, recorded with its caller', async () => {
    const res = await admin('POST', '/admin/iats', JSON.stringify({ tier: 'standard', expires_in: 600, uses: 2 }));
    expect(res.status).toBe(201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const created = (await res.json()) as { initial_access_token: string; id: string };
    expect(created).toEqual({ initial_access_token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), id: createHash('sha256').update(created.initial_access_token).digest('base64url').slice(0, 22), tier: 'standard', expires_in: 600, uses: 2, grant_types: null, scope: null });
    expect(statuses(await all(4, () => register(created.initial_access_token)))).toBe('201,201,401,401');
    registeredSoFar += 2;
    const listed = (await (await admin('GET', '/admin/iats')).json()) as { initial_access_tokens: Array<{ id: string; uses: number | null }> };
    expect(listed.initial_access_tokens.find((t) => t.id === created.id)).toMatchObject({ tier: 'standard', uses: 2 });
    const record = (await auditEvents()).find((e) => e.type === 'registration.iat_created' && e.details.iat_id === created.id);
    expect(record?.details).toEqual({ actor: 'admin_api', remote_address: expect.any(String), request_id: expect.any(String), iat_id: created.id, tier: 'standard', expires_at: expect.any(String), uses: 2, grant_types: null, scope: null });
    // No body: the defaults (the configured tier and lifetime, any number of registrations).
    const defaults = await admin('POST', '/admin/iats', undefined, {});
    expect(defaults.status).toBe(201);
    expect(await defaults.json()).toMatchObject({ tier: 'standard', expires_in: 86_400, uses: null });
  });

  test.each([
    ['uses out of range', JSON.stringify({ uses: 0 }), 'application/json', 'uses: must be a whole number of registrations from 1 to 1000'],
    ['uses as a string', JSON.stringify({ uses: '2' }), 'application/json', 'uses must be a whole number'],
    ['expires_in too long', JSON.stringify({ expires_in: 40 * 86_400 }), 'application/json', 'expires_in: must be a whole number of seconds from 1 to 2592000 (30 days)'],
    ['an unknown tier', JSON.stringify({ tier: 'gold' }), 'application/json', 'tier: no tier named gold (tiers: '],
    ['an unknown member', JSON.stringify({ client_name: 'x' }), 'application/json', 'unknown member "client_name": POST /admin/iats takes tier, expires_in, uses, grant_types and scope'],
    ['not an object', '[1]', 'application/json', 'the request body must be a JSON object'],
    ['not JSON', '{uses: 2', 'application/json', 'the request body is not valid JSON'],
    ['not sent as JSON', 'uses=2', 'application/x-www-form-urlencoded', 'send the settings as a JSON object with Content-Type: application/json'],
    ['a member given twice', '{"uses": 1, "uses": 1000}', 'application/json', 'the request body names "uses" twice in one object'],
    ['a tier that cannot be a tier name (not echoed)', JSON.stringify({ tier: 'x\u0000"y' }), 'application/json', 'tier must be a tier name (1 to 32 of a-z, 0-9, _ and -)'],
    ['too large (413)', JSON.stringify({ tier: 'x'.repeat(5000) }), 'application/json', 'the request body exceeds the 4096 bytes this endpoint accepts'],
  ])('POST /admin/iats with %s is refused with invalid_request saying so, and makes no token', async (name, body, type, description) => {
    const before = ((await (await admin('GET', '/admin/iats')).json()) as { initial_access_tokens: unknown[] }).initial_access_tokens.length;
    const res = await admin('POST', '/admin/iats', body, { 'content-type': type });
    expect(res.status).toBe(name.endsWith('(413)') ? 413 : 400);
    const answer = (await res.json()) as { error: string; error_description: string };
    expect(answer.error).toBe('invalid_request');
    expect(answer.error_description.startsWith(description)).toBe(true);
    expect(((await (await admin('GET', '/admin/iats')).json()) as { initial_access_tokens: unknown[] }).initial_access_tokens).toHaveLength(before);
  });

  test('POST /admin/iats without the admin token is 401, and makes no token', async () => {
    const res = await fetch(`${adminUrl}/admin/iats`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(401);
    expect((await res.json()) as unknown).toMatchObject({ error: 'invalid_request' });
  });

  test('--uses must be a whole number from 1 to 1000: anything else is a usage error and stores nothing', async () => {
    const before = JSON.parse((await runCli(['clients', 'iat', 'list'], env)).stdout) as unknown[];
    for (const bad of ['0', '1001', 'x', '-1', '1.5', '']) {
      const r = await runCli(['clients', 'iat', 'create', '--uses', bad], env);
      expect({ bad, code: r.code, stdout: r.stdout }).toEqual({ bad, code: 2, stdout: '' });
      expect(r.stderr).toContain('--uses: must be a whole number of registrations from 1 to 1000');
    }
    expect(JSON.parse((await runCli(['clients', 'iat', 'list'], env)).stdout)).toHaveLength(before.length);
  });
});

describe('POST /admin/iats on the memory store (the server stores the token itself, which the CLI cannot)', () => {
  test('a token made through the admin API registers a client; the CLI refuses the memory store', async () => {
    const adminPort = await freePort();
    const { env, server } = await startConfigured({ ...CONFIG, admin: { port: adminPort } }, { AGENTAUTH_STORE: 'memory', AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN });
    try {
      const res = await fetch(`http://127.0.0.1:${adminPort}/admin/iats`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ uses: 1 }) });
      expect(res.status).toBe(201);
      const { initial_access_token: iat } = (await res.json()) as { initial_access_token: string };
      const reg = (n: number) => fetch(`${server.url}/reg`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${iat}` }, body: JSON.stringify({ ...METADATA, client_name: `c${n}` }) });
      expect((await reg(1)).status).toBe(201);
      expect((await reg(2)).status).toBe(401);
      const cli = await runCli(['clients', 'iat', 'create'], env);
      expect(cli.code).toBe(2);
      expect(cli.stderr).toContain('the memory store lives inside the server process');
    } finally {
      await server.stop();
    }
  });
});
