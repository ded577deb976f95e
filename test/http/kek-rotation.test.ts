import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

import { Wallet } from 'ethers';

import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { Storage } from '../../adapters/types.js';
import { kekId } from '../../keys/seal.js';
import { baseConfig, basicAuth, introspect, opaqueToken, REDIRECT, register, RESOURCE } from '../support/agent-server.js';
import { publicRefreshed, signInPublic } from '../support/public-client.js';
import { logLines, runCli, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

/**
 * Rotating the KEK (docs/operations.md, "Rotating the KEK"): a server started with AGENTAUTH_KEK set to a new KEK and
 * AGENTAUTH_KEK_FALLBACK to the old one re-seals the signing keys (same keys, same kids), still finds the tokens, codes
 * and registration access tokens stored under the old KEK's keys, still accepts the client secrets hashed under its
 * pepper and stores each again under the new one when its client authenticates. Once the fallback is removed, what
 * was moved works, and what never was (a client that did not authenticate meanwhile, a token issued before) does not,
 * as the runbook says. On SQLite and on the MongoDB wire server.
 */
const wallet = new Wallet('0x3c2a0e79b0a1c1a3c0e1b5fb6c4b1a9f0f2c7b8d1e3a5c6d7e8f9a0b1c2d3e4f');

type Env = Record<string, string>;
const backends: Array<[string, () => Env, (env: Env) => Storage]> = [
  ['SQLite', () => ({}), (env) => new SqliteStorage({ dataDir: env.AGENTAUTH_DATA_DIR! })],
  ['MongoDB (FerretDB)', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('kek_rotation') }), (env) => new MongoStorage({ uri: env.MONGODB_URI!, dbName: env.MONGODB_DB! })],
];

const newKek = () => randomBytes(32);
const b64 = (k: Buffer) => k.toString('base64');

/** A request that only a client whose secret matches gets 200 for: introspection of a token it does not know. */
async function authenticates(issuer: string, id: string, secret: string): Promise<number> {
  const res = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: { authorization: basicAuth(id, secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: 'not-a-token-of-this-server' }),
  });
  return res.status;
}

const jwksKids = async (issuer: string) => ((await (await fetch(`${issuer}/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid).sort();

/** A registered confidential client: its id, secret, registration access token and URI. */
async function confidentialClient(issuer: string): Promise<{ id: string; secret: string; rat: string; uri: string }> {
  // Its registration_client_uri names this server's port: a restarted server listens on another (replace the origin).
  const r = await register(issuer, { redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] });
  expect(r.status).toBe(201);
  return { id: String(r.body.client_id), secret: String(r.body.client_secret), rat: String(r.body.registration_access_token), uri: String(r.body.registration_client_uri) };
}

async function storedSecret(env: Env, openStorage: (env: Env) => Storage, clientId: string): Promise<unknown> {
  const storage = openStorage(env);
  await storage.init();
  try {
    return (await storage.model('Client').find(clientId))?.client_secret;
  } finally {
    await storage.close();
  }
}

describe.each(backends)('rotating the KEK on %s', (_name, storeEnv, openStorage) => {
  const oldKek = newKek();
  const newKekBytes = newKek();
  let base: Env;
  let server: RunningServer | undefined;

  beforeAll(() => {
    const dir = tempDir('agentauth-kek-rotation-');
    base = { AGENTAUTH_CONFIG: writeConfig(dir, baseConfig()), AGENTAUTH_DATA_DIR: join(dir, 'data'), ...storeEnv() };
  });
  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  test('old KEK → new KEK with the old as fallback → new KEK alone: keys re-sealed, credentials and secrets carried over as used', async () => {
    // Under the old KEK: the keys, an opaque token, a refresh token, two confidential clients with registration access tokens.
    server = await startServer({ ...base, AGENTAUTH_KEK: b64(oldKek) });
    const before = server.url;
    const kids = await jwksKids(before);
    const opaque = await opaqueToken(before);
    const { clientId: publicId, tokens } = await signInPublic(before, wallet);
    const used = await confidentialClient(before);
    const idle = await confidentialClient(before);
    expect(await authenticates(before, used.id, used.secret)).toBe(200);
    expect(await authenticates(before, idle.id, idle.secret)).toBe(200);
    await server.stop();

    // The new KEK alone does not open the old one's keys, and a fallback that is the KEK itself is refused: nothing changes.
    await expect(startServer({ ...base, AGENTAUTH_KEK: b64(newKekBytes) })).rejects.toThrow(/sealed under another key-encryption key/);
    await expect(startServer({ ...base, AGENTAUTH_KEK: b64(newKekBytes), AGENTAUTH_KEK_FALLBACK: b64(newKekBytes) })).rejects.toThrow(/AGENTAUTH_KEK_FALLBACK is the KEK itself/);

    // New KEK, old one as fallback.
    const rotating = { ...base, AGENTAUTH_KEK: b64(newKekBytes), AGENTAUTH_KEK_FALLBACK: b64(oldKek) };
    server = await startServer(rotating);
    const during = server.url;
    const events = logLines(server.output()).map((l) => l.event);
    expect(events).toContain('kek.rotating');
    expect(events).toContain('keys.resealed');
    expect(await jwksKids(during)).toEqual(kids); // the same keys, re-sealed: nothing for verifiers to refetch
    expect((await introspect(during, opaque)).active).toBe(true); // stored under the old KEK's key, found
    const refreshed = await publicRefreshed(during, publicId, tokens.refresh_token!);
    expect(refreshed.status).toBe(200);
    const read = await fetch(used.uri.replace(before, during), { headers: { authorization: `Bearer ${used.rat}` } });
    expect(read.status).toBe(200);
    const nextRat = ((await read.json()) as { registration_access_token: string }).registration_access_token;
    // A wrong secret is still refused, under either pepper.
    expect(await authenticates(during, used.id, `${used.secret}x`)).toBe(401);
    expect(String(await storedSecret(rotating, openStorage, used.id))).not.toMatch(new RegExp(`^hmac-sha256:${kekId(newKekBytes)}\\.`));
    expect(await authenticates(during, used.id, used.secret)).toBe(200);
    // Stored again under the new KEK's pepper, after the answer: wait for it.
    const deadline = Date.now() + 5000;
    while (!String(await storedSecret(rotating, openStorage, used.id)).startsWith(`hmac-sha256:${kekId(newKekBytes)}.`)) {
      if (Date.now() > deadline) throw new Error(`the secret of ${used.id} was not re-hashed: ${server.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(logLines(server.output()).some((l) => l.event === 'client.secret_rehashed' && l.client_id === used.id)).toBe(true);

    // config check says what still needs the fallback: no key, the client that did not authenticate.
    const check = await runCli(['config', 'check', '--json'], rotating);
    const line = (JSON.parse(check.stdout) as { checks: Array<{ check: string; status: string; detail: string }> }).checks.find((c) => c.check === 'kek fallback');
    expect(line?.status).toBe('warn');
    expect(line?.detail).toContain('0 keys and 0 key transitions still under the fallback');
    expect(line?.detail).toContain(`1 registered client whose secret is not yet hashed under the KEK (each is at its next authentication: ${idle.id})`);
    // The re-sealing is in the audit log.
    const audit = await runCli(['audit', 'tail', '-n', '200', '--json'], rotating);
    const resealed = audit.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; details: { keys?: string[] } }).filter((r) => r.type === 'key.resealed');
    expect(resealed).toHaveLength(1);
    expect([...resealed[0]!.details.keys!].sort()).toEqual(kids);
    await server.stop();

    // The new KEK alone: what moved works, what did not is refused.
    const after = { ...base, AGENTAUTH_KEK: b64(newKekBytes) };
    server = await startServer(after);
    const done = server.url;
    expect(await jwksKids(done)).toEqual(kids);
    expect(await authenticates(done, used.id, used.secret)).toBe(200);
    expect((await fetch(used.uri.replace(before, done), { headers: { authorization: `Bearer ${nextRat}` } })).status).toBe(200);
    expect((await publicRefreshed(done, publicId, refreshed.body.refresh_token as string)).status).toBe(200);
    expect(await authenticates(done, idle.id, idle.secret)).toBe(401); // never authenticated while the fallback was set
    expect((await introspect(done, opaque)).active).toBe(false); // issued before, under the old KEK's key
    const noFallback = await runCli(['config', 'check', '--json'], after);
    expect((JSON.parse(noFallback.stdout) as { checks: Array<{ check: string }> }).checks.some((c) => c.check === 'kek fallback')).toBe(false);
  });

  test('a sign-in interaction begun under the old KEK goes on under the new one with the old as fallback, and not without it', async () => {
    const dir = tempDir('agentauth-kek-cookies-');
    const env = { AGENTAUTH_CONFIG: writeConfig(dir, baseConfig()), AGENTAUTH_DATA_DIR: join(dir, 'data'), ...storeEnv() };
    const [first, second] = [newKek(), newKek()];
    server = await startServer({ ...env, AGENTAUTH_KEK: b64(first) });
    const client = await register(server.url, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'read' });
    const auth = new URL(`${server.url}/auth`);
    const params = { client_id: String(client.body.client_id), response_type: 'code', redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' };
    for (const [k, v] of Object.entries(params)) auth.searchParams.set(k, v);
    const started = await fetch(auth, { redirect: 'manual' });
    expect(started.status).toBe(303);
    const page = new URL(started.headers.get('location')!, server.url).pathname; // /interaction/<uid>
    // The signed interaction cookie (and its signature), as a browser would send them back.
    const cookie = started.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    expect(cookie).toMatch(/_interaction=[^;]+; _interaction\.sig=/);
    const show = (issuer: string) => fetch(`${issuer}${page}`, { headers: { cookie }, redirect: 'manual' });
    expect((await show(server.url)).status).toBe(200);
    await server.stop();

    server = await startServer({ ...env, AGENTAUTH_KEK: b64(second), AGENTAUTH_KEK_FALLBACK: b64(first) });
    expect((await show(server.url)).status).toBe(200); // signed under the old KEK's cookie key: accepted
    await server.stop();
    server = await startServer({ ...env, AGENTAUTH_KEK: b64(second) });
    const refused = await show(server.url);
    expect(refused.status).toBe(400); // its signature no longer verifies: the interaction cannot be found
    expect(await refused.text()).toContain('<title>Sign-in expired</title>'); // what the person is shown: begin again
  });

  test('a fallback that is neither KEK the keys were sealed under is refused at start, and the store is left as it was', async () => {
    const dir = tempDir('agentauth-kek-third-');
    const env = { AGENTAUTH_CONFIG: writeConfig(dir, baseConfig()), AGENTAUTH_DATA_DIR: join(dir, 'data'), ...storeEnv() };
    const first = newKek();
    server = await startServer({ ...env, AGENTAUTH_KEK: b64(first) });
    const kids = await jwksKids(server.url);
    await server.stop();
    await expect(startServer({ ...env, AGENTAUTH_KEK: b64(newKek()), AGENTAUTH_KEK_FALLBACK: b64(newKek()) })).rejects.toThrow(/sealed under another key-encryption key/);
    server = await startServer({ ...env, AGENTAUTH_KEK: b64(first) });
    expect(await jwksKids(server.url)).toEqual(kids);
  });
});
