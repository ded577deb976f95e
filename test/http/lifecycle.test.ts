import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

import { SqliteStorage } from '../../adapters/sqlite.js';
import { rawSqliteKeys } from '../support/raw-keys.js';
import { mongoUri } from '../support/storages.js';
import { newKek, runCli, spawnCli, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import { tokenRequestAcrossSignal } from '../support/drain.js';
import { freePort, startFerretdb } from '../support/ferretdb.js';

const SECRET = 'lifecycle-client-secret-0123456789abcdef';
const CONFIG = {
  resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
  clients: [{ client_id: 'svc', client_secret: SECRET }],
};

/** The signing_keys and key_transitions rows of the SQLite store in `dataDir`, read with SQL while no server runs. */
async function readSqliteKeys(dataDir: string) {
  const storage = new SqliteStorage({ dataDir });
  await storage.init();
  try {
    const raw = rawSqliteKeys(() => storage.db);
    return { keys: await raw.keys(), transitions: await raw.transitions() };
  } finally {
    await storage.close();
  }
}

describe('SIGTERM', () => {
  test('stops accepting, finishes the in-flight request, closes storage and exits 0', async () => {
    const dir = tempDir();
    const server = await startServer({
      AGENTAUTH_CONFIG: writeConfig(dir, CONFIG),
      MONGODB_URI: mongoUri(),
      MONGODB_DB: uniqueDbName('sigterm'),
      AGENTAUTH_KEK: newKek(),
    });
    // A request in flight: headers sent, body only half sent when the signal arrives.
    const inFlight = tokenRequestAcrossSignal(server.url, { id: 'svc', secret: SECRET }, () => server.child.kill('SIGTERM'));
    const done = await inFlight;
    expect(done.status).toBe(200);
    expect(typeof done.json.access_token).toBe('string');
    expect(await server.exited).toBe(0);
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
    expect(server.output()).toContain('"stopped"');
  });

  test('a SIGTERM that arrives while the server is still starting stops it once started, with exit 0, not the signal', async () => {
    const dir = tempDir();
    // Resolved at a line logged after the handlers are installed and before storage, keys and the listener are up.
    const server = await startServer({ AGENTAUTH_CONFIG: writeConfig(dir, CONFIG), AGENTAUTH_DATA_DIR: tempDir('agentauth-sigterm-') }, undefined, {
      until: '"AsyncLocalStorage implementation"',
    });
    expect(server.output()).not.toContain('"agentauth listening"');
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    expect(server.child.signalCode).toBeNull();
    const out = server.output();
    expect(out).toContain('"signal received while starting; stopping once started"');
    // Started all the way (keys, storage), then drained and closed like any other stop.
    expect(out.indexOf('"agentauth listening"')).toBeGreaterThan(out.indexOf('"signal received while starting; stopping once started"'));
    expect(out).toContain('"stopped"');
  });

  test('a SIGTERM while the server\'s modules are still loading (before any log line) is caught too: exit 0 once started, not killed by the signal', async () => {
    const dir = tempDir();
    const child = spawnCli(['start'], { AGENTAUTH_CONFIG: writeConfig(dir, CONFIG), AGENTAUTH_DATA_DIR: join(dir, 'data'), PORT: String(await freePort()) });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    child.stderr!.on('data', (d: Buffer) => (out += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    // Once the process has re-executed itself with the async-context flag (server/async-context.ts), and as long again
    // as a bare Node takes to start on this machine now (twice, at least 100 ms): by then its first modules
    // (server/signal-hold.ts) have run, and loading the rest takes several times as long. The signal used to kill it
    // here (exit 143, nothing logged).
    const bootStarted = performance.now();
    spawnSync(process.execPath, ['-e', '']);
    const boot = Math.max(100, 2 * (performance.now() - bootStarted));
    const deadline = Date.now() + 10_000;
    while (!readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').includes('--experimental-async-context-frame') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, boot));
    const atKill = out;
    child.kill('SIGTERM');
    expect(atKill).not.toContain('"agentauth listening"');
    expect(await exited).toBe(0);
    expect(child.signalCode).toBeNull();
    // Held (or delivered to start's own handler, had they taken over meanwhile): start finishes, then stops.
    expect(out).toContain('"signal received while starting; stopping once started"');
    expect(out.indexOf('"agentauth listening"')).toBeGreaterThan(out.indexOf('"signal received while starting; stopping once started"'));
    expect(out).toContain('"stopped"');
  });

  test('a start that hangs after the signal (its database answers nothing) ends with exit 1 once shutdownTimeoutMs has passed', async () => {
    const db = await startFerretdb();
    try {
      await db.pause();
      const config = writeConfig(tempDir(), { ...CONFIG, shutdownTimeoutMs: 500, storage: { timeoutMs: 10_000 } });
      const server = await startServer({ AGENTAUTH_CONFIG: config, MONGODB_URI: db.uri, MONGODB_DB: uniqueDbName('sigtermhang'), AGENTAUTH_KEK: newKek() }, undefined, {
        until: '"AsyncLocalStorage implementation"',
      });
      const signalled = Date.now();
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(1);
      // Bounded by shutdownTimeoutMs (500 ms), far inside the storage timeout the start was waiting on (10 s).
      expect(Date.now() - signalled).toBeLessThan(5000);
      expect(server.output()).toContain('"start did not finish in time after the signal; exiting"');
      expect(server.output()).not.toContain('"agentauth listening"');
    } finally {
      db.resume();
      await db.stop();
    }
  });
});

describe('start-up refusals', () => {
  test.each([
    ['PORT=abc', { PORT: 'abc' }, /^agentauth: invalid configuration: PORT: /],
    ['PORT=70000', { PORT: '70000' }, /^agentauth: invalid configuration: PORT: /],
    ['ISSUER with a query', { ISSUER: 'https://as.example.com/?x=1' }, /^agentauth: invalid configuration: ISSUER: /],
    ['MONGODB_URI not a mongodb URL', { MONGODB_URI: 'http://localhost' }, /^agentauth: invalid configuration: MONGODB_URI: /],
    ['AGENTAUTH_KEK and AGENTAUTH_KEK_FILE both set', { AGENTAUTH_KEK: newKek(), AGENTAUTH_KEK_FILE: '/x' }, /^agentauth: invalid configuration: AGENTAUTH_KEK_FILE: /],
  ])('%s exits non-zero with one line naming the setting', async (_label, env, message) => {
    const res = await runCli(['start'], { AGENTAUTH_DATA_DIR: join(tempDir(), 'data'), ...env });
    expect(res.code).toBe(2);
    expect(res.stderr.trim().split('\n')).toHaveLength(1);
    expect(res.stderr).toMatch(message);
  });

  test('a missing or short admin token is refused before anything is created, with and without --workers', async () => {
    const dir = tempDir();
    const withPort = writeConfig(tempDir(), { admin: { port: 1 } });
    const cases: Array<[string, Record<string, string>, RegExp]> = [
      ['short token', { AGENTAUTH_CONFIG: withPort, AGENTAUTH_ADMIN_TOKEN: 'short' }, /^agentauth: invalid configuration: AGENTAUTH_ADMIN_TOKEN: the admin token must be at least 32 characters/],
      ['no token', { AGENTAUTH_CONFIG: withPort }, /^agentauth: invalid configuration: AGENTAUTH_CONFIG admin\.port: the admin listener needs an admin token/],
      ['unreadable token file', { AGENTAUTH_CONFIG: writeConfig(tempDir(), { admin: { port: 1, tokenFile: join(dir, 'missing') } }) }, /^agentauth: invalid configuration: AGENTAUTH_CONFIG admin\.tokenFile .*cannot read the admin token/],
    ];
    for (const [label, env, message] of cases) {
      for (const args of [['start'], ['start', '--workers', '2']]) {
        const dataDir = join(dir, `data-${label.replace(/ /g, '-')}-${args.length}`);
        const res = await runCli(args, { AGENTAUTH_DATA_DIR: dataDir, ...env });
        expect({ label, args, code: res.code }).toEqual({ label, args, code: 2 });
        expect(res.stderr.trim().split('\n')).toHaveLength(1);
        expect(res.stderr).toMatch(message);
        // No store, KEK or first key: the data directory was never made.
        expect({ label, args, created: existsSync(dataDir) }).toEqual({ label, args, created: false });
      }
    }
  });

  test('--workers: a worker that cannot start makes the primary exit 2, as one process would; its log line names the worker by workerPid', async () => {
    const dataDir = join(tempDir(), 'data');
    const server = await startServer({ AGENTAUTH_DATA_DIR: dataDir });
    try {
      // The port is taken by the running server: one process, then two workers.
      const port = new URL(server.url).port;
      const single = await runCli(['start'], { AGENTAUTH_DATA_DIR: dataDir, PORT: port });
      expect(single.code).toBe(2);
      expect(single.stderr).toBe(`agentauth: PORT: cannot listen on (all interfaces):${port} (address already in use: another process listens there, EADDRINUSE)\n`);
      // The admin listener's port too, named by its setting.
      const adminClash = await runCli(['start'], { AGENTAUTH_DATA_DIR: dataDir, PORT: String(await freePort()), AGENTAUTH_ADMIN_TOKEN: 'a'.repeat(32), AGENTAUTH_CONFIG: writeConfig(tempDir(), { admin: { port: Number(port), host: '127.0.0.1' } }) });
      expect(adminClash.code).toBe(2);
      expect(adminClash.stderr).toBe(`agentauth: AGENTAUTH_CONFIG admin.port: cannot listen on 127.0.0.1:${port} (address already in use: another process listens there, EADDRINUSE)\n`);
      const workers = await runCli(['start', '--workers', '2'], { AGENTAUTH_DATA_DIR: dataDir, PORT: port });
      expect(workers.code).toBe(2);
      expect(workers.stderr).toMatch(/EADDRINUSE/);
      const exited = workers.stdout.split('\n').filter((l) => l.includes('worker exited; stopping the others')).map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(exited).toHaveLength(1);
      // One `pid` key (the primary's own), and the worker's as workerPid.
      const line = workers.stdout.split('\n').find((l) => l.includes('worker exited'))!;
      expect(line.match(/"pid":/g)).toHaveLength(1);
      expect(exited[0]).toMatchObject({ code: 2, started: false, workerPid: expect.any(Number), pid: expect.any(Number) });
      expect(exited[0]!.workerPid).not.toBe(exited[0]!.pid);
    } finally {
      await server.stop();
    }
    // A wrong KEK for the keys in the store: each worker refuses; the primary exits 2.
    const wrongKek = await runCli(['start', '--workers', '2'], { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_KEK: newKek() });
    expect(wrongKek.code).toBe(2);
    expect(wrongKek.stderr).toMatch(/^agentauth: cannot start: key .* was sealed under another key-encryption key/);
  });

  test('an unparsable AGENTAUTH_CONFIG, and a wrong value inside it, are named', async () => {
    const dir = tempDir();
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '{ "resourceServers": [');
    let res = await runCli(['start'], { AGENTAUTH_CONFIG: broken, AGENTAUTH_DATA_DIR: join(dir, 'data') });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^agentauth: invalid configuration: AGENTAUTH_CONFIG: .*broken\.json is not valid JSON/);
    expect(res.stderr.trim().split('\n')).toHaveLength(1);

    const bad = writeConfig(dir, { resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'], accessTokenTTL: 'long' }] });
    res = await runCli(['start'], { AGENTAUTH_CONFIG: bad, AGENTAUTH_DATA_DIR: join(dir, 'data') });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^agentauth: invalid configuration: AGENTAUTH_CONFIG resourceServers\[0\]\.accessTokenTTL: /);

    res = await runCli(['start'], { AGENTAUTH_CONFIG: join(dir, 'missing.json'), AGENTAUTH_DATA_DIR: join(dir, 'data') });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^agentauth: invalid configuration: AGENTAUTH_CONFIG: cannot read/);
  });

  test('a resource server signingAlg with no matching signing key is refused at start, not at the first token', async () => {
    const dir = tempDir();
    const cfg = writeConfig(dir, { resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'], signingAlg: 'EdDSA' }] });
    const res = await runCli(['start'], { AGENTAUTH_CONFIG: cfg, AGENTAUTH_DATA_DIR: join(dir, 'data') });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^agentauth: cannot start: resourceServers\[0\]\.signingAlg is EdDSA but the signing keys are ES256/);
  });

  test('a client secret is never echoed in a configuration error', async () => {
    const dir = tempDir();
    const cfg = writeConfig(dir, { clients: [{ client_id: 'svc', client_secret: 'short-secret-value' }] });
    const res = await runCli(['start'], { AGENTAUTH_CONFIG: cfg, AGENTAUTH_DATA_DIR: join(dir, 'data') });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/clients\[0\]\.client_secret: must be at least 32 characters/);
    expect(res.stderr).not.toContain('short-secret-value');
  });
});

describe('behind a reverse proxy', () => {
  test('with ISSUER set, endpoint URLs are the issuer\'s with or without TRUST_PROXY, whatever X-Forwarded-Proto/-Host say', async () => {
    const env = { AGENTAUTH_DATA_DIR: join(tempDir(), 'data'), ISSUER: 'https://as.example.com' };
    for (const extra of [{}, { TRUST_PROXY: 'true' }]) {
      const server = await startServer({ ...env, ...extra });
      for (const forwarded of [{}, { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'as.example.com' }, { 'x-forwarded-proto': 'http', 'x-forwarded-host': 'other.example' }] as Array<Record<string, string>>) {
        const meta = (await (await fetch(`${server.url}/.well-known/oauth-authorization-server`, { headers: forwarded })).json()) as Record<string, string>;
        expect(meta.issuer).toBe('https://as.example.com');
        expect(meta.token_endpoint).toBe('https://as.example.com/token');
        expect(meta.jwks_uri).toBe('https://as.example.com/jwks');
      }
      await server.stop();
    }
  });

  test('without ISSUER, X-Forwarded-Proto/-Host shape endpoint URLs only when TRUST_PROXY=true', async () => {
    const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'as.example.com' };
    const env = { AGENTAUTH_DATA_DIR: join(tempDir(), 'data') };
    let server = await startServer(env);
    let meta = (await (await fetch(`${server.url}/.well-known/oauth-authorization-server`, { headers: forwarded })).json()) as Record<string, string>;
    expect(meta.token_endpoint).toBe(`http://localhost:${server.port}/token`);
    await server.stop();
    server = await startServer({ ...env, TRUST_PROXY: 'true' });
    meta = (await (await fetch(`${server.url}/.well-known/oauth-authorization-server`, { headers: forwarded })).json()) as Record<string, string>;
    expect(meta.token_endpoint).toBe('https://as.example.com/token');
    await server.stop();
  });
});

describe('key material', () => {
  test('embedded: the first start generates one key and a 0600 KEK in a 0600 SQLite file; later starts load the same key', async () => {
    const dataDir = join(tempDir(), 'data');
    let server = await startServer({ AGENTAUTH_DATA_DIR: dataDir });
    const first = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(server.output()).toMatch(/"generated the first signing key"/);
    expect(server.output()).toContain('"storage: SQLite in the data directory"');
    expect(server.output()).not.toContain('THROWAWAY STORE');
    expect(await server.stop()).toBe(0);
    expect(statSync(join(dataDir, 'kek')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dataDir, 'agentauth.sqlite')).mode & 0o777).toBe(0o600);
    expect(existsSync(join(dataDir, 'keys.json'))).toBe(false); // the keys are in the SQLite file, not the old layout
    const stored = await readSqliteKeys(dataDir);
    expect(stored.keys.map((k) => k.kid)).toEqual(first.keys.map((k) => k.kid));
    expect(JSON.stringify(stored.keys)).not.toMatch(/"d"\s*:/); // the private key is sealed, not stored in clear

    server = await startServer({ AGENTAUTH_DATA_DIR: dataDir });
    const second = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(second.keys.map((k) => k.kid)).toEqual(first.keys.map((k) => k.kid));
    expect(server.output()).not.toContain('generated the first signing key');
    expect(await server.stop()).toBe(0);
  });

  test('embedded: keys present but the KEK file gone, or a different KEK, refuses to start and keeps the keys', async () => {
    const dataDir = join(tempDir(), 'data');
    const server = await startServer({ AGENTAUTH_DATA_DIR: dataDir });
    await server.stop();
    const keysBefore = await readSqliteKeys(dataDir);
    expect(keysBefore.keys).toHaveLength(1);

    let res = await runCli(['start'], { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_KEK: newKek() });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^agentauth: cannot start: key .* was sealed under another key-encryption key/);

    unlinkSync(join(dataDir, 'kek'));
    res = await runCli(['start'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/signing keys exist in .* but no key-encryption key was found/);
    expect(existsSync(join(dataDir, 'kek'))).toBe(false); // no new KEK generated beside keys it cannot open
    expect(await readSqliteKeys(dataDir)).toEqual(keysBefore);
  });

  test('memory (AGENTAUTH_STORE=memory): announced as throwaway; keys and KEK are files in the data directory, loaded again by later starts', async () => {
    const dataDir = join(tempDir(), 'data');
    const env = { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_STORE: 'memory' };
    let server = await startServer(env);
    const first = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(server.output()).toContain('THROWAWAY STORE (AGENTAUTH_STORE=memory)');
    expect(await server.stop()).toBe(0);
    expect(existsSync(join(dataDir, 'agentauth.sqlite'))).toBe(false);
    expect(statSync(join(dataDir, 'kek')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dataDir, 'keys.json')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dataDir, 'keys.json'), 'utf8')).not.toMatch(/"d"\s*:/);

    server = await startServer(env);
    const second = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(second.keys.map((k) => k.kid)).toEqual(first.keys.map((k) => k.kid));
    expect(await server.stop()).toBe(0);

    const keysBefore = readFileSync(join(dataDir, 'keys.json'), 'utf8');
    unlinkSync(join(dataDir, 'kek'));
    const res = await runCli(['start'], env);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/signing keys exist in .* but no key-encryption key was found/);
    expect(readFileSync(join(dataDir, 'keys.json'), 'utf8')).toBe(keysBefore);
  });

  test('mongodb: KEK required; keys shared; a wrong KEK refuses to start and generates nothing', async () => {
    const base = { MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('keys'), AGENTAUTH_DATA_DIR: join(tempDir(), 'data') };
    let res = await runCli(['start'], base);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/AGENTAUTH_KEK or AGENTAUTH_KEK_FILE is required with MONGODB_URI/);

    const kekFile = join(tempDir(), 'kek');
    writeFileSync(kekFile, `${newKek()}\n`, { mode: 0o600 });
    const server = await startServer({ ...base, AGENTAUTH_KEK_FILE: kekFile });
    const jwks = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    const other = await startServer({ ...base, AGENTAUTH_KEK_FILE: kekFile });
    const otherJwks = (await (await fetch(`${other.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(otherJwks.keys.map((k) => k.kid)).toEqual(jwks.keys.map((k) => k.kid));
    expect(other.output()).not.toContain('generated the first signing key');
    await Promise.all([server.stop(), other.stop()]);

    res = await runCli(['start'], { ...base, AGENTAUTH_KEK: newKek() });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/sealed under another key-encryption key/);
    const again = await startServer({ ...base, AGENTAUTH_KEK_FILE: kekFile });
    const againJwks = (await (await fetch(`${again.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
    expect(againJwks.keys.map((k) => k.kid)).toEqual(jwks.keys.map((k) => k.kid));
    await again.stop();
  });

  test('EdDSA: AGENTAUTH_KEY_ALG=EdDSA generates an Ed25519 key that signs access tokens', async () => {
    const dir = tempDir();
    const server = await startServer({ AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_KEY_ALG: 'EdDSA', AGENTAUTH_CONFIG: writeConfig(dir, CONFIG) });
    try {
      const res = await fetch(`${server.url}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`svc:${SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials&scope=read',
      });
      const { access_token: token } = (await res.json()) as { access_token: string };
      expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
      const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`${server.url}/jwks`)), { issuer: server.url });
      expect(payload.aud).toBe('https://api.example.com');
      const jwks = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kty: string; crv: string }> };
      expect(jwks.keys[0]).toMatchObject({ kty: 'OKP', crv: 'Ed25519' });
    } finally {
      await server.stop();
    }
  });

  test('a malformed AGENTAUTH_KEK is refused by name', async () => {
    const res = await runCli(['start'], { AGENTAUTH_DATA_DIR: join(tempDir(), 'data'), AGENTAUTH_KEK: 'dG9vLXNob3J0' });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^agentauth: cannot start: AGENTAUTH_KEK must be 32 bytes encoded as base64/);
  });
});
