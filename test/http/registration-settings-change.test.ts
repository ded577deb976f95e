import { join } from 'node:path';

import { basicAuth, baseConfig, register, RESOURCE } from '../support/agent-server.js';
import { newKek, runCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * Clients registered under one registration setting keep their RFC 7592 management when the operator changes it
 * (docs/configuration.md, `registration.mode`): an initial access token's tier travels with the client's registration
 * access token, and neither a change from `token` to `open` mode nor a tier removed from the configuration may make
 * that token unreadable (it used to answer 500 to every GET, PUT and DELETE).
 */
const PREMIUM = { accessTokenTTL: 600, refreshTokenIdleTTL: 3600, refreshTokenAbsoluteTTL: 86400, dpop: 'optional', dpopNonce: false };

describe('RFC 7592 management after the registration settings change', () => {
  const dir = tempDir();
  const env = (config: Record<string, unknown>) => ({
    AGENTAUTH_CONFIG: writeConfig(tempDir(), config),
    AGENTAUTH_DATA_DIR: join(dir, 'data'),
    AGENTAUTH_KEK: kek,
  });
  const kek = newKek();
  let server: RunningServer | undefined;
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  const confidential = { grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' };
  const withTier = baseConfig({ registration: { mode: 'token' }, tiers: { premium: PREMIUM } });

  async function registerWithIat(tier: string): Promise<Record<string, unknown>> {
    server = await startServer(env(withTier));
    const iat = await runCli(['clients', 'iat', 'create', '--tier', tier], env(withTier));
    expect(iat.code).toBe(0);
    const res = await register(server.url, confidential, { headers: { authorization: `Bearer ${iat.stdout.trim()}` } });
    expect(res.status).toBe(201);
    expect(res.body.agentauth_tier).toBe(tier);
    await server.stop();
    return res.body;
  }

  const manage = (client: Record<string, unknown>, rat: string, method: string, body?: unknown) =>
    fetch(`${server!.url}/reg/${client.client_id as string}`, {
      method,
      headers: { authorization: `Bearer ${rat}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });

  test('token mode, then open: the client is read, updated and deleted with its registration access token', async () => {
    const client = await registerWithIat('premium');
    server = await startServer(env(baseConfig({ registration: { mode: 'open' }, tiers: { premium: PREMIUM } })));
    const read = await manage(client, client.registration_access_token as string, 'GET');
    expect(read.status).toBe(200);
    const readBody = (await read.json()) as Record<string, unknown>;
    expect(readBody).toMatchObject({ client_id: client.client_id, agentauth_tier: 'premium' });
    const { registration_access_token: rat2, registration_client_uri: _uri, client_secret_expires_at: _exp, client_id_issued_at: _iat, ...metadata } = readBody;
    const updated = await manage(client, rat2 as string, 'PUT', { ...metadata, client_name: 'renamed', client_secret: client.client_secret });
    expect(updated.status).toBe(200);
    const updatedBody = (await updated.json()) as Record<string, unknown>;
    // The tier stays the one its initial access token gave, though open mode has no initial access tokens.
    expect(updatedBody).toMatchObject({ client_name: 'renamed', agentauth_tier: 'premium' });
    const token = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { authorization: basicAuth(client.client_id as string, client.client_secret as string), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    expect(token.status).toBe(200);
    const deleted = await manage(client, updatedBody.registration_access_token as string, 'DELETE');
    expect(deleted.status).toBe(204);
    expect(server.output()).not.toMatch(/"level":50/);
  });

  test('a tier removed from the configuration: its clients are refused by name, not with a 500, its IATs are not found, and both work again once it is back', async () => {
    const client = await registerWithIat('premium');
    server = await startServer(env(withTier));
    const spare = await runCli(['clients', 'iat', 'create', '--tier', 'premium'], env(withTier));
    expect(spare.code).toBe(0);
    const other = await register(server.url, confidential, { headers: { authorization: `Bearer ${spare.stdout.trim()}` } });
    expect(other.status).toBe(201);
    await server.stop();

    const without = env(baseConfig({ registration: { mode: 'token' } }));
    server = await startServer(without);
    const refusal = { error: 'invalid_client_metadata', error_description: 'agentauth_tier premium is not a configured tier' };
    for (const method of ['GET', 'DELETE']) {
      const res = await manage(client, client.registration_access_token as string, method);
      expect([method, res.status, await res.json()]).toEqual([method, 400, refusal]);
    }
    const token = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { authorization: basicAuth(client.client_id as string, client.client_secret as string), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    expect([token.status, await token.json()]).toEqual([400, refusal]);
    // An initial access token for the removed tier is not found (it used to answer 500), and the log says why.
    const res = await register(server.url, confidential, { headers: { authorization: `Bearer ${spare.stdout.trim()}` } });
    expect(res).toMatchObject({ status: 401, body: { error: 'invalid_token' } });
    expect(server.output()).toContain('an initial access token names tier:premium, which this configuration does not have');
    expect(server.output()).not.toMatch(/"level":50/);
    // config check names the refused client (docs/operations.md, "registered clients").
    const check = await runCli(['config', 'check'], without);
    expect(check.stdout + check.stderr).toContain(`${client.client_id as string} (agentauth_tier premium is not a configured tier)`);
    // The operator can still delete such a client.
    expect((await runCli(['clients', 'delete', other.body.client_id as string], without)).code).toBe(0);
    expect((await manage(other.body, other.body.registration_access_token as string, 'GET')).status).toBe(401);
    await server.stop();

    // The refusals used nothing up: with the tier back, the registration access token and the IAT both work.
    server = await startServer(env(withTier));
    const read = await manage(client, client.registration_access_token as string, 'GET');
    expect(read.status).toBe(200);
    const again = await register(server.url, confidential, { headers: { authorization: `Bearer ${spare.stdout.trim()}` } });
    expect(again).toMatchObject({ status: 201, body: { agentauth_tier: 'premium' } });
  });
});
