import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { MongoClient } from 'mongodb';

import { newKek, runCli, ROOT, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

/**
 * The command line cannot misfire (docs/operations.md, "The command line"): commands that change keys refuse to
 * create a store or KEK without --init, every command says which store, data directory and issuer it used, --json
 * puts one machine-readable answer on stdout and nothing else, and the exit codes are 0 success, 1 a negative
 * answer, 2 a usage or configuration error.
 */
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const ISSUER = 'https://auth.example.com';
const contextLine = (dataDir: string, issuer = ISSUER) => `agentauth: store sqlite ${join(dataDir, 'agentauth.sqlite')}, data directory ${dataDir}, issuer ${issuer}\n`;
const json = (stdout: string) => JSON.parse(stdout) as Record<string, unknown>;

describe('agentauth --version and usage errors', () => {
  test('--version prints the package version and exits 0', async () => {
    const res = await runCli(['--version'], {});
    expect(res).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
  });

  test('help <command> prints that command\'s usage and exits 0, as --help does (docs/operations.md)', async () => {
    const res = await runCli(['help', 'clients'], {});
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('Usage: agentauth clients');
    expect(res.stdout).toBe((await runCli(['clients', '--help'], {})).stdout);
  });

  test('an unknown command or option is a usage error: exit 2; under --json the error is JSON on stdout', async () => {
    expect((await runCli(['frobnicate'], {})).code).toBe(2);
    const res = await runCli(['keys', 'list', '--nope', '--json'], {});
    expect(res.code).toBe(2);
    expect(json(res.stdout)).toMatchObject({ error: 'usage', exit_code: 2 });
    expect(res.stderr).toContain("unknown option '--nope'");
  });

  test('an invalid configuration is exit 2', async () => {
    const res = await runCli(['keys', 'list'], { PORT: 'x' });
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^agentauth: invalid configuration: PORT/);
  });

  test.each([
    ['an option the driver does not know', 'mongodb://127.0.0.1/prod?foo=bar', 'option foo is not supported'],
    ['an option value the driver refuses', 'mongodb://127.0.0.1/prod?tls=maybe', 'tls/ssl must be either "true" or "false"'],
    ['a port out of range', 'mongodb://127.0.0.1:99999/prod', 'Unable to parse 127.0.0.1:99999 with URL'],
  ])('a MONGODB_URI with %s is an invalid configuration: one line, before any store is named or opened', async (_name, uri, reason) => {
    const res = await runCli(['keys', 'list'], { MONGODB_URI: uri });
    expect({ code: res.code, stderr: res.stderr }).toEqual({ code: 2, stderr: `agentauth: invalid configuration: MONGODB_URI: ${reason}\n` });
  });
});

describe('commands that change keys refuse to create a store or KEK without --init', () => {
  test('keys rotate on a data directory that does not exist: exit 2, names the path, creates nothing', async () => {
    const dataDir = join(tempDir(), 'not-here');
    const res = await runCli(['keys', 'rotate'], { AGENTAUTH_DATA_DIR: dataDir, ISSUER });
    expect(res.code).toBe(2);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain(contextLine(dataDir));
    expect(res.stderr).toContain(`keys rotate: there is no agentauth store at ${join(dataDir, 'agentauth.sqlite')}`);
    expect(res.stderr).toContain('pass --init');
    expect(existsSync(dataDir)).toBe(false);
  });

  test('keys rotate on an empty existing directory: exit 2, the directory stays empty (no KEK, no store)', async () => {
    const dataDir = tempDir();
    const res = await runCli(['keys', 'rotate', '--immediately'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(res.code).toBe(2);
    expect(readdirSync(dataDir)).toEqual([]);
  });

  test('with --init it creates the store, a KEK and the first key, signing at once; later rotations need no --init and wait', async () => {
    const dataDir = join(tempDir(), 'data');
    const first = await runCli(['keys', 'rotate', '--init', '--json'], { AGENTAUTH_DATA_DIR: dataDir, ISSUER });
    expect(first.code).toBe(0);
    expect(existsSync(join(dataDir, 'kek'))).toBe(true);
    const created = json(first.stdout);
    // No key signs yet, so there is no JWKS cache to give time to: the first key activates now, and a server started
    // on this store serves at once (it used to refuse with "no active signing key" for keys.publishDelaySeconds).
    expect(created).toMatchObject({ status: 'activated', kid: expect.any(String), context: { store: 'sqlite', data_dir: dataDir, issuer: ISSUER, issuer_source: 'ISSUER' } });
    expect(Date.parse(created.activatesAt as string)).toBeLessThanOrEqual(Date.now());
    // Its audit record says so too.
    const audit = await runCli(['audit', 'tail', '--json'], { AGENTAUTH_DATA_DIR: dataDir, ISSUER });
    const rotated = audit.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; details: Record<string, unknown> }).find((r) => r.type === 'key.rotated');
    expect(rotated?.details).toMatchObject({ kid: created.kid, immediately: true, by: 'cli' });
    const again = await runCli(['keys', 'rotate', '--json'], { AGENTAUTH_DATA_DIR: dataDir, ISSUER });
    expect(again.code).toBe(0);
    // With a key signing, a rotation is published first and activates after keys.publishDelaySeconds (600 s).
    expect(json(again.stdout)).toMatchObject({ status: 'scheduled', replaces: created.kid });
    expect(Date.parse(json(again.stdout).activatesAt as string)).toBeGreaterThan(Date.now() + 590_000);
    // Retiring that next key cancels its rotation: keys list says it never activates, not the time it was scheduled
    // for (later than its retirement); the JSON keeps both times.
    const next = json(again.stdout).kid as string;
    expect((await runCli(['keys', 'retire', next], { AGENTAUTH_DATA_DIR: dataDir, ISSUER })).code).toBe(0);
    const lines = (await runCli(['keys', 'list'], { AGENTAUTH_DATA_DIR: dataDir, ISSUER })).stdout.trim().split('\n');
    expect(lines.find((l) => l.startsWith(next))).toMatch(/ {2}retired +created \S+ {2}activates cancelled {2}retired \S+ {2}published until \S+$/);
    expect(lines.find((l) => l.startsWith(created.kid as string))).toMatch(/ {2}active +created \S+ {2}activates \d{4}-\S+ {2}retired - {2}/);
    const listed = json((await runCli(['keys', 'list', '--json'], { AGENTAUTH_DATA_DIR: dataDir, ISSUER })).stdout).keys as Array<{ kid: string; activates_at: string; retired_at: string }>;
    const cancelled = listed.find((k) => k.kid === next)!;
    expect(Date.parse(cancelled.activates_at)).toBeGreaterThan(Date.parse(cancelled.retired_at));
  });

  test('keys rotate on a MongoDB database where no server has run: exit 2, no key written; --init writes one', async () => {
    const env = { MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('cli_empty'), AGENTAUTH_KEK: newKek() };
    const refused = await runCli(['keys', 'rotate'], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/keys rotate: the store mongodb:\/\/\S+\/t_cli_empty_\w+ holds no signing keys/);
    expect(refused.stderr).toContain('pass --init to create the first key here');
    // A command without --init names the one that has it, not an option it would refuse as unknown.
    for (const args of [['keys', 'export', '--public'], ['verify', 'x.y.z'], ['keys', 'withdraw', 'abc'], ['subjects', 'revoke', 'alice']]) {
      const other = await runCli(args, { ...env, ISSUER });
      expect(other.code).toBe(2);
      expect(other.stderr).toContain('holds no signing keys');
      expect(other.stderr).toContain('run `agentauth keys rotate --init` to create the first key here');
      expect(other.stderr).not.toContain('pass --init');
    }
    const listed = await runCli(['keys', 'list', '--json'], env);
    expect(listed.code).toBe(0);
    expect(json(listed.stdout).keys).toEqual([]);
    // clients (it said "invalid configuration: ... check AGENTAUTH_DATA_DIR or MONGODB_URI") refuses as the others do.
    const clients = await runCli(['clients', 'list'], { ...env, ISSUER });
    expect(clients.code).toBe(2);
    expect(clients.stderr).toContain('holds no signing keys');
    expect(clients.stderr).toContain('MONGODB_DB');
    // An audit verify there finds nothing to verify: still exit 0, and told so (it said only "audit log OK: 0 records").
    const audit = await runCli(['audit', 'verify'], { ...env, ISSUER });
    expect([audit.code, audit.stdout.trim()]).toEqual([0, expect.stringMatching(/^audit log OK: 0 records/)]);
    expect(audit.stderr).toMatch(/agentauth: the audit log in mongodb:\/\/\S+ holds no records: nothing was verified; is this the server's store/);
    // None of these created the database: each checked, reading only, before any write (its indexes included); a
    // mistyped MONGODB_DB used to be created with every collection and index.
    const mongo = new MongoClient(mongoUri());
    try {
      expect(await mongo.db(env.MONGODB_DB).listCollections().toArray()).toEqual([]);
    } finally {
      await mongo.close();
    }
    expect((await runCli(['keys', 'rotate', '--init'], env)).code).toBe(0);
    expect((json((await runCli(['keys', 'list', '--json'], env)).stdout).keys as unknown[]).length).toBe(1);
    // clients iat create boots a server to mint the token: what that server warns of (FerretDB v1 here) comes as the
    // command's own `agentauth: ...` line, never as a JSON log line among them.
    const iat = await runCli(['clients', 'iat', 'create'], { ...env, ISSUER, AGENTAUTH_CONFIG: writeConfig(tempDir(), { registration: { mode: 'token' } }) });
    expect(iat.code).toBe(0);
    expect(iat.stderr).not.toContain('"level"');
    expect(iat.stderr).toContain('agentauth: storage: the MongoDB-wire server is FerretDB v1');
    for (const line of iat.stderr.trim().split('\n')) expect(line).toMatch(/^(agentauth: |initial access token for tier )/);
  });

  test('keys retire: an empty store is exit 2, an unknown kid in a real store is a negative answer (exit 1)', async () => {
    const empty = tempDir();
    expect((await runCli(['keys', 'retire', 'abc'], { AGENTAUTH_DATA_DIR: empty })).code).toBe(2);
    const dataDir = join(tempDir(), 'data');
    expect((await runCli(['keys', 'rotate', '--init'], { AGENTAUTH_DATA_DIR: dataDir })).code).toBe(0);
    const res = await runCli(['keys', 'retire', 'no-such-kid', '--json'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(res.code).toBe(1);
    expect(json(res.stdout)).toMatchObject({ error: 'not_found', kid: 'no-such-kid' });
    // A kid that begins with '-' (base64url thumbprints can) is the argument, not an option.
    const dash = await runCli(['keys', 'retire', '-no-such-kid', '--json'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(dash.code).toBe(1);
    expect(json(dash.stdout)).toMatchObject({ error: 'not_found', kid: '-no-such-kid' });
  });
});

describe('every command says where it looked; --json answers are JSON only', () => {
  const dataDir = join(tempDir(), 'data');
  const env = { AGENTAUTH_DATA_DIR: dataDir, ISSUER };
  let kid: string;

  beforeAll(async () => {
    const res = await runCli(['keys', 'rotate', '--init', '--immediately', '--json'], env);
    expect(res.code).toBe(0);
    kid = json(res.stdout).kid as string;
  });

  test('audit export and keys export --out refuse a file that exists (exit 2, the file untouched) unless --force', async () => {
    for (const args of [['audit', 'export'], ['keys', 'export', '--public']]) {
      const out = join(tempDir(), 'kept.json');
      writeFileSync(out, 'an export kept for the record\n');
      const refused = await runCli([...args, '--out', out], env);
      expect([refused.code, refused.stderr.trim().split('\n').at(-1)]).toEqual([2, `agentauth: --out ${out} already exists; pass --force to replace it`]);
      expect(readFileSync(out, 'utf8')).toBe('an export kept for the record\n');
      const forced = await runCli([...args, '--out', out, '--force'], env);
      expect(forced.code).toBe(0);
      expect(readFileSync(out, 'utf8')).not.toContain('an export kept for the record');
      expect(readFileSync(out, 'utf8').length).toBeGreaterThan(10);
    }
  });

  test('clients iat create without AGENTAUTH_CONFIG: refused naming the missing file; with a file in open mode, naming the file', async () => {
    const missing = await runCli(['clients', 'iat', 'create'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('agentauth: invalid configuration: registration.mode: initial access tokens are only used in "token" mode (it is "open", the default: AGENTAUTH_CONFIG is not set, so no configuration file was read');
    const file = writeConfig(tempDir(), { registration: { mode: 'open' } });
    const open = await runCli(['clients', 'iat', 'create'], { ...env, AGENTAUTH_CONFIG: file });
    expect(open.code).toBe(2);
    expect(open.stderr).toContain(`(it is "open" in ${file})`);
  });

  test('clients iat create without ISSUER: the context line says so, and no log line of the server it boots is printed', async () => {
    const res = await runCli(['clients', 'iat', 'create'], { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_CONFIG: writeConfig(tempDir(), { registration: { mode: 'token' } }) });
    expect(res.code).toBe(0);
    const lines = res.stderr.trim().split('\n');
    expect(lines).toEqual([expect.stringContaining('(default: ISSUER is not set)'), expect.stringMatching(/^initial access token for tier \S+, expires in \d+ s;/)]);
    expect(res.stderr).not.toContain('"level"');
  });

  test.each([
    [['keys', 'list', '--json']],
    [['keys', 'rotate', '--json']],
    [['audit', 'verify', '--json']],
    [['backup', '--out', '%OUT%', '--json']],
    [['clients', 'iat', 'create', '--json']],
  ])('%j: the context line on stderr, one JSON document with the context on stdout', async (args) => {
    const res = await runCli(args.map((a) => (a === '%OUT%' ? join(tempDir(), 'backup.sqlite') : a)), {
      ...env,
      AGENTAUTH_CONFIG: writeConfig(tempDir(), { registration: { mode: 'token' } }),
    });
    expect(res.code).toBe(0);
    expect(res.stderr).toContain(contextLine(dataDir));
    const answer = json(res.stdout);
    if (args[0] !== 'audit') expect(answer.context).toEqual({ store: 'sqlite', location: join(dataDir, 'agentauth.sqlite'), data_dir: dataDir, issuer: ISSUER, issuer_source: 'ISSUER' });
    else expect(answer).toMatchObject({ ok: true, source: { location: join(dataDir, 'agentauth.sqlite'), issuer: ISSUER } });
  });

  test('audit tail --json and audit export print JSON lines only on stdout, and name the store on stderr', async () => {
    for (const args of [['audit', 'tail', '--json'], ['audit', 'export']]) {
      const res = await runCli(args, env);
      expect(res.code).toBe(0);
      expect(res.stderr).toContain(contextLine(dataDir));
      for (const line of res.stdout.trim().split('\n')) expect(JSON.parse(line)).toMatchObject({ seq: expect.any(Number), hash: expect.any(String) });
    }
  });

  test('audit tail on an empty log: exit 0, nothing on stdout, and stderr says where it looked', async () => {
    const db = uniqueDbName('cli_tail');
    const res = await runCli(['audit', 'tail'], { MONGODB_URI: mongoUri(), MONGODB_DB: db, ISSUER });
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(new RegExp(`the audit log in mongodb://\\S+/${db} is empty`));
  });

  test('audit tail on a data directory that does not exist: exit 2, and nothing is created', async () => {
    const missing = join(tempDir(), 'missing');
    const res = await runCli(['audit', 'tail'], { AGENTAUTH_DATA_DIR: missing });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(`there is no agentauth store at ${join(missing, 'agentauth.sqlite')}`);
    expect(existsSync(missing)).toBe(false);
  });

  test('keys export writes the configured issuer, or --issuer; with neither it refuses (exit 2) rather than guess', async () => {
    const archive = await runCli(['keys', 'export', '--public'], env);
    expect(archive.code).toBe(0);
    expect(json(archive.stdout)).toMatchObject({ issuer: ISSUER, keys: expect.arrayContaining([expect.objectContaining({ kid })]) });
    const other = await runCli(['keys', 'export', '--public', '--issuer', 'https://other.example.com/'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(json(other.stdout).issuer).toBe('https://other.example.com');
    const refused = await runCli(['keys', 'export', '--public'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('keys export: ISSUER is not set');
    expect(refused.stdout).toBe('');
  });

  test('keys export --issuer follows the ISSUER rule: a path, query or fragment is a usage error (exit 2), before any store is opened', async () => {
    for (const [issuer, why] of [
      ['https://x.example.com/path', 'must have no path'],
      ['https://x.example.com?tenant=a', 'must be an http(s) URL with no query or fragment'],
      ['https://x.example.com#a', 'must be an http(s) URL with no query or fragment'],
      ['x.example.com', 'must be an http(s) URL with no query or fragment'],
    ]) {
      const out = join(tempDir(), 'keys.json');
      const res = await runCli(['keys', 'export', '--public', '--issuer', issuer!, '--out', out], { AGENTAUTH_DATA_DIR: dataDir });
      expect(res.code).toBe(2);
      expect(res.stdout).toBe('');
      // One line, and no context line: the store was not opened.
      expect(res.stderr.startsWith(`agentauth: keys export --issuer ${issuer}: ${why}`)).toBe(true);
      expect(res.stderr.split('\n')).toEqual([expect.any(String), '']);
      expect(existsSync(out)).toBe(false);
    }
    const asJson = await runCli(['keys', 'export', '--public', '--issuer', 'https://x.example.com/path', '--json'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(asJson.code).toBe(2);
    expect(json(asJson.stdout)).toMatchObject({ error: 'usage', exit_code: 2, error_description: expect.stringContaining('must have no path') });
    // A valid issuer (a trailing "/" is no path) is still written, without the "/".
    const out = join(tempDir(), 'keys.json');
    const valid = await runCli(['keys', 'export', '--public', '--issuer', 'https://x.example.com/', '--out', out, '--json'], { AGENTAUTH_DATA_DIR: dataDir });
    expect(valid.code).toBe(0);
    expect(json(valid.stdout)).toMatchObject({ out, issuer: 'https://x.example.com', keys: expect.any(Number) });
    expect(json(readFileSync(out, 'utf8'))).toMatchObject({ issuer: 'https://x.example.com', keys: expect.arrayContaining([expect.objectContaining({ kid })]) });
  });

  test('verify --archive on a file with no issuer (saved from GET /keys) says so, not "issuer null"; --json holds issuer: null', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const ownKid = await calculateJwkThumbprint(jwk);
    const token = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'ES256', kid: ownKid }).setIssuer(ISSUER).setExpirationTime('5m').sign(privateKey);
    // The shape GET /keys serves: {"keys": [...]}, no issuer.
    const file = join(tempDir(), 'keys.json');
    writeFileSync(file, JSON.stringify({ keys: [{ kid: ownKid, alg: 'ES256', state: 'active', created_at: new Date().toISOString(), jwk: { ...jwk, kid: ownKid } }] }));
    const text = await runCli(['verify', token, '--archive', file], {});
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('signature valid');
    expect(text.stdout).toContain(`checked against: archive ${file}, issuer not recorded in the archive, keys ${ownKid}\n`);
    expect(text.stdout).not.toContain('issuer null');
    expect(text.stderr).toContain(`against the archive ${file} (issuer not recorded, 1 keys); no store`);
    const asJson = await runCli(['verify', token, '--archive', file, '--json'], {});
    expect(asJson.code).toBe(0);
    const report = json(asJson.stdout);
    expect(report).toMatchObject({ signature: 'valid', checked_against: { archive: file, issuer: null, kids: [ownKid] } });
    expect(report.hint).toBeUndefined();
    // An archive written by keys export names its issuer.
    writeFileSync(file, JSON.stringify({ issuer: ISSUER, keys: json(readFileSync(file, 'utf8')).keys }));
    expect((await runCli(['verify', token, '--archive', file], {})).stdout).toContain(`checked against: archive ${file}, issuer ${ISSUER}, keys ${ownKid}\n`);
  });

  test('verify --archive on a file that is JSON but not an archive (null, a list, a null key) is exit 2 saying what it must hold, not a TypeError', async () => {
    const file = join(tempDir(), 'keys.json');
    for (const content of ['null', '[]', '{"keys":[null]}', '{"keys":[1]}', '{"keys":{}}']) {
      writeFileSync(file, content);
      const res = await runCli(['verify', 'a.b.c', '--archive', file], {});
      expect({ content, code: res.code }).toEqual({ content, code: 2 });
      expect(res.stderr).toContain(`--archive: ${file} must hold {"keys": [...]}, each key an object, as written by \`agentauth keys export --public\``);
      expect(res.stderr).not.toMatch(/TypeError|Cannot read properties/);
    }
  });

  test('verify --archive on a file that is not JSON (a KEK file, by mistake) says where it stops being JSON, never what it holds', async () => {
    const file = join(tempDir(), 'kek');
    const kek = 'Tf3xQ9pLmZ2vB7nK4wR8yE1uI6oA5sD0gH3jC9kV2b8=';
    writeFileSync(file, `${kek}\n`);
    for (const extra of [[], ['--json']]) {
      const res = await runCli(['verify', 'a.b.c', '--archive', file, ...extra], {});
      expect(res.code).toBe(2);
      expect(res.stderr).toContain(`--archive: ${file} is not valid JSON at line 1, column 1 (`);
      // JSON.parse's message quoted the file's first ten characters.
      for (const piece of [kek.slice(0, 6), kek.slice(4, 10), kek.slice(-8)]) expect({ piece, out: `${res.stdout}${res.stderr}`.includes(piece) }).toEqual({ piece, out: false });
    }
  });

  test('verify says which store, issuer and keys it checked; a token of another issuer is invalid (exit 1) with a hint', async () => {
    const { privateKey } = await generateKeyPair('ES256');
    const foreign = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'ES256', kid }).setIssuer('https://elsewhere.example.com').setExpirationTime('5m').sign(privateKey);
    const res = await runCli(['verify', foreign, '--json'], env);
    expect(res.code).toBe(1);
    const report = json(res.stdout);
    expect(report).toMatchObject({
      signature: 'invalid',
      checked_against: { store: 'sqlite', location: join(dataDir, 'agentauth.sqlite'), issuer: ISSUER, kids: expect.arrayContaining([kid]) },
      hint: expect.stringContaining("the token's issuer is https://elsewhere.example.com, but the keys checked are those of https://auth.example.com"),
    });
    const text = await runCli(['verify', foreign], env);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain(`checked against: sqlite ${join(dataDir, 'agentauth.sqlite')}, issuer ${ISSUER}, keys `);
    expect(text.stdout).toContain(kid);
  });

  test('verify against a data directory with no store: exit 2 naming it, not "invalid"', async () => {
    const empty = tempDir();
    mkdirSync(join(empty, 'sub'));
    const res = await runCli(['verify', 'a.b.c'], { AGENTAUTH_DATA_DIR: join(empty, 'sub') });
    expect(res.code).toBe(2);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain(`there is no agentauth store at ${join(empty, 'sub', 'agentauth.sqlite')}`);
  });
});
