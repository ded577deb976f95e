import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { REDIRECT, RS_CLIENT, OPAQUE_RESOURCE, baseConfig, basicAuth, introspect, register } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { parseExposition, total } from '../support/metrics.js';
import { ROOT, logLines, startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const ADMIN_TOKEN = randomBytes(32).toString('base64url');
/** The condition docs/operations.md gives for a record the server cannot read ("A stored record that is not readable"). */
const UNREADABLE = "CASE WHEN json_valid(payload) THEN json_type(payload) <> 'object' ELSE 1 END";

/**
 * A stored record whose payload is not a JSON object (the file damaged, or edited by hand) is answered as absent:
 * the token, code or client it was is refused as an unknown one is, never with a 500, and the server logs which kind
 * of record it was (never its id). The damage is made in the server's own SQLite file (the embedded store).
 */
describe('a stored record that is not readable (embedded store)', () => {
  const running = {} as { server: RunningServer; db: DatabaseSync; admin: string };
  beforeAll(async () => {
    const adminPort = await freePort();
    const started = await startConfigured(baseConfig({ admin: { port: adminPort } }), { AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN });
    running.server = started.server;
    running.db = new DatabaseSync(join(started.env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite'));
    running.db.exec('PRAGMA busy_timeout = 10000');
    running.admin = `http://127.0.0.1:${adminPort}`;
  });
  afterAll(async () => {
    running.db?.close();
    await running.server?.stop();
  });

  const damage = (model: string, where: string, ...params: string[]) =>
    running.db.prepare(`UPDATE oidc_records SET payload = 'not json {' WHERE model = '${model}' AND ${where}`).run(...params).changes;
  const unreadableLogged = () => logLines(running.server.output()).filter((l) => l.event === 'storage.unreadable');

  test('an opaque access token: introspection says active: false, and the log names the model, never the id', async () => {
    const issued = await fetch(`${running.server.url}/token`, {
      method: 'POST',
      headers: { authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: OPAQUE_RESOURCE, scope: 'files' }),
    });
    expect(issued.status).toBe(200);
    const { access_token: token } = (await issued.json()) as { access_token: string };
    expect(await introspect(running.server.url, token)).toMatchObject({ active: true });

    const before = unreadableLogged().length;
    expect(damage('ClientCredentials', '1 = 1')).toBe(1);
    expect(await introspect(running.server.url, token)).toEqual({ active: false });
    const logged = unreadableLogged().slice(before);
    expect(logged).toEqual([expect.objectContaining({ event: 'storage.unreadable', model: 'ClientCredentials' })]);
    expect(JSON.stringify(logged)).not.toContain(token);
    // Counted in the storage error metric under its own kind.
    const scraped = await fetch(`${running.admin}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(total(parseExposition(await scraped.text()), 'agentauth_storage_errors_total', { backend: 'sqlite', store: 'ClientCredentials', operation: 'find', error: 'unreadable_record' })).toBe(1);
    // Storage is not marked down for it: the server stays ready.
    expect((await fetch(`${running.server.url}/readyz`)).status).toBe(200);
  });

  test.each([
    ['scope', '5'],
    ['clientId', "json('{}')"],
    ['exp', "'soon'"],
    ['aud', "json('[1]')"],
    ['extra', "'x'"],
  ])('an opaque token whose %s is of the wrong type is refused, never echoed into an introspection answer', async (field, value) => {
    const issued = await fetch(`${running.server.url}/token`, {
      method: 'POST',
      headers: { authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: OPAQUE_RESOURCE, scope: 'files' }),
    });
    const { access_token: token } = (await issued.json()) as { access_token: string };
    expect(await introspect(running.server.url, token)).toMatchObject({ active: true, scope: 'files', client_id: RS_CLIENT.id });
    const before = unreadableLogged().length;
    // Every live client-credentials token of the test gets the edit (the one just issued among them).
    const edited = running.db.prepare(`UPDATE oidc_records SET payload = json_set(payload, '$.${field}', ${value}) WHERE model = 'ClientCredentials' AND json_valid(payload)`).run().changes;
    expect(edited).toBeGreaterThanOrEqual(1);
    expect(await introspect(running.server.url, token)).toEqual({ active: false });
    expect(unreadableLogged().slice(before)).toEqual([expect.objectContaining({ event: 'storage.unreadable', model: 'ClientCredentials', field })]);
  });

  test('a registered client: its token requests are invalid_client and its registration access token is refused, never a 500', async () => {
    const created = await register(running.server.url, { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(created.status).toBe(201);
    const clientId = created.body.client_id as string;
    expect(damage('Client', 'id = ?', clientId)).toBe(1);

    const token = await fetch(`${running.server.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', client_id: clientId, code: 'x', code_verifier: 'a'.repeat(43), redirect_uri: REDIRECT }),
    });
    expect(token.status).toBe(401);
    expect(await token.json()).toMatchObject({ error: 'invalid_client' });

    const read = await fetch(created.body.registration_client_uri as string, { headers: { authorization: `Bearer ${created.body.registration_access_token as string}` } });
    expect(read.status).toBe(401);
    expect(await read.json()).toMatchObject({ error: 'invalid_token' });

    const auth = await fetch(`${running.server.url}/auth?${new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: REDIRECT, scope: 'openid', code_challenge: 'a'.repeat(43), code_challenge_method: 'S256' })}`, { redirect: 'manual' });
    expect(auth.status).toBe(400);
    expect(unreadableLogged().map((l) => l.model)).toContain('Client');
    expect(running.server.output()).not.toMatch(/"status":500|server_error/);
  });

  test('the admin API names the client record that is not readable, for the operator to repair; the query in the docs finds it', async () => {
    const created = await register(running.server.url, { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'read' });
    const clientId = created.body.client_id as string;
    // JSON, but not an object: as unreadable to the server, and found by the same query.
    expect(running.db.prepare("UPDATE oidc_records SET payload = '[1,2]' WHERE model = 'Client' AND id = ?").run(clientId).changes).toBe(1);
    expect(readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8')).toContain(`UNREADABLE="${UNREADABLE}"`);
    const listed = await fetch(`${running.admin}/admin/clients`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(listed.status).toBe(500);
    const body = (await listed.json()) as { error: string; error_description: string };
    expect(body.error).toBe('server_error');
    // The first one the listing reaches (the previous test's client too is damaged), by its id.
    const named = /^a stored Client record \(id "([^"]+)"\) is not a JSON object/.exec(body.error_description)?.[1];
    const found = running.db.prepare(`SELECT model, id FROM oidc_records WHERE ${UNREADABLE}`).all() as Array<{ model: string; id: string }>;
    expect(found).toContainEqual({ model: 'Client', id: clientId });
    expect(found).toContainEqual({ model: 'Client', id: named });
    // Removed as the docs say, the listing works again.
    running.db.prepare(`DELETE FROM oidc_records WHERE ${UNREADABLE}`).run();
    expect((await fetch(`${running.admin}/admin/clients`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).status).toBe(200);
  });
});
