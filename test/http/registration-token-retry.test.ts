import { REDIRECT, baseConfig, register } from '../support/agent-server.js';
import { clientMark } from '../../server/revocation-lineage.js';
import { refuseWrites, serverWithStoreFile, whileRefusing as refusing } from '../support/store-file.js';

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/**
 * RFC 7592 requests cut by a storage failure after the registration access token was sent to be rotated (or, for a
 * delete, used up): the 503 tells the client to retry with the same token, and the retry must work once, with the
 * successor that was stored, and never again. The failures are made by SQLite triggers the test adds to the server's
 * own file (the embedded store) and removes again, standing for the store's recovery.
 */
describe('RFC 7592 requests retried after a 503 (embedded store)', () => {
  const running = serverWithStoreFile(baseConfig());

  const whileRefusing = <T>(triggers: string, fn: () => Promise<T>) => refusing(running, triggers, fn);
  const refuse = refuseWrites;

  /** The stored keys of the client's registration access tokens (sealed: HMACs of the tokens, never the tokens). */
  const storedTokens = (clientId: string) =>
    (running.db.prepare("SELECT id, consumed FROM oidc_records WHERE model = 'RegistrationAccessToken' AND payload LIKE ?").all(`%"clientId":"${clientId}"%`) as Array<{ id: string; consumed: number | null }>)
      .map((r) => ({ id: r.id, used: r.consumed !== null }));

  async function registered(): Promise<{ clientId: string; uri: string; token: string; metadata: Record<string, unknown> }> {
    const created = await register(running.server.url, { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(created.status).toBe(201);
    const { registration_access_token: token, registration_client_uri: uri, client_id_issued_at: _i, ...metadata } = created.body;
    return { clientId: created.body.client_id as string, uri: uri as string, token: token as string, metadata };
  }

  async function send(uri: string, token: string, method: 'GET' | 'PUT' | 'DELETE', body?: Record<string, unknown>): Promise<Answer> {
    const res = await fetch(uri, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  const usedUp = { status: 401, body: { error: 'invalid_token' } };


  const storedClient = (clientId: string) =>
    JSON.parse((running.db.prepare("SELECT payload FROM oidc_records WHERE model = 'Client' AND id = ?").get(clientId) as { payload: string }).payload) as Record<string, unknown>;

  /** The client's stored tokens once the used one's record is gone (removed after the answer), within 5 s. */
  async function settled(clientId: string): Promise<Array<{ id: string; used: boolean }>> {
    const until = Date.now() + 5_000;
    while (storedTokens(clientId).some((t) => t.used) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    return storedTokens(clientId);
  }

  /** The audit records of one type for one client, from the store's file. */
  const recorded = (type: string, clientId: string) =>
    (running.db.prepare('SELECT record FROM audit_records').all() as Array<{ record: string }>)
      .map((r) => JSON.parse(r.record) as { type: string; client_id?: string })
      .filter((r) => r.type === type && r.client_id === clientId);
  const clients = () => (running.db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'Client'").get() as { n: number }).n;

  test('a registration whose audit record cannot be written: 503 and no client stored (the record comes before the write)', async () => {
    const before = clients();
    const failed = await whileRefusing(refuse('refuse_audit', 'INSERT', 'audit_records'), () =>
      register(running.server.url, { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'read' }));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable', error_description: expect.stringContaining('audit log') } });
    expect(clients()).toBe(before);
    const c = await registered();
    expect(recorded('client.registered', c.clientId)).toHaveLength(1);
  });

  test('an update whose audit record cannot be written: 503 before anything changes; the token still works, and the retry is recorded once', async () => {
    const c = await registered();
    const tokens = storedTokens(c.clientId);
    const failed = await whileRefusing(refuse('refuse_audit', 'INSERT', 'audit_records'), () => send(c.uri, c.token, 'PUT', { ...c.metadata, client_name: 'first try' }));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable', error_description: expect.stringContaining('audit log') } });
    // Neither the token nor the client changed.
    expect(storedTokens(c.clientId)).toEqual(tokens);
    expect(storedClient(c.clientId).client_name).toBeUndefined();
    expect(recorded('client.updated', c.clientId)).toEqual([]);

    const retried = await send(c.uri, c.token, 'PUT', { ...c.metadata, client_name: 'first try' });
    expect(retried).toMatchObject({ status: 200, body: { client_name: 'first try' } });
    expect(recorded('client.updated', c.clientId)).toHaveLength(1);
    expect(await send(c.uri, c.token, 'GET')).toMatchObject(usedUp);
    expect(await send(c.uri, retried.body.registration_access_token as string, 'GET')).toMatchObject({ status: 200, body: { client_name: 'first try' } });
  });

  test('an update whose client write fails after its token rotated: 503, nothing changed; the retry writes the change and gets the successor', async () => {
    const c = await registered();
    const clientWrites = [
      refuse('refuse_client_insert', 'INSERT', 'oidc_records', "WHEN NEW.model = 'Client'"),
      refuse('refuse_client_update', 'UPDATE', 'oidc_records', "WHEN NEW.model = 'Client'"),
    ].join('\n');
    const failed = await whileRefusing(clientWrites, () => send(c.uri, c.token, 'PUT', { ...c.metadata, client_name: 'renamed' }));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    const afterFailure = storedTokens(c.clientId);
    expect(afterFailure.filter((t) => t.used)).toHaveLength(1);
    expect(storedClient(c.clientId).client_name).toBeUndefined();

    // Recorded before the write that failed: the record names a change that was about to be made.
    expect(recorded('client.updated', c.clientId)).toHaveLength(1);

    const retried = await send(c.uri, c.token, 'PUT', { ...c.metadata, client_name: 'renamed' });
    expect(retried).toMatchObject({ status: 200, body: { client_name: 'renamed' } });
    expect(await settled(c.clientId)).toEqual([afterFailure.find((t) => !t.used)!]);
    expect(await send(c.uri, c.token, 'GET')).toMatchObject(usedUp);
    expect(await send(c.uri, retried.body.registration_access_token as string, 'GET')).toMatchObject({ status: 200, body: { client_name: 'renamed' } });
  });

  test('a read whose rotation cannot be stored: 503 and nothing used up; the retry rotates, and the token is then refused', async () => {
    const c = await registered();
    const failed = await whileRefusing(refuse('refuse_rat', 'INSERT', 'oidc_records', "WHEN NEW.model = 'RegistrationAccessToken'"), () => send(c.uri, c.token, 'GET'));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    expect(storedTokens(c.clientId)).toEqual([{ id: expect.any(String), used: false }]);

    const retried = await send(c.uri, c.token, 'GET');
    expect(retried.status).toBe(200);
    const successor = retried.body.registration_access_token as string;
    // The 503 is forgotten once the retry rotated: the token now gets nothing, not the successor a second time.
    await settled(c.clientId);
    expect(await send(c.uri, c.token, 'GET')).toMatchObject(usedUp);
    expect((await send(c.uri, successor, 'GET')).status).toBe(200);
  });

  test('retries at once after a read whose rotation was not stored: exactly one gets a successor, and it is the only live token', async () => {
    for (let round = 0; round < 3; round++) {
      const c = await registered();
      const failed = await whileRefusing(refuse('refuse_rat', 'INSERT', 'oidc_records', "WHEN NEW.model = 'RegistrationAccessToken'"), () => send(c.uri, c.token, 'GET'));
      expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
      expect(storedTokens(c.clientId)).toEqual([{ id: expect.any(String), used: false }]);

      // The 503 is remembered for this token; the retries that lose the rotation to the one that wins must not take
      // that memory for the winner's rotation and get its successor too.
      const retries = await Promise.all(Array.from({ length: 10 }, () => send(c.uri, c.token, 'GET')));
      const succeeded = retries.filter((r) => r.status === 200);
      expect(succeeded).toHaveLength(1);
      for (const r of retries.filter((r) => r.status !== 200)) expect(r).toMatchObject(usedUp);
      const successor = succeeded[0]!.body.registration_access_token as string;
      expect(await settled(c.clientId)).toEqual([{ id: expect.any(String), used: false }]);
      expect((await send(c.uri, successor, 'GET')).status).toBe(200);
    }
  });

  test('a read whose rotation was not stored, then rotated by its retry: the 503 gives the old token nothing later, even when nothing after the rotation could be tidied up', async () => {
    const c = await registered();
    const failed = await whileRefusing(refuse('refuse_rat', 'INSERT', 'oidc_records', "WHEN NEW.model = 'RegistrationAccessToken'"), () => send(c.uri, c.token, 'GET'));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    // As a client told Retry-After would: by then the 503 is recorded in the store as well (for the other instances).
    await new Promise((r) => setTimeout(r, 1_500));
    // The retry rotates while the store refuses what is tidied up after it (the used token's record removed, the 503's
    // record withdrawn): a failure of either must not make the old token worth anything.
    const tidying = [refuse('refuse_nonce_use', 'UPDATE', 'nonces'), refuse('refuse_rat_delete', 'DELETE', 'oidc_records', "WHEN OLD.model = 'RegistrationAccessToken'")].join('\n');
    const retried = await whileRefusing(tidying, async () => {
      const answer = await send(c.uri, c.token, 'GET');
      await new Promise((r) => setTimeout(r, 500));
      return answer;
    });
    expect(retried.status).toBe(200);
    const successor = retried.body.registration_access_token as string;
    // The old token (a copy taken from the client) gets nothing: the 503 was for a rotation that was never stored.
    expect(await send(c.uri, c.token, 'GET')).toMatchObject(usedUp);
    expect(await send(c.uri, c.token, 'PUT', { ...c.metadata, client_name: 'taken over' })).toMatchObject(usedUp);
    expect((await send(c.uri, successor, 'GET')).status).toBe(200);
  });

  test('a delete whose client removal fails after its token was used up: 503; the retry deletes the client', async () => {
    const c = await registered();
    const failed = await whileRefusing(refuse('refuse_client_delete', 'DELETE', 'oidc_records', "WHEN OLD.model = 'Client'"), () => send(c.uri, c.token, 'DELETE'));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    expect(storedTokens(c.clientId)).toEqual([{ id: expect.any(String), used: true }]);

    expect((await send(c.uri, c.token, 'DELETE')).status).toBe(204);
    expect(await send(c.uri, c.token, 'GET')).toMatchObject(usedUp);
    expect(running.db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'Client' AND id = ?").get(c.clientId)).toEqual({ n: 0 });
  });

  /** Whether the client's revocation mark (server/revocation-lineage.ts) is on the revoked-token list. */
  const marked = (clientId: string) => running.db.prepare('SELECT count(*) AS n FROM revoked_tokens WHERE jti = ?').get(clientMark(clientId, 0)) as { n: number };
  const exists = (clientId: string) => (running.db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'Client' AND id = ?").get(clientId) as { n: number }).n === 1;

  test('a delete whose revocation mark cannot be written: 503 and the client is not deleted; the retry deletes, marks and records it', async () => {
    const c = await registered();
    const failed = await whileRefusing(refuse('refuse_marks', 'INSERT', 'revoked_tokens'), () => send(c.uri, c.token, 'DELETE'));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    // Nothing deleted without its revocation: the client is still there (the tokens exchanged from its tokens would
    // otherwise stay active, and a retry could not find it to finish).
    expect(exists(c.clientId)).toBe(true);
    expect(marked(c.clientId)).toEqual({ n: 0 });

    expect((await send(c.uri, c.token, 'DELETE')).status).toBe(204);
    expect(exists(c.clientId)).toBe(false);
    expect(marked(c.clientId)).toEqual({ n: 1 });
    expect(recorded('client.deleted', c.clientId).length).toBeGreaterThanOrEqual(1);
    expect(await settled(c.clientId)).toEqual([]);
    expect(await send(c.uri, c.token, 'GET')).toMatchObject({ status: 401 });
  });

  test('a delete whose audit record cannot be written: 503 and the client is not deleted; the retry deletes and records it once', async () => {
    const c = await registered();
    const failed = await whileRefusing(refuse('refuse_audit', 'INSERT', 'audit_records'), () => send(c.uri, c.token, 'DELETE'));
    expect(failed).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
    expect(exists(c.clientId)).toBe(true);
    expect(recorded('client.deleted', c.clientId)).toEqual([]);

    expect((await send(c.uri, c.token, 'DELETE')).status).toBe(204);
    expect(exists(c.clientId)).toBe(false);
    expect(marked(c.clientId)).toEqual({ n: 1 });
    expect(recorded('client.deleted', c.clientId)).toHaveLength(1);
  });

  test('a token whose rotation was answered 200 gets nothing on reuse, however soon (no 503, no grace)', async () => {
    const c = await registered();
    const [a, b] = await Promise.all([send(c.uri, c.token, 'GET'), send(c.uri, c.token, 'GET')]);
    expect([a.status, b.status].sort()).toEqual([200, 401]);
    expect(await send(c.uri, c.token, 'GET')).toMatchObject(usedUp);
  });
});
