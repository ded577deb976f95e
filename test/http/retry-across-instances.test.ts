import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { Wallet } from 'ethers';

import { freePort } from '../support/ferretdb.js';
import { baseConfig, register, REDIRECT } from '../support/agent-server.js';
import { publicRefreshForm, publicTier, signInPublic } from '../support/public-client.js';
import { newKek, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { refuseWrites, untilReady, withTriggers } from '../support/store-file.js';

const wallet = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const GRACE = 1;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A refresh or RFC 7592 request answered 503 after its rotation was stored, retried at another instance (two
 * `agentauth start` on one store, as behind a load balancer): the instance that answered 503 records it in the store,
 * so the retry gets the stored successor there too: a refresh token after the grace window, instead of being taken
 * for a reuse that revokes the grant; a registration access token once, instead of being refused for good. Recorded
 * at once when the store takes it, and once it is back when it did not.
 */
describe('a request retried at another instance after a 503', () => {
  let a: RunningServer;
  let b: RunningServer;
  let db: DatabaseSync;
  let issuer: string;

  beforeAll(async () => {
    const [portA, portB] = [await freePort(), await freePort()];
    issuer = `http://localhost:${portA}`;
    const dir = tempDir();
    const env = {
      AGENTAUTH_CONFIG: writeConfig(dir, baseConfig({ registration: { quota: { max: 1000 } }, tiers: { standard: publicTier(GRACE) } })),
      AGENTAUTH_DATA_DIR: join(dir, 'data'),
      AGENTAUTH_KEK: newKek(),
      ISSUER: issuer,
      TRUST_PROXY: 'true',
    };
    [a, b] = await Promise.all([startServer(env, portA), startServer(env, portB)]);
    db = new DatabaseSync(join(env.AGENTAUTH_DATA_DIR, 'agentauth.sqlite'));
    db.exec('PRAGMA busy_timeout = 10000');
  }, 60_000);
  afterAll(async () => {
    db?.close();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  /** A refresh at `server`, under the public issuer's name (B is reached as behind one proxy). */
  async function refresh(server: RunningServer, clientId: string, token: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-host': new URL(issuer).host },
      body: publicRefreshForm(clientId, token),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  const ready = untilReady;

  const auditOf = (clientId: string) =>
    (db.prepare('SELECT record FROM audit_records').all() as Array<{ record: string }>)
      .map((r) => JSON.parse(r.record) as { type: string; client_id?: string; details?: Record<string, unknown> })
      .filter((r) => r.client_id === clientId);
  const recorded = () => (db.prepare("SELECT nonce, binding FROM nonces WHERE nonce LIKE 'undelivered:%'").all() as Array<{ nonce: string; binding: string }>);

  async function retriedAtB(failing: string): Promise<void> {
    const { clientId, tokens } = await signInPublic(issuer, wallet);
    const before = recorded().length;
    const failed = await withTriggers(db, failing, () => refresh(a, clientId, tokens.refresh_token!));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    await ready(a);
    await ready(b);
    await sleep((GRACE + 1.5) * 1000);

    const retried = await refresh(b, clientId, tokens.refresh_token!);
    expect(retried).toMatchObject({ status: 200, body: { refresh_token: expect.any(String) } });
    expect((await refresh(b, clientId, retried.body.refresh_token as string)).status).toBe(200);
    const types = auditOf(clientId).map((r) => r.type);
    expect(types).not.toContain('refresh.reuse_detected');
    expect(types).not.toContain('grant.revoked');
    expect(auditOf(clientId).find((r) => r.type === 'refresh.grace_reissued')?.details).toMatchObject({ grace: true, after_unavailable: true });
    // What the store holds: a hash of the token, never the token.
    const rows = recorded();
    expect(rows.length).toBe(before + 1);
    expect(JSON.stringify(rows)).not.toContain(tokens.refresh_token!);
  }

  test('its audit record refused (the store up): recorded before the 503, and the retry at B gets the successor', async () => {
    await retriedAtB(refuseWrites('refuse_audit', 'INSERT', 'audit_records'));
  });

  test('its audit record and the store record both refused: recorded once the store is back, and the retry at B gets the successor', async () => {
    await retriedAtB([refuseWrites('refuse_audit', 'INSERT', 'audit_records'), refuseWrites('refuse_nonces', 'INSERT', 'nonces')].join('\n'));
  });

  /** An RFC 7592 request at `server`, under the public issuer's name. */
  async function manage(server: RunningServer, path: string, token: string, method: 'GET' | 'PUT', body?: Record<string, unknown>): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'x-forwarded-host': new URL(issuer).host, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  /** A client whose RFC 7592 update at A was answered 503 after its token was rotated (its client write refused). */
  async function updateCutAtA(): Promise<{ path: string; token: string; update: Record<string, unknown> }> {
    const created = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(created.status).toBe(201);
    const { registration_access_token: token, registration_client_uri: uri, client_id_issued_at: _issued, ...metadata } = created.body;
    const path = new URL(uri as string).pathname;
    const update = { ...metadata, client_name: 'renamed' };
    const clientWrites = [
      refuseWrites('refuse_client_insert', 'INSERT', 'oidc_records', "WHEN NEW.model = 'Client'"),
      refuseWrites('refuse_client_update', 'UPDATE', 'oidc_records', "WHEN NEW.model = 'Client'"),
    ].join('\n');
    const failed = await withTriggers(db, clientWrites, () => manage(a, path, token as string, 'PUT', update));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    await ready(a);
    await ready(b);
    // The failed write's claim on the client record lapses after 60 s (server/admin/client-writes.ts): removed here.
    db.exec("DELETE FROM attempts WHERE key LIKE 'client-rev:%'");
    return { path, token: token as string, update };
  }

  test('an RFC 7592 update answered 503 at A after its token rotated: the retry at B gets the successor, once, at either instance', async () => {
    const { path, token, update } = await updateCutAtA();
    const retried = await manage(b, path, token, 'PUT', update);
    expect(retried).toMatchObject({ status: 200, body: { client_name: 'renamed', registration_access_token: expect.any(String) } });
    expect(await manage(a, path, token, 'GET')).toMatchObject({ status: 401, body: { error: 'invalid_token' } });
    expect(await manage(b, path, token, 'GET')).toMatchObject({ status: 401, body: { error: 'invalid_token' } });
    expect(await manage(a, path, retried.body.registration_access_token as string, 'GET')).toMatchObject({ status: 200, body: { client_name: 'renamed' } });
  });

  test('retries sent at once to both instances after such a 503: exactly one gets the successor, three rounds', async () => {
    for (let round = 0; round < 3; round += 1) {
      const { path, token, update } = await updateCutAtA();
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => manage(i % 2 === 0 ? a : b, path, token, 'PUT', update)));
      const won = answers.filter((r) => r.status === 200);
      expect({ round, statuses: answers.map((r) => r.status).sort() }).toEqual({ round, statuses: [200, ...Array(9).fill(401)] });
      expect(await manage(a, path, won[0]!.body.registration_access_token as string, 'GET')).toMatchObject({ status: 200 });
    }
  });

  test('a rotation that was answered gets no such record: presented again at B after the window, it is reuse', async () => {
    const { clientId, tokens } = await signInPublic(issuer, wallet);
    expect((await refresh(a, clientId, tokens.refresh_token!)).status).toBe(200);
    await sleep((GRACE + 1.5) * 1000);
    const reuse = await refresh(b, clientId, tokens.refresh_token!);
    expect(reuse).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(auditOf(clientId).map((r) => r.type)).toContain('refresh.reuse_detected');
  });
});
