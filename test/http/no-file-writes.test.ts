import * as jose from 'jose';

import { baseConfig, clientCredentialsToken, introspect, register } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { mongoUri } from '../support/storages.js';
import { CLI, newKek, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * docs/deployment.md: "with MongoDB [agentauth writes] nothing at all to the file system", which is why a pod's
 * `readOnlyRootFilesystem: true` is expected to work. Here agentauth runs on MongoDB under Node's permission model
 * with reads allowed and no file-system write permission at all (no --allow-fs-write), so any write through Node's
 * file APIs fails: it starts on an empty database (generating its first signing key), registers a client, issues,
 * introspects and revokes tokens, serves the admin API and /metrics on the admin listener, and stops cleanly. The same flags with the SQLite store, which
 * must write its data directory, refuse to start: the control showing the flags bite.
 */

/** Node's permission model: read anything, write nothing; the wallet's native secp256k1 binding may load. */
const NO_WRITES = ['--experimental-async-context-frame', '--experimental-permission', '--allow-fs-read=*', '--allow-addons'];

const ADMIN_TOKEN = 'no-file-writes-admin-token-0123456789abcdef';
/** The test configuration; anonymous registration may ask for client_credentials; the admin listener on `adminPort`. */
const config = (adminPort?: number) =>
  writeConfig(tempDir(), {
    ...baseConfig({ registration: { anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } }),
    ...(adminPort ? { admin: { host: '127.0.0.1', port: adminPort } } : {}),
  });

describe('agentauth on MongoDB with no file-system write permission', () => {
  let server: RunningServer;
  let admin: string;

  beforeAll(async () => {
    const adminPort = await freePort();
    admin = `http://127.0.0.1:${adminPort}`;
    server = await startServer(
      { AGENTAUTH_CONFIG: config(adminPort), MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('nowrites'), AGENTAUTH_KEK: newKek(), AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN },
      undefined,
      { entry: [...NO_WRITES, CLI, 'start'] },
    );
  });

  afterAll(async () => {
    await server?.stop();
  });

  test('it started under the permission model, on an empty database: the first signing key was generated and stored', () => {
    const out = server.output();
    expect(out).toContain('"generated the first signing key"');
    expect(out).toContain('"store":"mongodb"');
    expect(out).not.toContain('ERR_ACCESS_DENIED');
  });

  test('registration, token, introspection, revocation, JWKS, the admin API and metrics all work, and nothing was refused for a write', async () => {
    const { status, body: client } = await register(server.url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    expect(status).toBe(201);
    const { status: tokenStatus, body } = await clientCredentialsToken(server.url, String(client.client_id), String(client.client_secret));
    expect(tokenStatus).toBe(200);
    const token = String(body.access_token);
    const jwks = jose.createRemoteJWKSet(new URL(`${server.url}/jwks`));
    await expect(jose.jwtVerify(token, jwks, { audience: 'https://api.example.com' })).resolves.toBeDefined();
    expect(await introspect(server.url, token)).toMatchObject({ active: true, client_id: client.client_id });

    const revoked = await fetch(`${server.url}/token/revocation`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${String(client.client_id)}:${String(client.client_secret)}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    expect(revoked.status).toBe(200);
    expect(await introspect(server.url, token)).toEqual({ active: false });

    const bearer = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const disabled = await fetch(`${admin}/admin/clients/${encodeURIComponent(String(client.client_id))}/disable`, { method: 'POST', headers: bearer });
    expect(disabled.status).toBe(200);
    expect(((await disabled.json()) as { disabled?: boolean }).disabled).toBe(true);
    expect((await clientCredentialsToken(server.url, String(client.client_id), String(client.client_secret))).status).toBe(401);
    const metrics = await fetch(`${admin}/metrics`, { headers: bearer });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/^agentauth_/m);
    expect(server.output()).not.toContain('ERR_ACCESS_DENIED');
    expect(server.output()).not.toContain('"level":"error"');
  });

  test('it stops cleanly (audit queue written, storage closed) with exit code 0', async () => {
    expect(await server.stop()).toBe(0);
    expect(server.output()).toContain('"stopped"');
  });
});

test('control: the same flags with the SQLite store, which writes its data directory, refuse to start', async () => {
  const dir = tempDir();
  await expect(
    startServer({ AGENTAUTH_CONFIG: config(), AGENTAUTH_DATA_DIR: `${dir}/data`, AGENTAUTH_KEK: newKek() }, undefined, { entry: [...NO_WRITES, '--allow-worker', CLI, 'start'] }),
  ).rejects.toThrow(/agentauth exited at start \(2\).*cannot start: SQLite open .*(Access to this API has been restricted|ERR_ACCESS_DENIED)/s);
});
