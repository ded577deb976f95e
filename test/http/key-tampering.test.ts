// Someone who can write the key store but does not hold the KEK tries to make agentauth trust a key of theirs. The
// running server, a server starting on the tampered store, and `agentauth verify` must all refuse it.
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';

import { decodeProtectedHeader } from 'jose';
import { MongoClient } from 'mongodb';

import { FileKeyStore } from '../../adapters/file-keys.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { KeyStore } from '../../adapters/types.js';
import { checkKeyPair, macKeyRecord, macTransition, readCheckedKeys } from '../../keys/integrity.js';
import { newStoredKey } from '../../keys/keyring.js';
import { baseConfig, introspect, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { attackerKey, injectedKey, rawFileKeys, rawMongoKeys, rawSqliteKeys, signAccessToken } from '../support/raw-keys.js';
import type { RawKey, RawKeyStore, RawTransition } from '../support/raw-keys.js';
import { logLines, runCli, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { freePort } from '../support/ferretdb.js';
import { mongoUri } from '../support/storages.js';

const REFRESH_S = 1;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const HOUR = 3600_000;

interface Backend {
  name: 'sqlite' | 'memory' | 'mongodb';
  setup(): Promise<{ env: Record<string, string>; raw: RawKeyStore; keys: KeyStore; close(): Promise<void> }>;
}

const BACKENDS: Backend[] = [
  {
    // The embedded store as shipped: the tables of <dataDir>/agentauth.sqlite, written with SQL from another process
    // while the server runs on the same file.
    name: 'sqlite',
    async setup() {
      const dataDir = tempDir('agentauth-tamper-');
      const storage = new SqliteStorage({ dataDir });
      await storage.init();
      return { env: { AGENTAUTH_DATA_DIR: dataDir }, raw: rawSqliteKeys(() => storage.db), keys: storage.keys, close: () => storage.close() };
    },
  },
  {
    // The throwaway store (AGENTAUTH_STORE=memory) keeps its keys in keys.json and key-transitions.json.
    name: 'memory',
    async setup() {
      const dataDir = tempDir('agentauth-tamper-');
      return {
        env: { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_STORE: 'memory' },
        raw: rawFileKeys(dataDir),
        keys: new FileKeyStore(dataDir),
        close: async () => undefined,
      };
    },
  },
  {
    name: 'mongodb',
    async setup() {
      const dbName = uniqueDbName('tamper');
      const client = await MongoClient.connect(mongoUri());
      const storage = new MongoStorage({ uri: mongoUri(), dbName, timeoutMs: 3000 });
      return {
        env: { MONGODB_URI: mongoUri(), MONGODB_DB: dbName },
        raw: rawMongoKeys(client.db(dbName)),
        keys: storage.keys,
        close: async () => {
          await storage.close();
          await client.close();
        },
      };
    },
  },
];

describe.each(BACKENDS)('key-store tampering without the KEK: $name', (backend) => {
  let server: RunningServer;
  let env: Record<string, string>;
  let raw: RawKeyStore;
  let close: () => Promise<void>;
  let kek: Buffer;
  let genuineKid: string;
  let genuine: string;
  let snapshot: { keys: RawKey[]; transitions: RawTransition[] };

  beforeAll(async () => {
    const b = await backend.setup();
    raw = b.raw;
    close = b.close;
    kek = randomBytes(32);
    env = {
      ...b.env,
      AGENTAUTH_KEK: kek.toString('base64'),
      AGENTAUTH_CONFIG: writeConfig(tempDir(), baseConfig({ keys: { refreshIntervalSeconds: REFRESH_S } })),
    };
    server = await startServer(env);
    genuine = await clientCredentialsToken(server.url);
    genuineKid = decodeProtectedHeader(genuine).kid!;
    snapshot = { keys: await raw.keys(), transitions: await raw.transitions() };

    // Control: agentauth's own key, taken from storage with the KEK, signing the claims the forgeries carry, makes a
    // token introspection reports active. The forgeries below fail only because their key is not trusted.
    const [stored] = (await readCheckedKeys(b.keys, kek)).keys;
    const privateJwk = await checkKeyPair(kek, stored!);
    expect((await introspect(server.url, await signAccessToken(privateJwk, genuineKid, claims(server.url)))).active).toBe(true);
  });
  afterAll(async () => {
    await server?.stop();
    await close?.();
  });
  afterEach(async () => {
    await raw.writeKeys(snapshot.keys);
    await raw.writeTransitions(snapshot.transitions);
  });

  const claims = (issuer: string) => ({ iss: issuer, client_id: RS_CLIENT.id, aud: RESOURCE, scope: 'read' });

  async function clientCredentialsToken(url: string): Promise<string> {
    const res = await fetch(`${url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { access_token: string }).access_token;
  }

  const kids = async (path: '/jwks' | '/keys') => ((await (await fetch(`${server.url}${path}`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);

  /** /jwks, /keys, introspection and `agentauth verify` never trust `forged`; a new server refuses to start. */
  async function expectNotTrusted(forged: string, refusedRecord: string) {
    await sleep(REFRESH_S * 1000 * 2 + 500); // the running server has re-read the store at least once
    const refused = logLines(server.output()).filter((l) => l.event === 'keys.refused');
    expect(refused.length).toBeGreaterThan(0);
    expect(String(refused.at(-1)!.err)).toContain(refusedRecord);
    expect(await kids('/jwks')).toEqual([genuineKid]);
    expect(await kids('/keys')).toEqual([genuineKid]);
    expect(await introspect(server.url, forged)).toEqual({ active: false });
    expect((await introspect(server.url, genuine)).active).toBe(true); // it keeps serving with the keys it verified

    const verify = await runCli(['verify', forged], env);
    expect(verify.code).not.toBe(0);
    expect(verify.stdout).not.toContain('"valid"');
    expect(verify.stderr).toContain(refusedRecord);

    const start = await runCli(['start'], { ...env, PORT: String(await freePort()) });
    expect(start.code).not.toBe(0);
    expect(`${start.stdout}${start.stderr}`).toMatch(new RegExp(`cannot start: .*${refusedRecord}.* is refused`));
  }

  test('an injected archived key: its token is no one\'s, in /keys, introspection and verify', async () => {
    const attacker = await attackerKey();
    const forged = await signAccessToken(attacker.privateJwk, attacker.kid, claims(server.url));
    expect(await introspect(server.url, forged)).toEqual({ active: false });
    const long = new Date(Date.now() - 48 * HOUR);
    await raw.writeKeys([...snapshot.keys, injectedKey(attacker, 2, snapshot.keys[0]!.sealed, long)]);
    await raw.writeTransitions([
      ...snapshot.transitions,
      { kid: attacker.kid, type: 'activate', at: long.toISOString(), recordedAt: long.toISOString() },
      { kid: attacker.kid, type: 'retire', at: new Date(Date.now() - 24 * HOUR).toISOString(), recordedAt: long.toISOString() },
    ]);
    await expectNotTrusted(forged, `stored key ${attacker.kid}`);
  });

  test('an injected published key with records MACed under another KEK', async () => {
    const otherKek = randomBytes(32);
    const attacker = await attackerKey();
    const forged = await signAccessToken(attacker.privateJwk, attacker.kid, claims(server.url));
    const now = Date.now();
    // Activated an hour ago, retired a minute ago: retired, so still published, if it were trusted.
    await raw.writeKeys([...snapshot.keys, macKeyRecord(otherKek, injectedKey(attacker, 2, snapshot.keys[0]!.sealed, new Date(now - HOUR))) as RawKey]);
    await raw.writeTransitions([
      ...snapshot.transitions,
      macTransition(otherKek, { kid: attacker.kid, type: 'activate', at: new Date(now - HOUR).toISOString(), recordedAt: new Date(now - HOUR).toISOString() }) as RawTransition,
      macTransition(otherKek, { kid: attacker.kid, type: 'retire', at: new Date(now - 60_000).toISOString(), recordedAt: new Date(now - 60_000).toISOString() }) as RawTransition,
    ]);
    await expectNotTrusted(forged, `stored key ${attacker.kid}`);
  });

  test('the active key\'s stored public part replaced by the attacker\'s', async () => {
    const attacker = await attackerKey();
    const forged = await signAccessToken(attacker.privateJwk, genuineKid, claims(server.url));
    expect(await introspect(server.url, forged)).toEqual({ active: false });
    await raw.writeKeys(snapshot.keys.map((k) => ({ ...k, publicJwk: { ...k.publicJwk, x: attacker.publicJwk.x!, y: attacker.publicJwk.y! } })));
    await expectNotTrusted(forged, `stored key ${genuineKid}`);
    expect(JSON.stringify(await (await fetch(`${server.url}/jwks`)).json())).not.toContain(attacker.publicJwk.x!);
  });

  test('an injected transition (the signer retired)', async () => {
    await raw.writeTransitions([...snapshot.transitions, { kid: genuineKid, type: 'retire', at: new Date().toISOString(), recordedAt: new Date().toISOString() }]);
    await expectNotTrusted(genuine.replace(/\.[^.]+$/, '.AAAA'), `key transition ${genuineKid}:retire`);
  });
});

describe('a key store written before records carried integrity MACs', () => {
  test('embedded: a pre-MAC keys.json is imported into SQLite, the first start checks and upgrades it once, logs it, and serves its key; the next start finds nothing to do', async () => {
    const dataDir = tempDir('agentauth-legacy-');
    const kek = randomBytes(32);
    const { mac: _m, ...key } = await newStoredKey(kek, 'ES256', 1, new Date(Date.now() - HOUR));
    // The previous layout, as a release before integrity MACs wrote it: keys.json and key-transitions.json, no MACs.
    const legacy = rawFileKeys(dataDir);
    await legacy.writeKeys([key as RawKey]);
    await legacy.writeTransitions([{ kid: key.kid, type: 'activate', at: key.createdAt, recordedAt: key.createdAt, reason: 'first key' }]);
    const env = { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_KEK: kek.toString('base64') };

    let server = await startServer(env);
    try {
      const lines = logLines(server.output());
      expect(lines.find((l) => l.event === 'storage.imported')).toMatchObject({ keys: 1, transitions: 1, auditRecords: 0 });
      const upgraded = lines.find((l) => l.event === 'keys.integrity_upgraded');
      expect(upgraded).toMatchObject({ keys: [key.kid], transitions: [`${key.kid}:activate`] });
      const jwks = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
      expect(jwks.keys.map((k) => k.kid)).toEqual([key.kid]);
    } finally {
      await server.stop();
    }
    const files = await readdir(dataDir);
    expect(files).toEqual(expect.arrayContaining(['keys.json.imported', 'key-transitions.json.imported']));
    expect(files).not.toContain('keys.json');

    const storage = new SqliteStorage({ dataDir });
    await storage.init();
    try {
      const audit = (await Promise.all((await storage.audit.chains()).map((chain) => storage.audit.list(1, 1000, chain)))).flat();
      expect(audit.filter((r) => r.type === 'key.integrity_upgraded').map((r) => r.details)).toEqual([{ keys: [key.kid], transitions: [`${key.kid}:activate`] }]);
      const raw = rawSqliteKeys(() => storage.db);
      expect(await raw.keys()).toEqual([{ ...key, mac: expect.any(String) }]);
      expect(await raw.transitions()).toEqual([expect.objectContaining({ kid: key.kid, type: 'activate', mac: expect.any(String) })]);
    } finally {
      await storage.close();
    }

    server = await startServer(env);
    try {
      expect(server.output()).not.toContain('keys.integrity_upgraded');
      expect(server.output()).not.toContain('storage.imported');
      const listed = await runCli(['keys', 'list'], env);
      expect(listed.code).toBe(0);
      expect(listed.stdout).toContain(`${key.kid}  ES256  active`);
    } finally {
      await server.stop();
    }
  });
});
