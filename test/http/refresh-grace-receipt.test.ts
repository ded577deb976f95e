import { connect } from 'node:net';

import { Wallet } from 'ethers';

import { MongoStorage } from '../../adapters/mongodb.js';
import type { Storage } from '../../adapters/types.js';
import { allAuditRecords } from '../support/audit.js';
import { baseConfig } from '../support/agent-server.js';
import { startFerretdb } from '../support/ferretdb.js';
import type { FerretdbProcess } from '../support/ferretdb.js';
import { publicRefresh, publicRefreshed, publicRefreshForm, signInPublic } from '../support/public-client.js';
import { newKek, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * The refresh grace (server/grants/refresh-grace.ts) is measured when the reuse was received, its body arrived
 * (server/http/body-received.ts), not when the server got round to handling it:
 * - a reuse received inside the window and then held up past its end by a database that stopped answering still
 *   gets the grace (under load, 50 concurrent refreshes on FerretDB were handled seconds after they arrived, and the
 *   late ones revoked the user's grant);
 * - a reuse whose request started inside the window but whose body (the token) only arrived after it is measured at
 *   the end of its body, and revokes the grant: a slow body cannot stretch the window.
 */
const wallet = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');
const GRACE = 2;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until whole seconds since `at` (ms) exceed the grace by one: outside the window however `at` is rounded. */
const pastTheWindow = async (at: number) => {
  while (Math.floor(Date.now() / 1000) - Math.floor(at / 1000) <= GRACE + 1) await sleep(100);
};

const tier = { accessTokenTTL: 300, refreshTokenIdleTTL: 600, refreshTokenAbsoluteTTL: 3600, dpop: 'optional', dpopNonce: false, refreshGraceSeconds: GRACE };

describe('the refresh grace is measured at receipt', () => {
  let db: FerretdbProcess;
  let server: RunningServer;
  let storage: Storage;
  let issuer: string;

  beforeAll(async () => {
    db = await startFerretdb();
    const dbName = uniqueDbName('gracereceipt');
    // A storage timeout longer than the stall below: the stalled request waits for the database instead of failing.
    const config = baseConfig({ registration: { quota: { max: 100 } }, tiers: { standard: tier }, storage: { timeoutMs: 10_000 } });
    server = await startServer({ AGENTAUTH_CONFIG: writeConfig(tempDir(), config), AGENTAUTH_KEK: newKek(), MONGODB_URI: db.uri, MONGODB_DB: dbName });
    issuer = server.url;
    storage = new MongoStorage({ uri: db.uri, dbName });
    await storage.init();
  });

  afterAll(async () => {
    db?.resume();
    await server?.stop();
    await storage?.close();
    await db?.stop();
  });

  const refreshTypes = async (clientId: string) =>
    (await allAuditRecords(storage.audit)).filter((r) => r.client_id === clientId && r.type.startsWith('refresh.')).map((r) => r.type).sort();

  test('a reuse received inside the window, held up past its end by a stalled database, gets the grace and revokes nothing', async () => {
    const { clientId, tokens } = await signInPublic(issuer, wallet);
    const rotatedAt = Date.now();
    const first = await publicRefreshed(issuer, clientId, tokens.refresh_token!);
    expect(first.status).toBe(200);

    await db.pause();
    let reuse: Promise<Response>;
    try {
      reuse = publicRefresh(issuer, clientId, tokens.refresh_token!);
      // Received now; handled only once the database answers again, after the window has closed.
      await pastTheWindow(rotatedAt);
    } finally {
      db.resume();
    }
    const res = await reuse;
    const body = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(200);
    expect(body.refresh_token).toBe(first.body.refresh_token);
    // The grant lives: the successor refreshes (and rotates) as usual.
    const next = await publicRefreshed(issuer, clientId, first.body.refresh_token as string);
    expect(next.status).toBe(200);
    expect(await refreshTypes(clientId)).toEqual(['refresh.grace_reissued', 'refresh.rotated', 'refresh.rotated']);
  });

  test('a reuse whose body arrives after the window, though its request started inside it, revokes the grant', async () => {
    const { clientId, tokens } = await signInPublic(issuer, wallet);
    const body = publicRefreshForm(clientId, tokens.refresh_token!);
    const half = Math.floor(body.length / 2);
    const socket = connect(server.port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    let answer = '';
    socket.setEncoding('utf8').on('data', (d: string) => (answer += d));
    const ended = new Promise<void>((resolve) => socket.once('end', resolve));
    // The request starts, and the first half of its body is sent, before the rotation.
    socket.write(`POST /token HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.slice(0, half)}`);
    await sleep(200);
    const rotatedAt = Date.now();
    const first = await publicRefreshed(issuer, clientId, tokens.refresh_token!);
    expect(first.status).toBe(200);
    await pastTheWindow(rotatedAt);
    socket.write(body.slice(half));
    await ended;
    const [head, json] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(json!)).toMatchObject({ error: 'invalid_grant' });
    // A reuse outside the window: the whole grant is revoked, the successor with it.
    const successor = await publicRefreshed(issuer, clientId, first.body.refresh_token as string);
    expect(successor.status).toBe(400);
    expect(successor.body.error).toBe('invalid_grant');
  });
});
