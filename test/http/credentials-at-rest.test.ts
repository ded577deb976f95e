import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Wallet } from 'ethers';
import { MongoClient } from 'mongodb';

import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import { sealCredentialIds } from '../../adapters/sealed-credential-ids.js';
import type { Storage } from '../../adapters/types.js';
import { baseConfig, introspect, opaqueToken, register } from '../support/agent-server.js';
import { publicRefreshed, signInPublic } from '../support/public-client.js';
import { startConfigured, uniqueDbName } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

/**
 * A copy of the database holds no credential that works (adapters/sealed-credential-ids.ts): opaque access tokens,
 * refresh tokens (the successor a rotation records included), authorization codes and registration access tokens are
 * stored under keyed hashes of their values, so a backup or a read-only database leak hands nothing to whoever holds
 * it. Before this, every one of them was its record's id, and a registration access token read from a backup took
 * over RFC 7592 management of its client.
 */
const wallet = new Wallet('0x2c2a0e79b0a1c1a3c0e1b5fb6c4b1a9f0f2c7b8d1e3a5c6d7e8f9a0b1c2d3e4f');

type Env = Record<string, string>;
const backends: Array<[string, () => Env, (env: Env) => Storage, (env: Env) => Promise<string>]> = [
  [
    'SQLite',
    () => ({}),
    (env) => new SqliteStorage({ dataDir: env.AGENTAUTH_DATA_DIR! }),
    // Every byte the store has written: the database file and its write-ahead log.
    async (env) => ['agentauth.sqlite', 'agentauth.sqlite-wal'].map((f) => { try { return readFileSync(join(env.AGENTAUTH_DATA_DIR!, f), 'latin1'); } catch { return ''; } }).join(''),
  ],
  [
    'MongoDB (FerretDB)',
    () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('at-rest') }),
    (env) => new MongoStorage({ uri: env.MONGODB_URI!, dbName: env.MONGODB_DB! }),
    async (env) => {
      const mongo = await new MongoClient(env.MONGODB_URI!).connect();
      try {
        const db = mongo.db(env.MONGODB_DB!);
        const dumps = await Promise.all((await db.listCollections().toArray()).map(async (c) => JSON.stringify(await db.collection(c.name).find().toArray())));
        return dumps.join('\n');
      } finally {
        await mongo.close();
      }
    },
  ],
];

/**
 * What a database writer without the KEK can do while unsealed records are accepted: copy a live record's payload
 * under a value of their choosing (in the layout of earlier versions, the value as the id) and present that value.
 */
async function plant(env: Env, openStorage: (env: Env) => Storage, model: 'ClientCredentials' | 'RegistrationAccessToken', real: string, chosen: string): Promise<void> {
  const storage = openStorage(env);
  await storage.init();
  try {
    const payload = await sealCredentialIds(storage, Buffer.from(env.AGENTAUTH_KEK!, 'base64'), { acceptUnsealed: true }).model(model).find(real);
    expect(payload?.jti).toBe(real);
    await storage.model(model).upsert(chosen, { ...payload!, jti: chosen }, 3600);
  } finally {
    await storage.close();
  }
}

/** Moves a registration access token's record back to the layout of earlier versions: the token as the id, its jti in the payload. */
async function unsealRegistrationToken(env: Env, openStorage: (env: Env) => Storage, rat: string): Promise<void> {
  const storage = openStorage(env);
  await storage.init();
  try {
    const sealed = sealCredentialIds(storage, Buffer.from(env.AGENTAUTH_KEK!, 'base64'), { acceptUnsealed: true }).model('RegistrationAccessToken');
    const payload = await sealed.find(rat);
    expect(payload?.jti).toBe(rat);
    const raw = storage.model('RegistrationAccessToken');
    expect(await raw.find(rat)).toBeUndefined();
    await raw.upsert(rat, payload!, 3600);
    await raw.destroy((sealed as unknown as { keyOf(id: string): string }).keyOf(rat));
  } finally {
    await storage.close();
  }
}

describe.each(backends)('credentials at rest on %s', (_name, storeEnv, openStorage, dump) => {
  let env: Env;
  let server: RunningServer;
  let issuer: string;

  beforeAll(async () => {
    ({ env, server } = await startConfigured(baseConfig(), storeEnv()));
    issuer = server.url;
  });
  afterAll(async () => {
    await server?.stop();
  });

  test('no token, refresh token or registration access token the server handed out is anywhere in the store, and each still works', async () => {
    // An opaque access token (client_credentials), a public client's refresh tokens, a registration access token.
    const opaque = await opaqueToken(issuer);
    expect(opaque).not.toContain('.');
    const { clientId, tokens } = await signInPublic(issuer, wallet);
    const rotated = await publicRefreshed(issuer, clientId, tokens.refresh_token!);
    expect(rotated.status).toBe(200);
    const successor = rotated.body.refresh_token as string;
    // A reuse within the grace gets the successor back: its value comes out of the store sealed, not as stored.
    const reuse = await publicRefreshed(issuer, clientId, tokens.refresh_token!);
    expect(reuse.status).toBe(200);
    expect(reuse.body.refresh_token).toBe(successor);
    const registered = await register(issuer, { redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'none' });
    const rat = registered.body.registration_access_token as string;

    const stored = await dump(env);
    expect(stored.length).toBeGreaterThan(1000);
    for (const [what, value] of [['opaque access token', opaque], ['refresh token', tokens.refresh_token!], ['its successor', successor], ['registration access token', rat]] as const) {
      expect({ what, inStore: stored.includes(value) }).toEqual({ what, inStore: false });
    }

    // And they work: found by their values.
    expect((await introspect(issuer, opaque)).active).toBe(true);
    expect((await fetch(registered.body.registration_client_uri as string, { headers: { authorization: `Bearer ${rat}` } })).status).toBe(200);
    expect((await publicRefreshed(issuer, clientId, successor)).status).toBe(200);
  });

  test('a stored key read from the database is not a credential: presented as the token, it is refused everywhere', async () => {
    const opaque = await opaqueToken(issuer);
    const { clientId, tokens } = await signInPublic(issuer, wallet);
    const registered = await register(issuer, { redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'none' });
    const rat = registered.body.registration_access_token as string;
    const storage = openStorage(env);
    await storage.init();
    const keys: Record<string, string> = {};
    try {
      const sealed = sealCredentialIds(storage, Buffer.from(env.AGENTAUTH_KEK!, 'base64'), { acceptUnsealed: true });
      const keyOf = (model: 'ClientCredentials' | 'RefreshToken' | 'RegistrationAccessToken', id: string) =>
        (sealed.model(model) as unknown as { keyOf(id: string): string }).keyOf(id);
      keys.opaque = keyOf('ClientCredentials', opaque);
      keys.refresh = keyOf('RefreshToken', tokens.refresh_token!);
      keys.rat = keyOf('RegistrationAccessToken', rat);
      // What a reader of the database sees: the records, under these keys.
      expect(await storage.model('ClientCredentials').find(keys.opaque)).toBeDefined();
      expect(await storage.model('RefreshToken').find(keys.refresh)).toBeDefined();
      expect(await storage.model('RegistrationAccessToken').find(keys.rat)).toBeDefined();
    } finally {
      await storage.close();
    }
    expect((await introspect(issuer, keys.opaque!)).active).toBe(false);
    const refreshed = await publicRefreshed(issuer, clientId, keys.refresh!);
    expect({ status: refreshed.status, error: refreshed.body.error }).toEqual({ status: 400, error: 'invalid_grant' });
    expect((await fetch(registered.body.registration_client_uri as string, { headers: { authorization: `Bearer ${keys.rat}` } })).status).toBe(401);
    // The credentials themselves are untouched by the attempts.
    expect((await introspect(issuer, opaque)).active).toBe(true);
    expect((await publicRefreshed(issuer, clientId, tokens.refresh_token!)).status).toBe(200);
  });

  test('a record stored under the token itself (before this) is still found, used once, and replaced by a sealed one', async () => {
    const registered = await register(issuer, { redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'none' });
    const rat = registered.body.registration_access_token as string;
    await unsealRegistrationToken(env, openStorage, rat);
    const uri = registered.body.registration_client_uri as string;
    const read = await fetch(uri, { headers: { authorization: `Bearer ${rat}` } });
    expect(read.status).toBe(200);
    const next = ((await read.json()) as { registration_access_token: string }).registration_access_token;
    expect((await fetch(uri, { headers: { authorization: `Bearer ${rat}` } })).status).toBe(401);
    expect((await fetch(uri, { headers: { authorization: `Bearer ${next}` } })).status).toBe(200);
  });
  test('while unsealed records are accepted (the default), one planted under a chosen value works: what `refuse` closes', async () => {
    const opaque = await opaqueToken(issuer);
    const chosen = `planted${Date.now()}abcdefghijklmnopqrstuvwxyz`;
    await plant(env, openStorage, 'ClientCredentials', opaque, chosen);
    expect((await introspect(issuer, chosen)).active).toBe(true);
  });
});

describe.each(backends)('credentials at rest on %s, with storage.unsealedCredentials: refuse', (_name, storeEnv, openStorage) => {
  let env: Env;
  let server: RunningServer;
  let issuer: string;

  beforeAll(async () => {
    const config = baseConfig();
    ({ env, server } = await startConfigured({ ...config, storage: { ...(config as { storage?: object }).storage, unsealedCredentials: 'refuse' } }, storeEnv()));
    issuer = server.url;
  });
  afterAll(async () => {
    await server?.stop();
  });

  test('a record a database writer planted under a value of their choosing is no credential', async () => {
    const opaque = await opaqueToken(issuer);
    const registered = await register(issuer, { redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'none' });
    const rat = registered.body.registration_access_token as string;
    const chosen = `planted${Date.now()}abcdefghijklmnopqrstuvwxyz`;
    await plant(env, openStorage, 'ClientCredentials', opaque, chosen);
    await plant(env, openStorage, 'RegistrationAccessToken', rat, `${chosen}rat`);

    expect((await introspect(issuer, chosen)).active).toBe(false);
    const uri = registered.body.registration_client_uri as string;
    expect((await fetch(uri, { headers: { authorization: `Bearer ${chosen}rat` } })).status).toBe(401);
    // The credentials the server handed out work as before.
    expect((await introspect(issuer, opaque)).active).toBe(true);
    expect((await fetch(uri, { headers: { authorization: `Bearer ${rat}` } })).status).toBe(200);
  });

  test('a record stored under the token itself (before credentials were sealed) is no longer found', async () => {
    const registered = await register(issuer, { redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'none' });
    const rat = registered.body.registration_access_token as string;
    await unsealRegistrationToken(env, openStorage, rat);
    expect((await fetch(registered.body.registration_client_uri as string, { headers: { authorization: `Bearer ${rat}` } })).status).toBe(401);
  });
});
