import type { DatabaseSync } from 'node:sqlite';

import { Wallet } from 'ethers';

import { baseConfig } from '../support/agent-server.js';
import { publicRefreshed, publicTier, signInPublic } from '../support/public-client.js';
import { refuseWrites, startWithStoreFile, whileRefusing } from '../support/store-file.js';
import type { ServerWithStoreFile } from '../support/store-file.js';
import type { RunningServer } from '../support/server.js';

const wallet = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const GRACE = 1;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A refresh answered 503 after its rotation was stored (here: the tokens' audit record refused, as a filling disk or a
 * database that answers late leaves it) leaves a consumed token whose successor nobody received. The client retries
 * with the same token, as the 503 says, and often after the refresh grace. That retry gets the stored successor, not a
 * revocation of the grant and a false `refresh.reuse_detected`; a rotation that was answered keeps the window.
 * The store refuses writes through SQLite triggers on the server's own file.
 */
describe('a refresh retried after its rotation was answered 503', () => {
  let running: ServerWithStoreFile | undefined;
  let server: RunningServer;
  let db: DatabaseSync;

  // The file opened by the shared helper, which waits for the server's writer to release the write lock (a trigger
  // dropped while the writer held it failed with "database is locked" under CI load).
  beforeAll(async () => {
    running = await startWithStoreFile(baseConfig({ registration: { quota: { max: 1000 } }, tiers: { standard: publicTier(GRACE) } }));
    ({ server, db } = running);
  });
  afterAll(() => running?.close());

  const auditOf = (clientId: string) =>
    (db.prepare('SELECT record FROM audit_records').all() as Array<{ record: string }>)
      .map((r) => JSON.parse(r.record) as { type: string; client_id?: string; details?: Record<string, unknown> })
      .filter((r) => r.client_id === clientId);

  test('gets the stored successor after the grace window; a rotation that was answered is still reuse after it', async () => {
    const refused = await signInPublic(server.url, wallet);
    const answered = await signInPublic(server.url, wallet);

    // The answered rotation: its old token is kept to be presented again after the window.
    const first = await publicRefreshed(server.url, answered.clientId, answered.tokens.refresh_token!);
    expect(first.status).toBe(200);

    const unavailable = await whileRefusing({ server, db }, refuseWrites('refuse_audit', 'INSERT', 'audit_records'), () =>
      publicRefreshed(server.url, refused.clientId, refused.tokens.refresh_token!));
    expect(unavailable.status).toBe(503);
    expect(unavailable.body.error).toBe('temporarily_unavailable');
    // The rotation itself was stored: the token is used up and a successor recorded.
    await sleep((GRACE + 1.5) * 1000);

    const retry = await publicRefreshed(server.url, refused.clientId, refused.tokens.refresh_token!);
    expect(retry.status).toBe(200);
    expect(typeof retry.body.refresh_token).toBe('string');
    // The successor it got is a live token: it rotates normally.
    expect((await publicRefreshed(server.url, refused.clientId, retry.body.refresh_token as string)).status).toBe(200);
    const types = auditOf(refused.clientId).map((r) => r.type);
    expect(types).not.toContain('refresh.reuse_detected');
    expect(types).not.toContain('grant.revoked');
    expect(auditOf(refused.clientId).find((r) => r.type === 'refresh.grace_reissued')?.details).toMatchObject({ grace: true, after_unavailable: true });

    // The answered one: presented again after the window, it is reuse, and the grant goes.
    const reuse = await publicRefreshed(server.url, answered.clientId, answered.tokens.refresh_token!);
    expect(reuse.status).toBe(400);
    expect(reuse.body.error).toBe('invalid_grant');
    expect((await publicRefreshed(server.url, answered.clientId, first.body.refresh_token as string)).status).toBe(400);
    expect(auditOf(answered.clientId).map((r) => r.type)).toContain('refresh.reuse_detected');
  });
  test('a rotation answered 503 that was not stored: once a retry rotated, the old token after the window is reuse, not a grace answer', async () => {
    const victim = await signInPublic(server.url, wallet);
    // The rotation's write is refused: the token stays unused, and this instance remembers the 503 for it.
    const unavailable = await whileRefusing({ server, db }, refuseWrites('refuse_refresh', 'INSERT', 'oidc_records', "WHEN NEW.model = 'RefreshToken'"), () =>
      publicRefreshed(server.url, victim.clientId, victim.tokens.refresh_token!));
    expect(unavailable.status).toBe(503);
    // The client's retry rotates the token and is answered.
    const retry = await publicRefreshed(server.url, victim.clientId, victim.tokens.refresh_token!);
    expect(retry.status).toBe(200);
    await sleep((GRACE + 1.5) * 1000);

    // Whoever presents the old token now (a copy taken from the client) is a reuse: the 503 was for a rotation that
    // never happened, so it hands out nothing, and the grant (with the client's live successor) is revoked.
    const replay = await publicRefreshed(server.url, victim.clientId, victim.tokens.refresh_token!);
    expect(replay.status).toBe(400);
    expect(replay.body.error).toBe('invalid_grant');
    expect((await publicRefreshed(server.url, victim.clientId, retry.body.refresh_token as string)).status).toBe(400);
    const types = auditOf(victim.clientId).map((r) => r.type);
    expect(types).toContain('refresh.reuse_detected');
    expect(types).not.toContain('refresh.grace_reissued');
  });
});
