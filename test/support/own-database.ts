import { startFerretdb } from './ferretdb.js';
import type { FerretdbProcess } from './ferretdb.js';
import { newKek, startServer, tempDir, uniqueDbName, writeConfig } from './server.js';
import type { RunningServer } from './server.js';

/**
 * agentauth on a FerretDB of its own (started for the test, so the test may pause, kill and restart it), with one
 * confidential client `svc` holding `secret` and the given storage timeout; with `admin`, its admin listener on that
 * port with that token.
 */
export async function startOnOwnDatabase(
  label: string,
  secret: string,
  timeoutMs: number,
  admin?: { port: number; token: string },
): Promise<{ db: FerretdbProcess; server: RunningServer }> {
  const db = await startFerretdb();
  const config = writeConfig(tempDir(), {
    resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
    clients: [{ client_id: 'svc', client_secret: secret }],
    storage: { timeoutMs },
    ...(admin ? { admin: { port: admin.port } } : {}),
  });
  const server = await startServer({
    AGENTAUTH_CONFIG: config,
    MONGODB_URI: db.uri,
    MONGODB_DB: uniqueDbName(label),
    AGENTAUTH_KEK: newKek(),
    ...(admin ? { AGENTAUTH_ADMIN_TOKEN: admin.token } : {}),
  });
  return { db, server };
}
