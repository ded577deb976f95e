import { Agent, request } from 'node:http';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { Wallet } from 'ethers';

import { freePort } from '../support/ferretdb.js';
import { baseConfig, register, REDIRECT } from '../support/agent-server.js';
import { publicRefreshForm, publicTier, signInPublic } from '../support/public-client.js';
import { logLines, newKek, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { refuseWrites, withTriggers } from '../support/store-file.js';

const wallet = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const GRACE = 1;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  body: Record<string, unknown>;
  /** The cluster worker (1 or 2) that answered, from the server's request log line. */
  worker: number;
}

/** One keep-alive connection to the server: every request sent through it reaches the same worker. */
interface Connection {
  send(method: string, path: string, headers?: Record<string, string>, body?: string): Promise<Answer>;
  close(): void;
}

/**
 * A request retried after a 503 that told it to retry must work whichever worker of `agentauth start --workers 2`
 * the retry reaches: the kernel hands a new connection to either. A refresh or RFC 7592 rotation answered 503 after
 * it was stored is remembered by the cluster's primary, not by the worker that answered (server/undelivered-rotations.ts),
 * so its retry on the other worker gets the stored successor. Here the retry is sent on a connection the test has
 * seen reach the other worker (every answer's worker is read from the server's log by its X-Request-Id).
 */
describe('a retry after a 503 reaching the other worker of agentauth start --workers 2', () => {
  let server: RunningServer;
  let db: DatabaseSync;
  let origin: string;

  beforeAll(async () => {
    const port = await freePort();
    origin = `http://localhost:${port}`;
    const dir = tempDir();
    const env = {
      AGENTAUTH_CONFIG: writeConfig(dir, baseConfig({ registration: { quota: { max: 1000 } }, tiers: { standard: publicTier(GRACE) } })),
      AGENTAUTH_DATA_DIR: join(dir, 'data'),
      AGENTAUTH_KEK: newKek(),
      ISSUER: origin,
    };
    server = await startServer(env, port, { args: ['--workers', '2'], listening: 2 });
    db = new DatabaseSync(join(env.AGENTAUTH_DATA_DIR, 'agentauth.sqlite'));
    db.exec('PRAGMA busy_timeout = 10000');
  }, 60_000);
  afterAll(async () => {
    db?.close();
    await server?.stop();
  });

  /** The worker that answered the request with this id (its log line may follow the answer by a moment). */
  async function workerOf(requestId: string): Promise<number> {
    const until = Date.now() + 5_000;
    for (;;) {
      const line = logLines(server.output()).find((l) => l.msg === 'request' && l.request_id === requestId);
      if (line) return line.worker as number;
      if (Date.now() > until) throw new Error(`no request log line for ${requestId}`);
      await sleep(20);
    }
  }

  function connect(): Connection {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    return {
      send: (method, path, headers = {}, body) =>
        new Promise<Answer>((resolve, reject) => {
          const requestId = randomUUID();
          const req = request(`${origin}${path}`, { method, agent, headers: { ...headers, 'x-request-id': requestId } }, (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (text += d));
            res.on('end', () => {
              workerOf(requestId).then((worker) => resolve({ status: res.statusCode!, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, worker }), reject);
            });
          });
          req.on('error', reject);
          req.end(body);
        }),
      close: () => agent.destroy(),
    };
  }

  /** A connection to `worker` (the 1st or 2nd), found by opening new ones until the kernel hands one to it. */
  async function connectionTo(worker: number): Promise<Connection> {
    for (let i = 0; i < 40; i += 1) {
      const c = connect();
      if ((await c.send('GET', '/healthz')).worker === worker) return c;
      c.close();
    }
    throw new Error(`no connection reached worker ${worker} in 40 tries`);
  }

  const whileRefusing = <T>(triggers: string, fn: () => Promise<T>) => withTriggers(db, triggers, fn);

  /** Both workers serve again (each one's store health recovers at its own next ping). */
  async function bothReady(): Promise<void> {
    for (const worker of [1, 2]) {
      const c = await connectionTo(worker);
      try {
        const until = Date.now() + 15_000;
        while ((await c.send('GET', '/readyz')).status !== 200) {
          if (Date.now() > until) throw new Error(`worker ${worker} did not recover within 15 s of its store`);
          await sleep(100);
        }
      } finally {
        c.close();
      }
    }
  }

  const auditOf = (clientId: string) =>
    (db.prepare('SELECT record FROM audit_records').all() as Array<{ record: string }>)
      .map((r) => JSON.parse(r.record) as { type: string; client_id?: string })
      .filter((r) => r.client_id === clientId)
      .map((r) => r.type);

  const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

  test('a refresh answered 503 after its rotation was stored: the retry on the other worker, after the grace window, gets the successor', async () => {
    const { clientId, tokens } = await signInPublic(origin, wallet);
    const first = await connectionTo(1);
    const failed = await whileRefusing(refuseWrites('refuse_audit', 'INSERT', 'audit_records'), () =>
      first.send('POST', '/token', FORM, publicRefreshForm(clientId, tokens.refresh_token!)));
    first.close();
    expect(failed).toMatchObject({ status: 503, worker: 1, body: { error: 'temporarily_unavailable' } });
    await bothReady();
    await sleep((GRACE + 1.5) * 1000);

    const other = await connectionTo(2);
    try {
      const retried = await other.send('POST', '/token', FORM, publicRefreshForm(clientId, tokens.refresh_token!));
      expect(retried).toMatchObject({ status: 200, worker: 2, body: { refresh_token: expect.any(String) } });
      // The successor is live, and nothing was taken for reuse.
      expect((await other.send('POST', '/token', FORM, publicRefreshForm(clientId, retried.body.refresh_token as string))).status).toBe(200);
    } finally {
      other.close();
    }
    expect(auditOf(clientId)).not.toContain('refresh.reuse_detected');
    expect(auditOf(clientId)).not.toContain('grant.revoked');
  });

  test('an RFC 7592 update answered 503 after its token rotated: the retry on the other worker gets the successor, once', async () => {
    const created = await register(origin, { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(created.status).toBe(201);
    const { registration_access_token: token, registration_client_uri: uri, client_id_issued_at: _issued, ...metadata } = created.body;
    const path = new URL(uri as string).pathname;
    const update = (c: Connection, rat: string) =>
      c.send('PUT', path, { authorization: `Bearer ${rat}`, 'content-type': 'application/json' }, JSON.stringify({ ...metadata, client_name: 'renamed' }));
    const clientWrites = [
      refuseWrites('refuse_client_insert', 'INSERT', 'oidc_records', "WHEN NEW.model = 'Client'"),
      refuseWrites('refuse_client_update', 'UPDATE', 'oidc_records', "WHEN NEW.model = 'Client'"),
    ].join('\n');
    const first = await connectionTo(1);
    const failed = await whileRefusing(clientWrites, () => update(first, token as string));
    first.close();
    expect(failed).toMatchObject({ status: 503, worker: 1, body: { error: 'temporarily_unavailable' } });
    await bothReady();
    // The failed write's claim on the client record lapses after 60 s (server/admin/client-writes.ts): removed here.
    db.exec("DELETE FROM attempts WHERE key LIKE 'client-rev:%'");

    const other = await connectionTo(2);
    try {
      const retried = await update(other, token as string);
      expect(retried).toMatchObject({ status: 200, worker: 2, body: { client_name: 'renamed', registration_access_token: expect.any(String) } });
      // Once: the same token now gets nothing, on either worker.
      expect(await update(other, token as string)).toMatchObject({ status: 401, body: { error: 'invalid_token' } });
      const back = await connectionTo(1);
      expect(await update(back, token as string)).toMatchObject({ status: 401, worker: 1, body: { error: 'invalid_token' } });
      back.close();
      const read = await other.send('GET', path, { authorization: `Bearer ${retried.body.registration_access_token as string}` });
      expect(read).toMatchObject({ status: 200, body: { client_name: 'renamed' } });
    } finally {
      other.close();
    }
  });
});
