import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { MongoClient } from 'mongodb';

import { freePort } from '../support/ferretdb.js';
import { guideFencedBlock } from '../support/guide.js';
import { newKek, ROOT, runCli, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { CliResult } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

/**
 * `agentauth config check` (docs/operations.md, "Checking a configuration"): what `agentauth start` would refuse,
 * found without starting and without changing anything. Every refusal is the line `start` prints for the same
 * environment, with the same exit code (2); a configuration start accepts is exit 0; nothing is created or written.
 */
const ISSUER = 'https://auth.example.com';
const RESOURCE = 'https://api.example.com';
const RS = { identifier: RESOURCE, scopes: ['read'] };
const SECRET = 'a-client-secret-of-at-least-32-characters';
const EC_KEY = { kty: 'EC', crv: 'P-256', x: 'dqdBR1-o537GmOtauLDCoSd6UwV-tdCwzx9yh7AzQ2Y', y: 'KzaeOkM1J4DiNJMx8QHD116wIZ2-Fl0wubjD5IB0pyw' };

interface Check {
  check: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
}
interface Report {
  ok: boolean;
  checks: Check[];
  context?: Record<string, unknown>;
  error?: string;
  error_description?: string;
  exit_code?: number;
}

const check = async (env: Record<string, string>, ...args: string[]) => {
  const res = await runCli(['config', 'check', '--json', ...args], env);
  return { res, report: JSON.parse(res.stdout) as Report };
};
const byName = (report: Report, name: string) => report.checks.find((c) => c.check === name);
const failures = (report: Report) => report.checks.filter((c) => c.status === 'fail');

/** `agentauth start` in the same environment: it must refuse with the check's line. */
async function startRefuses(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  const res = await runCli(['start', ...args], { ...env, PORT: env.PORT ?? String(await freePort()), LOG_LEVEL: 'warn' }, 30_000);
  expect(res.code).toBe(2);
  return res;
}

/** A SQLite store a server has run on (`keys rotate --init` makes the same: the store, a KEK and the first key). */
async function sqliteStore(extra: Record<string, string> = {}): Promise<Record<string, string>> {
  const env = { AGENTAUTH_DATA_DIR: join(tempDir(), 'data'), ISSUER, ...extra };
  expect((await runCli(['keys', 'rotate', '--init'], env)).code).toBe(0);
  return env;
}

const fileDigest = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

describe('agentauth config check: a configuration start accepts is exit 0', () => {
  test('a fresh data directory: exit 0 with what the first start will create, and nothing is created', async () => {
    const dataDir = join(tempDir(), 'data');
    const { res, report } = await check({ AGENTAUTH_DATA_DIR: dataDir, ISSUER });
    expect(res.code).toBe(0);
    expect(report.ok).toBe(true);
    expect(failures(report)).toEqual([]);
    expect(byName(report, 'store')).toMatchObject({ status: 'ok', detail: `no store yet: the first start creates ${join(dataDir, 'agentauth.sqlite')}` });
    expect(byName(report, 'kek')).toMatchObject({ status: 'warn', detail: expect.stringContaining(`the first start generates one in ${join(dataDir, 'kek')}`) });
    expect(byName(report, 'signing keys')).toMatchObject({ status: 'ok', detail: 'none yet: the first start generates an ES256 key' });
    expect(report.context).toMatchObject({ store: 'sqlite', data_dir: dataDir, issuer: ISSUER, issuer_source: 'ISSUER' });
    expect(res.stderr).toContain('agentauth: config check: no problems (1 warning)');
    // As every command: first, on stderr, the store, data directory and issuer it is about.
    expect(res.stderr.startsWith(`agentauth: store sqlite ${join(dataDir, 'agentauth.sqlite')}, data directory ${dataDir}, issuer ${ISSUER}\n`)).toBe(true);
    expect(existsSync(dataDir)).toBe(false);
  });

  test('a store a server has run on, a full configuration file: every check ok, and the store is left byte for byte', async () => {
    const dir = tempDir();
    const env = await sqliteStore({
      AGENTAUTH_KEK: newKek(),
      AGENTAUTH_ADMIN_TOKEN: 'an-admin-token-of-at-least-32-characters',
      AGENTAUTH_CONFIG: writeConfig(dir, {
        resourceServers: [RS, { identifier: 'https://skill.example.com', scopes: ['read'] }],
        // agentauth's own grants among them: accepted by the check as by start (their grant types are registered).
        clients: [
          { client_id: 'svc', client_secret: SECRET, scope: 'read', grant_types: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'] },
          { client_id: 'wallet-agent', token_endpoint_auth_method: 'none', grant_types: ['urn:agentauth:params:oauth:grant-type:wallet-signature'] },
        ],
        tokenExchange: { rules: [{ clients: ['svc'], from: [RESOURCE], to: ['https://skill.example.com'] }] },
        admin: { port: await freePort() },
      }),
    });
    const file = join(env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite');
    const before = { digest: fileDigest(file), files: readdirSync(env.AGENTAUTH_DATA_DIR!).sort() };

    const { res, report } = await check(env);
    expect(res.code).toBe(0);
    expect(report.checks.map((c) => [c.check, c.status])).toEqual([
      ['node', 'ok'],
      ['configuration', 'ok'],
      ['start options', 'ok'],
      ['issuer', 'ok'],
      ['admin', 'ok'],
      ['store', 'ok'],
      ['kek', 'ok'],
      ['signing keys', 'ok'],
      ['resource servers', 'ok'],
      ['clients', 'ok'],
      ['registered clients', 'ok'],
    ]);
    expect(byName(report, 'signing keys')!.detail).toMatch(/^1 key, 1 transition: every record's MAC and every key pair verified under the KEK; signing with [\w-]{43}$/);
    expect(byName(report, 'clients')!.detail).toBe('2 in the configuration file, each accepted by oidc-provider');
    expect(res.stderr).toContain('agentauth: config check: no problems\n');
    expect(JSON.stringify(report)).not.toContain(SECRET);
    expect(JSON.stringify(report)).not.toContain(env.AGENTAUTH_KEK);
    expect(JSON.stringify(report)).not.toContain(env.AGENTAUTH_ADMIN_TOKEN);
    expect({ digest: fileDigest(file), files: readdirSync(env.AGENTAUTH_DATA_DIR!).sort() }).toEqual(before);
  });

  test('without --json: one line per check, status first', async () => {
    const res = await runCli(['config', 'check'], { AGENTAUTH_DATA_DIR: join(tempDir(), 'data'), NODE_OPTIONS: '--max-old-space-size=160' });
    expect(res.code).toBe(0);
    const lines = res.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(10);
    for (const line of lines) expect(line).toMatch(/^(ok|warn|fail) {2,3}[a-z ]+: \S/);
    // A store that does not exist yet has no registered clients to check: no line for them.
    expect(res.stdout).not.toContain('registered clients');
    expect(res.stdout).toContain('warn  issuer: ISSUER is not set: tokens and discovery name http://localhost:3000;');
    // The operator sized the heap: start leaves V8's growth policy alone, and the check says so.
    expect(res.stdout).toContain("ok    start options: heap growth V8's own (NODE_OPTIONS sizes the heap), async context frame\n");
  });

  test('warnings do not fail the check: plain http on a public host, the KEK in the data directory', async () => {
    const env = await sqliteStore({ ISSUER: 'http://auth.example.com' });
    const { res, report } = await check(env);
    expect(res.code).toBe(0);
    expect(byName(report, 'issuer')).toMatchObject({ status: 'warn', detail: expect.stringContaining('plain http on a host other than loopback') });
    expect(byName(report, 'kek')).toMatchObject({ status: 'warn', detail: expect.stringContaining(`from the data directory (${join(env.AGENTAUTH_DATA_DIR!, 'kek')})`) });
    expect(byName(report, 'signing keys')!.status).toBe('ok');
    // Loopback over http is fine (a developer's machine).
    const local = await check({ ...env, ISSUER: 'http://127.0.0.1:3000' });
    expect(byName(local.report, 'issuer')!.status).toBe('ok');
  });

  test('registered clients that a changed configuration no longer accepts: a warning naming each, with oidc-provider\'s reason; start does not refuse', async () => {
    const dir = tempDir();
    const before = writeConfig(dir, { resourceServers: [{ identifier: RESOURCE, scopes: ['read', 'write'] }] });
    const env = { AGENTAUTH_DATA_DIR: join(dir, 'data'), ISSUER, AGENTAUTH_KEK: newKek() };
    const server = await startServer({ ...env, AGENTAUTH_CONFIG: before });
    const register = async (scope: string) => {
      const res = await fetch(`${server.url}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'], scope }),
      });
      expect(res.status).toBe(201);
      return ((await res.json()) as { client_id: string }).client_id;
    };
    const writer = await register('write');
    const reader = await register('read');
    await server.stop();

    const unchanged = await check({ ...env, AGENTAUTH_CONFIG: before });
    expect(byName(unchanged.report, 'registered clients')).toEqual({ check: 'registered clients', status: 'ok', detail: '2 registered clients, each accepted by oidc-provider under this configuration' });

    const after = { ...env, AGENTAUTH_CONFIG: writeConfig(tempDir(), { resourceServers: [{ identifier: RESOURCE, scopes: ['read'] }] }) };
    const { res, report } = await check(after);
    expect(res.code).toBe(0);
    expect(byName(report, 'registered clients')).toEqual({
      check: 'registered clients',
      status: 'warn',
      detail: `1 of 2 registered clients would be refused by oidc-provider under this configuration, every request of theirs answered invalid_client_metadata: ${writer} (scope must only contain Authorization Server supported scope values)`,
    });
    expect(byName(report, 'registered clients')!.detail).not.toContain(reader);
    // What the warning says: a server on the changed configuration starts, and that client's requests are refused.
    const changed = await startServer(after);
    try {
      const authorize = (clientId: string) =>
        fetch(
          `${changed.url}/auth?${new URLSearchParams({ client_id: clientId, response_type: 'code', redirect_uri: 'https://app.example.com/cb', scope: 'read', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', resource: RESOURCE })}`,
          { redirect: 'manual' },
        );
      const refused = await authorize(writer);
      expect(refused.status).toBe(400);
      expect(await refused.json()).toMatchObject({ error: 'invalid_client_metadata', error_description: 'scope must only contain Authorization Server supported scope values' });
      expect((await authorize(reader)).status).toBe(303);
    } finally {
      await changed.stop();
    }
  });

  test('a data directory of the previous layout: its keys are the ones checked, as start imports them first', async () => {
    const dataDir = join(tempDir(), 'data');
    // The throwaway store still writes that layout: keys.json, key-transitions.json, audit.jsonl and a kek file.
    expect((await runCli(['keys', 'rotate', '--init'], { AGENTAUTH_STORE: 'memory', AGENTAUTH_DATA_DIR: dataDir })).code).toBe(0);
    const env = { AGENTAUTH_DATA_DIR: dataDir, ISSUER };
    const { res, report } = await check(env);
    expect(res.code).toBe(0);
    expect(byName(report, 'store')!.detail).toMatch(/^no SQLite store yet: the first start creates \S+agentauth\.sqlite; the next start imports the previous layout's keys\.json, key-transitions\.json, audit\.jsonl$/);
    expect(byName(report, 'signing keys')!.detail).toMatch(/^1 key, 1 transition: every record's MAC and every key pair verified under the KEK; signing with /);
    expect(byName(report, 'registered clients')).toBeUndefined();
    expect(existsSync(join(dataDir, 'agentauth.sqlite'))).toBe(false);
    // Without its KEK the imported keys cannot be used: refused by the check as start refuses (after importing).
    rmSync(join(dataDir, 'kek'));
    const refused = await check(env);
    expect(refused.res.code).toBe(2);
    const failure = failures(refused.report)[0]!;
    expect(failure).toMatchObject({ check: 'kek', detail: expect.stringMatching(/^cannot start: signing keys exist in \S+ but no key-encryption key was found/) });
    expect((await startRefuses(env)).stderr).toContain(`agentauth: ${failure.detail}`);
  });

  test('the memory store: a warning, and a data directory that does not exist is not created', async () => {
    const dataDir = join(tempDir(), 'data');
    const { res, report } = await check({ AGENTAUTH_STORE: 'memory', AGENTAUTH_DATA_DIR: dataDir, ISSUER });
    expect(res.code).toBe(0);
    expect(byName(report, 'store')).toMatchObject({ status: 'warn', detail: expect.stringContaining('AGENTAUTH_STORE=memory: a throwaway store') });
    expect(byName(report, 'signing keys')!.detail).toBe('none yet: the first start generates an ES256 key');
    expect(existsSync(dataDir)).toBe(false);
  });

  test('docs/operations.md shows the checks the command makes, in its order, and its table names each of them', async () => {
    const { report } = await check(await sqliteStore());
    const names = report.checks.map((c) => c.check);
    const example = guideFencedBlock('operations.md', '### Checking a configuration', ['']).trimEnd().split('\n');
    expect(example.map((line) => /^(?:ok|warn|fail) +([a-z ]+):/.exec(line)?.[1])).toEqual(names);
    const page = readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8');
    const section = page.slice(page.indexOf('### Checking a configuration'), page.indexOf('## Client administration'));
    const tableNames = [...section.matchAll(/^\| `([a-z ]+)` \|/gm)].map((m) => m[1]);
    expect(tableNames).toEqual(names);
  });

  test('MongoDB: the server answers and the KEK unseals the keys; no collection is created in an empty database', async () => {
    const dbName = uniqueDbName('cfgcheck');
    const env = { MONGODB_URI: mongoUri(), MONGODB_DB: dbName, AGENTAUTH_KEK: newKek(), ISSUER };
    const { res, report } = await check(env);
    expect(res.code).toBe(0);
    // The test server is FerretDB v1: warned about, as start warns.
    expect(byName(report, 'store')).toMatchObject({ status: 'warn', detail: expect.stringContaining('it is FerretDB v1.') });
    expect(byName(report, 'signing keys')).toMatchObject({ status: 'ok', detail: 'none yet: the first start generates an ES256 key' });
    const client = await MongoClient.connect(mongoUri());
    try {
      expect(await client.db(dbName).listCollections().toArray()).toEqual([]);
      expect((await runCli(['keys', 'rotate', '--init'], env)).code).toBe(0);
      const again = await check(env);
      expect(again.res.code).toBe(0);
      expect(byName(again.report, 'signing keys')!.detail).toMatch(/^1 key, 1 transition: every record/);
    } finally {
      await client.close();
    }
  });
});

/**
 * Each refusal: the check fails with exit 2 and the line `start` prints for the same environment, and `start` does
 * refuse it. The cases cover every step of start that can refuse before serving.
 */
describe('agentauth config check: every refusal is start\'s own, with its exit code', () => {
  const refusals: Array<[string, () => Promise<{ env: Record<string, string>; args?: string[]; check: string; line: RegExp }>]> = [
    ['an invalid environment variable', async () => ({ env: { PORT: 'x' }, check: 'configuration', line: /^invalid configuration: PORT: must be an integer/ })],
    [
      'an unknown member in the configuration file',
      async () => ({ env: { AGENTAUTH_CONFIG: writeConfig(tempDir(), { resourceServer: [] }), AGENTAUTH_DATA_DIR: join(tempDir(), 'd') }, check: 'configuration', line: /^invalid configuration: AGENTAUTH_CONFIG resourceServer: not a setting agentauth knows/ }),
    ],
    [
      'a client of the file with a scope no resource server has (refused by oidc-provider, not by the file schema)',
      async () => ({
        env: { AGENTAUTH_CONFIG: writeConfig(tempDir(), { resourceServers: [RS], clients: [{ client_id: 'svc', client_secret: SECRET, scope: 'write' }] }), AGENTAUTH_DATA_DIR: join(tempDir(), 'd') },
        check: 'clients',
        line: /^invalid configuration: AGENTAUTH_CONFIG clients\[0\] \(svc\): scope must only contain Authorization Server supported scope values$/,
      }),
    ],
    [
      'a private_key_jwt client whose JWK oidc-provider refuses (a usable key with an x5c that is not an array of strings)',
      async () => ({
        env: {
          AGENTAUTH_CONFIG: writeConfig(tempDir(), { clients: [{ client_id: 'svc', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ ...EC_KEY, x5c: [''] }] } }] }),
          AGENTAUTH_DATA_DIR: join(tempDir(), 'd'),
        },
        check: 'clients',
        line: /^invalid configuration: AGENTAUTH_CONFIG clients\[0\] \(svc\): client JSON Web Key Set is invalid$/,
      }),
    ],
    [
      'an admin listener without an admin token',
      async () => ({ env: { AGENTAUTH_CONFIG: writeConfig(tempDir(), { admin: { port: await freePort() } }), AGENTAUTH_DATA_DIR: join(tempDir(), 'd') }, check: 'admin', line: /^invalid configuration: AGENTAUTH_CONFIG admin\.port: the admin listener needs an admin token/ }),
    ],
    [
      'a data directory that is a file (the store cannot be created there)',
      async () => {
        const file = join(tempDir(), 'afile');
        writeFileSync(file, 'not a directory');
        return { env: { AGENTAUTH_DATA_DIR: file }, check: 'store', line: new RegExp(`^cannot start: SQLite open \\S+ failed \\(the data directory ${file} is a file, not a directory\\)$`) };
      },
    ],
    [
      'a data directory under a file',
      async () => {
        const file = join(tempDir(), 'afile');
        writeFileSync(file, 'not a directory');
        return { env: { AGENTAUTH_DATA_DIR: join(file, 'data') }, check: 'store', line: new RegExp(`^cannot start: SQLite open \\S+ failed \\(the data directory ${file}/data cannot be created: ${file} is a file, not a directory\\)$`) };
      },
    ],
    ['AGENTAUTH_HEAP_GROWTH_PERCENT out of range', async () => ({ env: { AGENTAUTH_HEAP_GROWTH_PERCENT: '500', AGENTAUTH_DATA_DIR: join(tempDir(), 'd') }, check: 'start options', line: /^invalid configuration: AGENTAUTH_HEAP_GROWTH_PERCENT: must be a whole number from 0 to 300/ })],
    ['AGENTAUTH_ASYNC_CONTEXT unknown', async () => ({ env: { AGENTAUTH_ASYNC_CONTEXT: 'threads', AGENTAUTH_DATA_DIR: join(tempDir(), 'd') }, check: 'start options', line: /^invalid configuration: AGENTAUTH_ASYNC_CONTEXT: must be "frame"/ })],
    ['--workers 2 on the memory store', async () => ({ env: { AGENTAUTH_STORE: 'memory', AGENTAUTH_DATA_DIR: join(tempDir(), 'd') }, args: ['--workers', '2'], check: 'configuration', line: /^invalid configuration: --workers: several workers need a shared store/ })],
    ['a KEK that is not the store\'s', async () => ({ env: { ...(await sqliteStore()), AGENTAUTH_KEK: newKek() }, check: 'signing keys', line: /^cannot start: key \S+ was sealed under another key-encryption key/ })],
    [
      'keys in the store and the KEK file gone',
      async () => {
        const env = await sqliteStore();
        rmSync(join(env.AGENTAUTH_DATA_DIR!, 'kek'));
        return { env, check: 'kek', line: /^cannot start: signing keys exist in \S+ but no key-encryption key was found/ };
      },
    ],
    [
      'a key record altered in storage',
      async () => {
        const env = await sqliteStore();
        const db = new DatabaseSync(join(env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite'));
        db.exec("UPDATE signing_keys SET mac = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'");
        db.close();
        return { env, check: 'signing keys', line: /^cannot start: stored key \S+ is refused: its integrity MAC does not verify under this KEK/ };
      },
    ],
    [
      'no key signing now (the signing key\'s activation deleted from storage)',
      async () => {
        const env = await sqliteStore();
        expect((await runCli(['keys', 'rotate'], env)).code).toBe(0); // a second key, activating in 600 s
        const db = new DatabaseSync(join(env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite'));
        db.exec("DELETE FROM key_transitions WHERE kid = (SELECT kid FROM signing_keys WHERE seq = 1) AND type = 'activate'");
        db.close();
        return { env, check: 'signing keys', line: /^cannot start: no active signing key: run `agentauth keys rotate --immediately`$/ };
      },
    ],
    [
      'a SQLite store and files of the previous layout holding other keys (two key sets for one server)',
      async () => {
        const env = await sqliteStore();
        const other = join(tempDir(), 'data');
        expect((await runCli(['keys', 'rotate', '--init'], { AGENTAUTH_STORE: 'memory', AGENTAUTH_DATA_DIR: other })).code).toBe(0);
        copyFileSync(join(other, 'keys.json'), join(env.AGENTAUTH_DATA_DIR!, 'keys.json'));
        return { env, check: 'store', line: /^the store already holds signing keys \(\S+\) and \S+keys\.json holds others \(\S+\); move one of them away and start again$/ };
      },
    ],
    [
      'a resource server whose signingAlg no key has',
      async () => ({ env: await sqliteStore({ AGENTAUTH_CONFIG: writeConfig(tempDir(), { resourceServers: [{ ...RS, signingAlg: 'EdDSA' }] }) }), check: 'resource servers', line: /^cannot start: resourceServers\[0\]\.signingAlg is EdDSA but the signing keys are ES256/ }),
    ],
    [
      'a MONGODB_URI whose password is not percent-encoded (it used to be printed, and the check to crash)',
      async () => ({
        env: { MONGODB_URI: 'mongodb://agentauth:Zm9v/YmFy+cXV4@127.0.0.1:27017/prod', AGENTAUTH_KEK: newKek() },
        check: 'configuration',
        line: /^invalid configuration: MONGODB_URI: the user name or password has characters that must be percent-encoded/,
      }),
    ],
    [
      'a MONGODB_URI option the driver refuses (it escaped the check uncaught, then was found only when the store opened)',
      async () => ({ env: { MONGODB_URI: 'mongodb://127.0.0.1:27017/prod?tls=maybe', AGENTAUTH_KEK: newKek() }, check: 'configuration', line: /^invalid configuration: MONGODB_URI: tls\/ssl must be either "true" or "false"/ }),
    ],
    ['MongoDB without a configured KEK', async () => ({ env: { MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('cfgcheck') }, check: 'kek', line: /^cannot start: AGENTAUTH_KEK or AGENTAUTH_KEK_FILE is required with MONGODB_URI/ })],
    [
      'MongoDB that does not answer',
      async () => ({
        env: { MONGODB_URI: `mongodb://127.0.0.1:${await freePort()}/?directConnection=true`, AGENTAUTH_KEK: newKek(), AGENTAUTH_CONFIG: writeConfig(tempDir(), { storage: { timeoutMs: 500 } }) },
        check: 'store',
        line: /^cannot start: MongoDB connect failed/,
      }),
    ],
  ];

  test.each(refusals)('%s', async (_name, setup) => {
    const { env, args = [], check: name, line } = await setup();
    const { res, report } = await check(env, ...args);
    expect(res.code).toBe(2);
    expect(report.ok).toBe(false);
    const [failure, ...more] = failures(report);
    expect(more).toEqual([]);
    expect(failure).toMatchObject({ check: name, detail: expect.stringMatching(line) });
    expect(report).toMatchObject({ error: expect.any(String), error_description: failure!.detail, exit_code: 2 });
    expect(res.stderr).toContain(`agentauth: ${failure!.detail}\n`);
    expect(res.stderr).toContain('agentauth: config check: 1 problem; `agentauth start` would exit 2');

    // No credential of a connection string is ever shown.
    expect(res.stdout + res.stderr).not.toMatch(/Zm9v|YmFy/);
    const started = await startRefuses(env, ...args);
    expect(started.stdout + started.stderr).not.toMatch(/Zm9v|YmFy/);
    // The same line, except where the driver's own wording of a refused connection carries its timing.
    const expected = name === 'store' ? failure!.detail.slice(0, failure!.detail.indexOf('(')) : failure!.detail;
    expect(started.stderr).toContain(`agentauth: ${expected}`);
  });

  test('start refuses a client of the file that oidc-provider refuses before it creates anything: no data directory, KEK or key; no collection on MongoDB', async () => {
    const bad = writeConfig(tempDir(), { resourceServers: [RS], clients: [{ client_id: 'svc', client_secret: SECRET, scope: 'write' }] });
    const line = 'agentauth: invalid configuration: AGENTAUTH_CONFIG clients[0] (svc): scope must only contain Authorization Server supported scope values';
    const dataDir = join(tempDir(), 'never-created');
    expect((await startRefuses({ AGENTAUTH_CONFIG: bad, AGENTAUTH_DATA_DIR: dataDir })).stderr).toContain(line);
    expect(existsSync(dataDir)).toBe(false);

    const dbName = uniqueDbName('cfgstatic');
    expect((await startRefuses({ AGENTAUTH_CONFIG: bad, MONGODB_URI: mongoUri(), MONGODB_DB: dbName, AGENTAUTH_KEK: newKek() })).stderr).toContain(line);
    const client = await MongoClient.connect(mongoUri());
    try {
      expect(await client.db(dbName).listCollections().toArray()).toEqual([]);
    } finally {
      await client.close();
    }
  });
});
