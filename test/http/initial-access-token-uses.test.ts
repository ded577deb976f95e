import { createHash } from 'node:crypto';

import type { AuditRecord } from '../../adapters/types.js';
import { all, statuses } from '../support/races.js';
import { mongoUri } from '../support/storages.js';
import { runCli, startConfigured, uniqueDbName } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * `agentauth clients iat create --uses N`: an initial access token that allows N registrations, counted in the store
 * (server/initial-access-token-uses.ts), so that of any number of registrations sent at once exactly N are made, on
 * every store.
 */

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

  beforeAll(async () => {
    ({ env, server } = await startConfigured(CONFIG, storeEnv()));
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
    expect(created.map((e) => e.details)).toEqual([{ actor: 'cli', iat_id: fingerprint, tier: 'standard', expires_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), uses: 1 }]);
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
