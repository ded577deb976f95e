import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

import { RESOURCE, baseConfig, basicAuth as basic, clientCredentialsToken as clientCredentials, introspect, register } from '../support/agent-server.js';
import { runCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

async function revoke(issuer: string, id: string, secret: string, token: string): Promise<number> {
  const res = await fetch(`${issuer}/token/revocation`, {
    method: 'POST',
    headers: { authorization: basic(id, secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  return res.status;
}

interface Client {
  id: string;
  secret: string;
  rat: string;
  uri: string;
}

async function newClient(issuer: string, name: string): Promise<Client> {
  const res = await register(issuer, { client_name: name, grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
  if (res.status !== 201) throw new Error(`registration answered ${res.status}: ${JSON.stringify(res.body)}`);
  return {
    id: res.body.client_id as string,
    secret: res.body.client_secret as string,
    rat: res.body.registration_access_token as string,
    uri: res.body.registration_client_uri as string,
  };
}

const BACKUP_LINE = /^backup written: (.+) \((\d+) bytes, mode 0600; integrity_check ok\): (\d+) clients, (\d+) signing keys, (\d+) audit records\n$/;

// Anonymous registrations may use client_credentials here, so that registering and fetching tokens is the load.
const CONFIG = baseConfig({ registration: { quota: { max: 1000 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } });

describe('agentauth backup on the SQLite store, and a restore as docs/operations.md describes it', () => {
  const dir = tempDir('agentauth-backup-');
  const config = writeConfig(dir, CONFIG);
  const envA = { AGENTAUTH_CONFIG: config, AGENTAUTH_DATA_DIR: join(dir, 'a') };
  let server: RunningServer | undefined;

  afterEach(async () => {
    await server?.stop();
    server = undefined;
  });

  test('a backup taken under load restores into a fresh data directory: the client, the revocation, the keys and the audit log are back, later writes are not', async () => {
    server = await startServer(envA);
    const a = server.url;
    const portA = server.port;
    const client = await newClient(a, 'backed-up agent');
    const kept = await clientCredentials(a, client.id, client.secret);
    const revoked = await clientCredentials(a, client.id, client.secret);
    expect([kept.status, revoked.status]).toEqual([200, 200]);
    const keptToken = kept.body.access_token as string;
    const revokedToken = revoked.body.access_token as string;
    expect(await revoke(a, client.id, client.secret, revokedToken)).toBe(200);
    expect((await introspect(a, revokedToken)).active).toBe(false);

    // Load while the backup runs: four loops registering clients and fetching tokens (each a write to the store).
    const statuses: number[] = [];
    let loading = true;
    const load = Promise.all(
      [0, 1, 2, 3].map(async (n) => {
        for (let i = 0; loading; i += 1) {
          if (i % 2 === 0) {
            const res = await register(a, { client_name: `load-${n}-${i}`, grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
            statuses.push(res.status);
          } else {
            statuses.push((await clientCredentials(a, client.id, client.secret)).status);
          }
        }
      }),
    );
    // Let the load get going before the backup starts.
    while (statuses.length < 8) await new Promise((r) => setTimeout(r, 10));
    const out = join(dir, 'agentauth-backup.sqlite');
    const beforeBackup = statuses.length;
    const backup = await runCli(['backup', '--out', out], envA);
    const duringBackup = statuses.length;
    // Requests were answered while the backup command ran.
    expect(duringBackup).toBeGreaterThan(beforeBackup);
    // Keep loading a little past the backup's end, then stop.
    while (statuses.length < duringBackup + 8) await new Promise((r) => setTimeout(r, 10));
    loading = false;
    await load;

    expect(backup.code).toBe(0);
    const line = BACKUP_LINE.exec(backup.stdout);
    expect(line).not.toBeNull();
    const [, path, size, clients, keys, audit] = line!;
    expect(path).toBe(out);
    expect(Number(size)).toBe(statSync(out).size);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(Number(keys)).toBe(1);
    // The counts are the backup's own: read them back from the file.
    const copy = new DatabaseSync(out, { readOnly: true });
    try {
      const count = (sql: string) => Number((copy.prepare(sql).get() as { n: number }).n);
      expect(count("SELECT count(*) AS n FROM oidc_records WHERE model = 'Client'")).toBe(Number(clients));
      expect(count('SELECT count(*) AS n FROM signing_keys')).toBe(Number(keys));
      expect(count('SELECT count(*) AS n FROM audit_records')).toBe(Number(audit));
      expect((copy.prepare('PRAGMA journal_mode').get() as { journal_mode: string }).journal_mode).toBe('delete');
    } finally {
      copy.close();
    }
    expect(Number(clients)).toBeGreaterThanOrEqual(1);
    // The backup left nothing else beside it (no temporary file, no journal).
    expect(readdirSync(dir).filter((f) => f.includes('agentauth-backup'))).toEqual(['agentauth-backup.sqlite']);
    // The server kept answering while the backup ran.
    expect(statuses.filter((s) => s !== 200 && s !== 201)).toEqual([]);

    // Written after the backup: must not be in the restore.
    const later = await newClient(a, 'registered after the backup');
    expect((await clientCredentials(a, later.id, later.secret)).status).toBe(200);
    expect(await server.stop()).toBe(0);
    server = undefined;

    // The restore, step by step as in docs/operations.md: a fresh data directory (0700), the backup copied in as
    // agentauth.sqlite (0600), and the same KEK (here the generated kek file, which the backup does not hold).
    const dataB = join(dir, 'b');
    mkdirSync(dataB, { mode: 0o700 });
    copyFileSync(out, join(dataB, 'agentauth.sqlite'));
    chmodSync(join(dataB, 'agentauth.sqlite'), 0o600);
    const envB = { AGENTAUTH_CONFIG: config, AGENTAUTH_DATA_DIR: dataB };
    // Without the KEK the restored keys cannot be unsealed: the server refuses to start rather than make new ones.
    await expect(startServer(envB, portA)).rejects.toThrow(/signing keys exist in .* but no key-encryption key was found/);
    writeFileSync(join(dataB, 'kek'), readFileSync(join(dir, 'a', 'kek')), { mode: 0o600 });
    // On the same port, so with the same issuer, as a restored server would be.
    server = await startServer(envB, portA);
    const b = server.url;
    expect(b).toBe(a);
    // No new key and no new KEK: the restored ones were used.
    expect(server.output()).not.toContain('generated the first signing key');
    expect(server.output()).not.toContain('generated a key-encryption key');

    // The client: RFC 7592 read with its registration access token, and client_credentials with its secret.
    const read = await fetch(client.uri, { headers: { authorization: `Bearer ${client.rat}` } });
    expect(read.status).toBe(200);
    expect(((await read.json()) as Record<string, unknown>).client_id).toBe(client.id);
    const fresh = await clientCredentials(b, client.id, client.secret);
    expect(fresh.status).toBe(200);

    // The revocation came back with the store; the token that was not revoked is still good.
    expect((await introspect(b, revokedToken)).active).toBe(false);
    expect((await introspect(b, keptToken)).active).toBe(true);

    // The keys: tokens signed before the backup verify against the restored server's JWKS, and new ones use the same key.
    const jwks = createRemoteJWKSet(new URL(`${b}/jwks`));
    await expect(jwtVerify(keptToken, jwks, { audience: RESOURCE, typ: 'at+jwt' })).resolves.toBeDefined();
    expect(decodeProtectedHeader(fresh.body.access_token as string).kid).toBe(decodeProtectedHeader(keptToken).kid);

    // A client registered after the backup is gone.
    const gone = await clientCredentials(b, later.id, later.secret);
    expect(gone.status).toBe(401);
    expect(gone.body.error).toBe('invalid_client');

    // The audit log in the restored store verifies (run next to the running server, as an operator would).
    const verify = await runCli(['audit', 'verify'], envB);
    expect(verify.stdout).toMatch(/^audit log OK: \d+ records/);
    expect(verify.code).toBe(0);
  });

  describe('refusals: exit 2, one line, nothing written', () => {
    let refusalDir: string;
    let env: Record<string, string>;

    beforeAll(async () => {
      refusalDir = tempDir('agentauth-backup-refusals-');
      env = { AGENTAUTH_CONFIG: config, AGENTAUTH_DATA_DIR: join(refusalDir, 'data') };
      // A store to back up: a first start creates it.
      const s = await startServer(env);
      expect(await s.stop()).toBe(0);
    });

    test('an existing file is not replaced without --force, and is replaced with it', async () => {
      const out = join(refusalDir, 'existing.sqlite');
      writeFileSync(out, 'keep me', { mode: 0o600 });
      const refused = await runCli(['backup', '--out', out], env);
      expect(refused.code).toBe(2);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toContain(`agentauth backup: ${out} already exists; pass --force to replace it\n`);
      expect(readFileSync(out, 'utf8')).toBe('keep me');

      const forced = await runCli(['backup', '--out', out, '--force'], env);
      expect(forced.code).toBe(0);
      expect(forced.stdout).toMatch(BACKUP_LINE);
      expect(readFileSync(out).subarray(0, 16).toString('latin1')).toBe('SQLite format 3\0');
      expect(statSync(out).mode & 0o777).toBe(0o600);
    });

    test('the live store itself is never a destination, even with --force', async () => {
      const live = join(refusalDir, 'data', 'agentauth.sqlite');
      const before = readFileSync(live);
      const res = await runCli(['backup', '--out', live, '--force'], env);
      expect(res.code).toBe(2);
      expect(res.stderr).toContain(`agentauth backup: --out ${live} is the live store itself (${live}); write somewhere else\n`);
      expect(readFileSync(live).equals(before)).toBe(true);

      // Other spellings of the same file: through a link to the data directory, a `..` detour, its WAL, a hard link.
      const linkedDir = join(refusalDir, 'data-link');
      symlinkSync(join(refusalDir, 'data'), linkedDir);
      const hardLink = join(refusalDir, 'hard-link.sqlite');
      linkSync(live, hardLink);
      const inode = statSync(live).ino;
      for (const spelling of [
        join(linkedDir, 'agentauth.sqlite'),
        `${refusalDir}/data-link/../data/agentauth.sqlite`,
        join(linkedDir, 'agentauth.sqlite-wal'),
        hardLink,
      ]) {
        const other = await runCli(['backup', '--out', spelling, '--force'], env);
        expect({ spelling, code: other.code }).toEqual({ spelling, code: 2 });
        expect(other.stderr).toMatch(new RegExp(`^agentauth backup: --out ${spelling.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is the live store itself \\(${live.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(-wal)?\\); write somewhere else$`, 'm'));
        expect(statSync(live).ino).toBe(inode);
      }
      rmSync(hardLink);
      rmSync(linkedDir);
    });

    // `audit export --out` and `keys export --out` had no such check: they replaced the store or the KEK, exit 0, and
    // the store (or every key in it) was gone.
    test('no command writes its output over the store, the KEK or the configuration, by any spelling', async () => {
      const data = join(refusalDir, 'data');
      const live = join(data, 'agentauth.sqlite');
      const kek = join(data, 'kek');
      expect(existsSync(kek)).toBe(true);
      const link = join(refusalDir, 'archive.json');
      symlinkSync(live, link);
      const before = { live: readFileSync(live), kek: readFileSync(kek), config: readFileSync(config) };
      for (const [args, target, what] of [
        [['audit', 'export', '--out', live], live, 'the live store itself'],
        [['audit', 'export', '--out', kek], kek, 'the key-encryption key (KEK)'],
        [['audit', 'export', '--out', config], config, 'the configuration file (AGENTAUTH_CONFIG)'],
        [['keys', 'export', '--public', '--issuer', 'https://as.example.com', '--out', link], live, 'the live store itself'],
        [['keys', 'export', '--public', '--issuer', 'https://as.example.com', '--out', kek], kek, 'the key-encryption key (KEK)'],
        [['backup', '--out', kek, '--force'], kek, 'the key-encryption key (KEK)'],
      ] as const) {
        const res = await runCli([...args], env);
        const out = args[args.indexOf('--out') + 1];
        expect({ args, code: res.code, stdout: res.stdout }).toEqual({ args, code: 2, stdout: '' });
        expect(res.stderr).toContain(`--out ${out} is ${what} (${target}); write somewhere else\n`);
      }
      expect(readFileSync(live).equals(before.live)).toBe(true);
      expect(readFileSync(kek).equals(before.kek)).toBe(true);
      expect(readFileSync(config).equals(before.config)).toBe(true);
      rmSync(link);
      // During a KEK rotation, the previous KEK's file is refused too (it could be the only key to what is sealed under
      // it; it used to be overwritten, exit 0).
      const fallback = join(refusalDir, 'old.kek');
      writeFileSync(fallback, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
      const fallbackBefore = readFileSync(fallback);
      for (const args of [['audit', 'export', '--out', fallback], ['backup', '--out', fallback, '--force']]) {
        const res = await runCli(args, { ...env, AGENTAUTH_KEK_FALLBACK_FILE: fallback });
        expect({ args, code: res.code, stdout: res.stdout }).toEqual({ args, code: 2, stdout: '' });
        expect(res.stderr).toContain(`--out ${fallback} is the previous key-encryption key (AGENTAUTH_KEK_FALLBACK_FILE) (${fallback}); write somewhere else\n`);
      }
      expect(readFileSync(fallback).equals(fallbackBefore)).toBe(true);
      rmSync(fallback);
      // Elsewhere they still write.
      const elsewhere = await runCli(['audit', 'export', '--out', join(refusalDir, 'audit.jsonl')], env);
      expect(elsewhere.code).toBe(0);
    });

    test('with MONGODB_URI set it points to mongodump', async () => {
      const out = join(refusalDir, 'mongo.sqlite');
      const res = await runCli(['backup', '--out', out], { ...env, MONGODB_URI: 'mongodb://127.0.0.1:1/agentauth' });
      expect(res.code).toBe(2);
      expect(res.stdout).toBe('');
      expect(res.stderr).toMatch(/^agentauth backup: MONGODB_URI is set: .*use mongodump; see docs\/operations\.md.*\n$/);
      expect(res.stderr.split('\n')).toHaveLength(2);
      expect(existsSync(out)).toBe(false);
    });

    test('with AGENTAUTH_STORE=memory there is nothing durable to back up', async () => {
      const out = join(refusalDir, 'memory.sqlite');
      const res = await runCli(['backup', '--out', out], { ...env, AGENTAUTH_STORE: 'memory' });
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/^agentauth backup: AGENTAUTH_STORE=memory keeps nothing durable to back up; [^\n]*\n$/);
      expect(existsSync(out)).toBe(false);
    });

    test('a data directory without a store is refused, and not created', async () => {
      const empty = join(refusalDir, 'nothing-here');
      const out = join(refusalDir, 'empty.sqlite');
      const res = await runCli(['backup', '--out', out], { ...env, AGENTAUTH_DATA_DIR: empty });
      expect(res.code).toBe(2);
      expect(res.stderr).toContain(`agentauth backup: no SQLite store at ${join(empty, 'agentauth.sqlite')} (nothing to back up; is AGENTAUTH_DATA_DIR the server's data directory?)\n`);
      expect(existsSync(empty)).toBe(false);
      expect(existsSync(out)).toBe(false);
    });

    test('--out is required', async () => {
      const res = await runCli(['backup'], env);
      expect(res.code).toBe(2);
      expect(res.stderr).toContain('agentauth backup: --out FILE is required (the backup file to write)\n');
    });
  });
});
