import { existsSync } from 'node:fs';
import { join } from 'node:path';

import { baseConfig, clientCredentialsToken as clientCredentials, register, REDIRECT, RESOURCE } from '../support/agent-server.js';
import { startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * The README's first run on the embedded default: `agentauth start` on a data directory (no MONGODB_URI, no
 * AGENTAUTH_KEK: the KEK is generated in the data directory), register clients, restart, and they are still there.
 */
describe('a registered client outlives a restart of the default store', () => {
  const dataDir = tempDir('agentauth-restart-');
  const env = {
    AGENTAUTH_DATA_DIR: dataDir,
    AGENTAUTH_CONFIG: writeConfig(tempDir(), baseConfig({ registration: { anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } })),
  };
  let server: RunningServer | undefined;

  afterAll(async () => {
    await server?.stop();
  });

  test('a confidential client still gets tokens and a public one is still readable (RFC 7592) after a restart', async () => {
    server = await startServer(env);
    const port = server.port;
    expect(existsSync(join(dataDir, 'agentauth.sqlite'))).toBe(true);
    expect(existsSync(join(dataDir, 'kek'))).toBe(true);

    const confidential = await register(server.url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    expect(confidential.status).toBe(201);
    const id = confidential.body.client_id as string;
    const secret = confidential.body.client_secret as string;
    expect((await clientCredentials(server.url, id, secret)).status).toBe(200);

    const publicClient = await register(server.url, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
    expect(publicClient.status).toBe(201);

    expect(await server.stop()).toBe(0);
    server = await startServer(env, port);

    const after = await clientCredentials(server.url, id, secret);
    expect(after.status).toBe(200);
    expect(after.body.access_token).toEqual(expect.any(String));
    // The secret is checked, not just the client id.
    const wrong = await clientCredentials(server.url, id, `${secret}x`);
    expect({ status: wrong.status, error: wrong.body.error }).toEqual({ status: 401, error: 'invalid_client' });

    const read = await fetch(publicClient.body.registration_client_uri as string, { headers: { authorization: `Bearer ${publicClient.body.registration_access_token as string}` } });
    expect(read.status).toBe(200);
    expect((await read.json()) as Record<string, unknown>).toMatchObject({ client_id: publicClient.body.client_id, redirect_uris: [REDIRECT] });
  }, 60_000);
});
