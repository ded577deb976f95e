import { REDIRECT, baseConfig, register } from '../support/agent-server.js';
import { startFerretdb } from '../support/ferretdb.js';
import { throughPause } from '../support/pause.js';
import type { FerretdbProcess } from '../support/ferretdb.js';
import { newKek, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const CLIENTS = 12;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Managed {
  clientId: string;
  uri: string;
  token: string;
  metadata: Record<string, unknown>;
}

/** One RFC 7592 request: a read (GET), or an update (PUT) that sends the client's metadata back with a new name. */
async function manage(client: Managed, update: boolean, round: number): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(client.uri, update
    ? {
      method: 'PUT',
      headers: { authorization: `Bearer ${client.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...client.metadata, client_name: `managed through a pause ${round}` }),
    }
    : { headers: { authorization: `Bearer ${client.token}` } });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** The metadata an update may send back: the read view without what RFC 7592 §2.2 forbids in an update body. */
function updatable(body: Record<string, unknown>): Record<string, unknown> {
  const { registration_access_token: _t, registration_client_uri: _u, client_id_issued_at: _i, client_secret_expires_at: _e, ...rest } = body;
  return rest;
}

/**
 * RFC 7592 reads and updates running while the database pauses: a request sent just before the pause is answered 503
 * when storage.timeoutMs runs out, and may be applied by the database when it resumes, so its registration access
 * token is used up and nobody received the successor. The client retries with the same token, as the 503 tells it to.
 * Before, such a client lost its registration access token for good (401 invalid_token on the retry): only the
 * operator could change it from then on. Now the rotation stores the successor before the consume whose marker
 * records it, and a retry of a request this process answered 503 gets that successor.
 */
describe('registration management through a database pause (own FerretDB)', () => {
  let db: FerretdbProcess;
  let server: RunningServer;

  beforeAll(async () => {
    db = await startFerretdb();
    const config = writeConfig(tempDir(), { ...baseConfig({ registration: { quota: { max: 1000 } } }), storage: { timeoutMs: 1000 } });
    server = await startServer({ AGENTAUTH_CONFIG: config, MONGODB_URI: db.uri, MONGODB_DB: uniqueDbName('regpause'), AGENTAUTH_KEK: newKek() });
  });
  afterAll(async () => {
    await server?.stop();
    await db?.stop();
  });

  test(`${CLIENTS} clients reading and updating their registration through a 6 s pause: none loses its registration access token`, async () => {
    const clients: Managed[] = [];
    for (let i = 0; i < CLIENTS; i += 1) {
      const created = await register(server.url, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'read' });
      expect(created.status).toBe(201);
      const body = created.body;
      clients.push({
        clientId: body.client_id as string,
        uri: body.registration_client_uri as string,
        token: body.registration_access_token as string,
        metadata: updatable(body),
      });
    }
    let stop = false;
    const ended: Array<{ client: number; status: number; body: Record<string, unknown> }> = [];
    let unavailable = 0;
    let succeeded = 0;
    const loop = async (i: number) => {
      const client = clients[i]!;
      let round = 0;
      const step = async (): Promise<boolean> => {
        round += 1;
        const res = await manage(client, round % 2 === 0, round);
        if (res.status === 200) {
          succeeded += 1;
          client.token = res.body.registration_access_token as string;
          client.metadata = updatable(res.body);
          return true;
        }
        if (res.status === 503) {
          unavailable += 1;
          await sleep(500);
          return true;
        }
        ended.push({ client: i, ...res });
        return false;
      };
      while (!stop) if (!(await step())) return;
      // The client's token still works once storage is back (a 503 here is retried as in the loop).
      for (let retries = 0; retries < 20; retries += 1) {
        const res = await manage(client, false, round);
        if (res.status === 503) {
          await sleep(500);
          continue;
        }
        if (res.status !== 200) ended.push({ client: i, ...res });
        return;
      }
      ended.push({ client: i, status: 503, body: { error: 'still 503 after 20 retries' } });
    };
    await throughPause(db, clients.map((_, i) => loop(i)), () => { stop = true; });
    expect(unavailable).toBeGreaterThan(0);
    expect(succeeded).toBeGreaterThan(CLIENTS);
    expect(ended).toEqual([]);
  });
});
