import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { decodeProtectedHeader } from 'jose';

import type { AuditRecord } from '../../adapters/types.js';
import { REDIRECT, RS_CLIENT, baseConfig, clientCredentialsToken, introspect, register } from '../support/agent-server.js';
import { GUIDE_PATH, guideShellBlock, replaceExactly, runShellStatus } from '../support/guide.js';
import type { ShellResult } from '../support/guide.js';
import { CLI, newKek, ROOT, runCli, startOnLoopback, tempDir } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * docs/operations.md's operator commands, run as written with `bash -c` against a live agentauth on the embedded
 * SQLite store: client administration (`agentauth clients ...`), `agentauth backup` (and its checkout form), key
 * rotation and retirement (`agentauth keys rotate`, `--immediately`, `keys retire <kid>`) and the audit commands
 * (`audit tail`, `export`, `verify`). Each line runs in a bash where `agentauth` is this checkout's CLI, as the page
 * says (`node dist/server/cli.js <command>`, on the project's Node first on PATH), with the server's own environment
 * (AGENTAUTH_DATA_DIR, AGENTAUTH_CONFIG, AGENTAUTH_KEK, ISSUER). What it prints, its exit code and its effect on the
 * running server are checked against what the page says.
 *
 * The only changes to the lines: the placeholders a reader fills in (`<client_id>`, `<id|token>`, `<kid>`) become
 * real ids, `/backups/` becomes a temporary directory, `[--force]` is run both without and with `--force`, and the
 * audit export's relative file name is written in a temporary working directory. The server is configured with
 * `keys.publishDelaySeconds` 8 and `keys.refreshIntervalSeconds` 1 (configuration.md's keys settings), so that a
 * routine rotation activates within seconds instead of the default 10 minutes. Not fewer: the runbook runs `keys
 * rotate`, `keys list` and `keys rotate` again before the new key activates, each a CLI process, and with 2 s a loaded
 * CI machine took longer than that (the second rotate then found the first key active and scheduled another).
 */

const DOC = 'operations.md';
/** `agentauth` as docs/operations.md defines it for a checkout: `node dist/server/cli.js <command>`. */
const SHIM = `agentauth() { node '${CLI}' "$@"; }`;
const KEYS = { publishDelaySeconds: 8, refreshIntervalSeconds: 1 };

const BLOCKS = {
  clients: guideShellBlock(DOC, "Run it with the server's environment: the same store settings, the same KEK, the same `AGENTAUTH_CONFIG`."),
  backup: guideShellBlock(DOC, '\n### Backup and restore\n'),
  routine: guideShellBlock(DOC, '\n### Routine rotation\n'),
  emergency: guideShellBlock(DOC, '\n### Emergency rotation\n'),
  retire: guideShellBlock(DOC, '\n### Retiring a key\n'),
  withdraw: guideShellBlock(DOC, '\n### Withdrawing a stolen key\n'),
  audit: guideShellBlock(DOC, '\n### Reading, exporting and verifying\n'),
};
/** Every command line of the blocks (comment lines aside); each test marks the lines it ran. */
const ALL_LINES = Object.values(BLOCKS).flatMap((b) => b.split('\n').filter((l) => l.trim() !== '' && !l.trim().startsWith('#')));
const ran = new Set<string>();
const PAGE = readFileSync(join(ROOT, 'docs', DOC), 'utf8');

/** A line's command: without its trailing `# comment`, trimmed. */
const command = (line: string) => line.replace(/\s+#.*$/, '').trim();

/** The one line of `block` whose command is exactly `cmd` (its comment aside); throws unless exactly one is. */
function lineOf(block: string, cmd: string): string {
  const lines = block.split('\n').filter((l) => command(l) === cmd);
  if (lines.length !== 1) throw new Error(`docs/${DOC}: expected one line ${JSON.stringify(cmd)}, found ${lines.length}:\n${block}`);
  return lines[0]!;
}

let server: RunningServer;
let url: string;
let dir: string;
let env: Record<string, string>;

/** Runs `line` of the page (after `replacements`) in bash with the `agentauth` shim and the server's environment. */
async function sh(line: string, replacements: Array<[string, string]> = [], opts: { cwd?: string; env?: Record<string, string>; shim?: boolean } = {}): Promise<ShellResult> {
  ran.add(line);
  const script = replacements.reduce((text, [from, to]) => replaceExactly(text, from, to, `docs/${DOC}`), line);
  return runShellStatus(opts.shim === false ? script : `${SHIM}\n${script}`, { PATH: GUIDE_PATH, HOME: process.env.HOME ?? '/', ...(opts.env ?? env) }, opts.cwd);
}

/** Expects exit 0, showing what the command wrote when it did not. */
function ok(r: ShellResult): ShellResult {
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: expect.any(String) as unknown });
  return r;
}

type Json = Record<string, unknown>;
const json = (r: ShellResult): unknown => JSON.parse(r.stdout);

interface Client {
  id: string;
  secret: string;
}

async function newIat(): Promise<string> {
  const r = await runCli(['clients', 'iat', 'create'], env);
  expect(r.code).toBe(0);
  return r.stdout.trim();
}

async function registerWith(iat: string, metadata: Json = {}): Promise<{ status: number; body: Json }> {
  return register(url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read', ...metadata }, { headers: { authorization: `Bearer ${iat}` } });
}

async function newClient(name: string): Promise<Client> {
  const r = await registerWith(await newIat(), { client_name: name });
  expect(r.status).toBe(201);
  return { id: String(r.body.client_id), secret: String(r.body.client_secret) };
}

const token = (c: Client) => clientCredentialsToken(url, c.id, c.secret);

interface KeyLine {
  kid: string;
  alg: string;
  state: string;
  created: string;
  activates: string;
  retired: string;
  publishedUntil: string;
  withdrawn?: string;
}

/** A line of `keys list` as the page shows it ("Watching the keys"). */
const KEY_LINE = /^(\S+) {2}(\S+) {2}(\S+) *\s{2}created (\S+) {2}activates (\S+) {2}retired (\S+) {2}published until (\S+)(?: {2}withdrawn (\S+))?$/;
/** The lines the page shows for `keys list`, `backup` and `keys rotate`, indented or wrapped as in the page. */
const SHOWN = {
  keyLines: PAGE.split('\n').filter((l) => /^ {2}\S{43} {2}ES256 {2}/.test(l)).map((l) => l.slice(2)),
  backupLine: PAGE.split('\n').find((l) => l.startsWith('  backup written: '))?.slice(2),
};

/**
 * `agentauth keys list`, as "Watching the keys" describes its lines: `kid`, algorithm, state, and its times, one line
 * per key, oldest first.
 */
async function keysList(): Promise<KeyLine[]> {
  const r = ok(await runShellStatus(`${SHIM}\nagentauth keys list`, { PATH: GUIDE_PATH, ...env }));
  return r.stdout
    .trimEnd()
    .split('\n')
    .map((l) => {
      const m = KEY_LINE.exec(l);
      if (!m) throw new Error(`keys list printed a line not in the documented form: ${JSON.stringify(l)}`);
      return { kid: m[1]!, alg: m[2]!, state: m[3]!, created: m[4]!, activates: m[5]!, retired: m[6]!, publishedUntil: m[7]!, ...(m[8] ? { withdrawn: m[8] } : {}) };
    });
}

const states = (keys: KeyLine[]) => Object.fromEntries(keys.map((k) => [k.kid, k.state]));

/** Polls until the server signs client_credentials tokens with `kid` (it follows the store within refreshIntervalSeconds). */
async function signsWith(client: Client, kid: string, withinMs: number): Promise<string[]> {
  const seen: string[] = [];
  const deadline = Date.now() + withinMs;
  for (;;) {
    const t = await token(client);
    expect(t.status).toBe(200);
    const got = decodeProtectedHeader(String(t.body.access_token)).kid!;
    seen.push(got);
    if (got === kid || Date.now() > deadline) return seen;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function jwksKids(): Promise<string[]> {
  const res = await fetch(`${url}/jwks`);
  return ((await res.json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
}

/** Every stored audit record, through `agentauth audit export` to standard output. */
async function auditRecords(): Promise<AuditRecord[]> {
  const r = await runCli(['audit', 'export'], env);
  expect(r.code).toBe(0);
  return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AuditRecord);
}

const jsonLines = (text: string) => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AuditRecord);

/** The heads as the audit commands print them: `heads <chain> seq S hash H, ...`, chains in the order of `records`. */
function headsOf(records: AuditRecord[]): string {
  const last = new Map<string, AuditRecord>();
  for (const r of records) last.set(r.chain ?? '', r);
  return `heads ${[...last.values()].map((r) => `${r.chain ?? '(default)'} seq ${r.seq} hash ${r.hash}`).join(', ')}`;
}

beforeAll(async () => {
  ({ server, url, env, dir } = await startOnLoopback(baseConfig({ registration: { mode: 'token' }, keys: KEYS }), 'agentauth-operations-'));
  // The page's definition of `agentauth` in a checkout, which the shim follows.
  expect(PAGE).toContain('`agentauth <command>` (from a checkout: `node dist/server/cli.js <command>`)');
});

afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('Client administration: the CLI block', () => {
  const line = (start: string) => lineOf(BLOCKS.clients, start);
  let client: Client;
  let beforeDisable: string;
  let afterEnable: string;
  let lastDisable: number;

  test('`agentauth clients list`: a JSON array of every client (configuration file and registered), with no secrets; stderr names the store', async () => {
    client = await newClient('operations guide');
    const r = ok(await sh(line('agentauth clients list')));
    expect(r.stderr).toContain(`agentauth: using the SQLite store in ${env.AGENTAUTH_DATA_DIR} (issuer ${url})`);
    const list = json(r) as Json[];
    expect(Array.isArray(list)).toBe(true);
    expect(list).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ client_id: RS_CLIENT.id, source: 'configuration' }),
        expect.objectContaining({ client_id: client.id, source: 'registered', disabled: false, has_secret: true }),
      ]),
    );
    // A client view: {"client_id", "source", "disabled", "disabled_at"?, "has_secret", "metadata"}, never a secret.
    for (const view of list) {
      expect(['client_id', 'source', 'disabled', 'disabled_at', 'has_secret', 'metadata']).toEqual(expect.arrayContaining(Object.keys(view)));
      expect(view.metadata).not.toHaveProperty('client_secret');
      expect(view.metadata).not.toHaveProperty('registration_access_token');
    }
    for (const secret of [client.secret, RS_CLIENT.secret, 'hmac-sha256']) expect(r.stdout).not.toContain(secret);
  });

  test('`agentauth clients show <client_id>`: one client\'s metadata and state; an unknown id exits 1, a malformed one 2', async () => {
    const r = ok(await sh(line('agentauth clients show <client_id>'), [['<client_id>', client.id]]));
    expect(json(r)).toEqual({
      client_id: client.id,
      source: 'registered',
      disabled: false,
      has_secret: true,
      metadata: expect.objectContaining({ client_name: 'operations guide', grant_types: ['client_credentials'] }) as unknown,
    });
    expect(r.stdout).not.toContain(client.secret);

    const unknown = await sh(line('agentauth clients show <client_id>'), [['<client_id>', 'no-such-client']]);
    expect([unknown.code, unknown.stdout, unknown.stderr.trim().split('\n').at(-1)]).toEqual([1, '', 'agentauth: no client no-such-client']);
    // "a client id that is not 1-2048 visible ASCII characters": exit 2.
    const malformed = await sh(line('agentauth clients show <client_id>'), [['<client_id>', 'x'.repeat(2049)]]);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toMatch(/client id must be/);
  });

  test('without the KEK, or with a wrong one, a clients command exits 2 and prints nothing on stdout', async () => {
    const { AGENTAUTH_KEK: _kek, ...withoutKek } = env;
    const without = await sh(line('agentauth clients list'), [], { env: withoutKek });
    expect([without.code, without.stdout]).toEqual([2, '']);
    expect(without.stderr).toMatch(/no key-encryption key was found/);
    const wrong = await sh(line('agentauth clients list'), [], { env: { ...env, AGENTAUTH_KEK: newKek() } });
    expect([wrong.code, wrong.stdout]).toEqual([2, '']);
  });

  test('`agentauth clients disable <client_id>`: the client is refused tokens at once (401 invalid_client, "disabled by the operator"), its JWT introspects inactive', async () => {
    const before = await token(client);
    expect(before.status).toBe(200);
    beforeDisable = String(before.body.access_token);
    expect((await introspect(url, beforeDisable)).active).toBe(true);

    const r = ok(await sh(line('agentauth clients disable <client_id>'), [['<client_id>', client.id]]));
    expect(json(r)).toMatchObject({ client_id: client.id, disabled: true });
    expect(r.stderr).toContain(`client ${client.id} disabled`);
    const refused = await token(client);
    expect(refused).toEqual({ status: 401, body: { error: 'invalid_client', error_description: `client ${client.id} is disabled by the operator of this authorization server` } });
    expect(await introspect(url, beforeDisable)).toEqual({ active: false });
    // "Repeating disable or enable is harmless."
    expect(json(ok(await sh(line('agentauth clients disable <client_id>'), [['<client_id>', client.id]])))).toMatchObject({ disabled: true });
    lastDisable = Date.now();
  });

  test('`agentauth clients enable <client_id>`: the client gets tokens again with its old secret; the token from before the disable stays inactive', async () => {
    const r = ok(await sh(line('agentauth clients enable <client_id>'), [['<client_id>', client.id]]));
    expect(json(r)).toMatchObject({ client_id: client.id, disabled: false });
    // "tokens are dated in whole seconds, so one issued in the very second of the disable counts as before it": the
    // new token is asked for once that second is over.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, (Math.floor(lastDisable / 1000) + 1) * 1000 - Date.now() + 50)));
    const again = await token(client);
    expect(again.status).toBe(200);
    afterEnable = String(again.body.access_token);
    expect((await introspect(url, afterEnable)).active).toBe(true);
    expect(await introspect(url, beforeDisable)).toEqual({ active: false });
  });

  test('`agentauth clients rotate-secret <client_id>`: prints the new client_secret (86 base64url characters) once; the old secret fails, the new one works, issued tokens stay valid', async () => {
    const r = ok(await sh(line('agentauth clients rotate-secret <client_id>'), [['<client_id>', client.id]]));
    const answer = json(r) as Json;
    expect(answer).toMatchObject({ client_id: client.id, source: 'registered', has_secret: true });
    const secret = String(answer.client_secret);
    expect(secret).toMatch(/^[A-Za-z0-9_-]{86}$/);
    const old = await token(client);
    expect([old.status, old.body.error]).toEqual([401, 'invalid_client']);
    const rotated = { id: client.id, secret };
    expect((await token(rotated)).status).toBe(200);
    expect((await introspect(url, afterEnable)).active).toBe(true);
    // Once: show and list never print it.
    const shown = ok(await sh(line('agentauth clients show <client_id>'), [['<client_id>', client.id]]));
    expect(shown.stdout).not.toContain(secret);
    expect(ok(await sh(line('agentauth clients list'))).stdout).not.toContain(secret);
    client = rotated;
  });

  test('rotate-secret is refused (exit 1) for a client of the configuration file and for a client with no secret', async () => {
    const configured = await sh(line('agentauth clients rotate-secret <client_id>'), [['<client_id>', RS_CLIENT.id]]);
    expect([configured.code, configured.stdout]).toEqual([1, '']);
    expect(configured.stderr).toMatch(/declared in the configuration file/);
    const pub = await registerWith(await newIat(), { grant_types: ['authorization_code'], response_types: ['code'], redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' });
    expect(pub.status).toBe(201);
    const none = await sh(line('agentauth clients rotate-secret <client_id>'), [['<client_id>', String(pub.body.client_id)]]);
    expect([none.code, none.stdout]).toEqual([1, '']);
  });

  test('`agentauth clients delete <client_id>`: the client can no longer get a token and is gone; deleting it again, or a client of the configuration file, exits 1', async () => {
    const r = ok(await sh(line('agentauth clients delete <client_id>'), [['<client_id>', client.id]]));
    // "results are JSON on standard output, with or without `--json` (`delete` prints none there)"
    expect(PAGE).toContain('(`delete` prints none there)');
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`agentauth: client ${client.id} deleted`);
    const refused = await token(client);
    expect([refused.status, refused.body.error]).toEqual([401, 'invalid_client']);
    expect(await introspect(url, afterEnable)).toEqual({ active: false });
    expect((await sh(line('agentauth clients show <client_id>'), [['<client_id>', client.id]])).code).toBe(1);
    expect((await sh(line('agentauth clients delete <client_id>'), [['<client_id>', client.id]])).code).toBe(1);
    const configured = await sh(line('agentauth clients delete <client_id>'), [['<client_id>', RS_CLIENT.id]]);
    expect(configured.code).toBe(1);
    expect(configured.stderr).toMatch(/declared in the configuration file/);
    expect((await clientCredentialsToken(url, RS_CLIENT.id, RS_CLIENT.secret)).status).toBe(200);
  });

  test('`agentauth clients iat list`: initial access tokens by fingerprint (first 22 characters of the base64url SHA-256), never the tokens', async () => {
    const tokens = [await newIat(), await newIat()];
    const r = ok(await sh(line('agentauth clients iat list')));
    const entries = json(r) as Json[];
    const fingerprints = tokens.map((t) => createHash('sha256').update(t).digest('base64url').slice(0, 22));
    for (const fp of fingerprints) {
      expect(entries).toContainEqual({ id: fp, tier: 'standard', issued_at: expect.anything() as unknown, expires_at: expect.anything() as unknown, uses: null, grant_types: null, scope: null });
    }
    for (const t of tokens) expect(r.stdout).not.toContain(t);
  });

  test('`agentauth clients iat revoke <id|token>`, by fingerprint and by token: the token stops registering clients; an unknown one exits 1', async () => {
    const [byId, byToken] = [await newIat(), await newIat()];
    const fp = (t: string) => createHash('sha256').update(t).digest('base64url').slice(0, 22);
    const revokeLine = line('agentauth clients iat revoke <id|token>');

    const first = ok(await sh(revokeLine, [['<id|token>', fp(byId)]]));
    expect(json(first)).toMatchObject({ id: fp(byId) });
    const second = ok(await sh(revokeLine, [['<id|token>', byToken]]));
    expect(json(second)).toMatchObject({ id: fp(byToken) });
    expect(second.stdout).not.toContain(byToken);

    for (const t of [byId, byToken]) {
      const r = await registerWith(t);
      expect([r.status, r.body.error]).toEqual([401, 'invalid_token']);
    }
    const listed = (json(ok(await sh(line('agentauth clients iat list')))) as Json[]).map((e) => e.id);
    expect(listed).not.toContain(fp(byId));
    expect(listed).not.toContain(fp(byToken));
    const again = await sh(revokeLine, [['<id|token>', fp(byId)]]);
    expect([again.code, again.stdout]).toEqual([1, '']);
    // Clients it registered are not affected: a token for one registered with a still-live initial access token.
    expect((await token(await newClient('after revoke'))).status).toBe(200);
  });
});

describe('Backup and restore: `agentauth backup`', () => {
  const BACKUP = '/backups/agentauth-2026-11-30.sqlite';
  const LINE = /^backup written: (.+) \((\d+) bytes, mode 0600; integrity_check ok\): (\d+) clients, (\d+) signing keys, (\d+) audit records\n$/;
  const [agentauthLine, checkoutLine] = [lineOf(BLOCKS.backup, 'agentauth backup --out /backups/agentauth-2026-11-30.sqlite [--force]'), lineOf(BLOCKS.backup, 'npm exec -- node dist/server/cli.js backup --out /backups/agentauth-2026-11-30.sqlite')];
  const backups = tempDir('agentauth-backups-');
  const file = join(backups, 'agentauth-2026-11-30.sqlite');

  /** What the store holds now: registered clients, signing keys, audit records (the counts the backup reports). */
  async function counts(): Promise<[number, number, number]> {
    const clients = (json(ok(await sh(lineOf(BLOCKS.clients, 'agentauth clients list')))) as Json[]).filter((c) => c.source === 'registered').length;
    return [clients, (await keysList()).length, (await auditRecords()).length];
  }

  function written(r: ShellResult, path: string): [number, number, number] {
    ok(r);
    const m = LINE.exec(r.stdout);
    expect(m).not.toBeNull();
    expect(m![1]).toBe(path);
    expect(Number(m![2])).toBe(statSync(path).size);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    return [Number(m![3]), Number(m![4]), Number(m![5])];
  }

  test('the page\'s example of the line matches the form checked here', () => {
    expect(LINE.exec(`${SHOWN.backupLine}\n`)?.[1]).toBe(BACKUP);
  });

  test('without --force: writes FILE (mode 0600, nothing else left beside it) and prints the documented line with the store\'s counts; again, it refuses (exit 2) and leaves FILE as it was', async () => {
    const expected = await counts();
    expect(expected[0]).toBeGreaterThan(0);
    const r = await sh(agentauthLine, [[' [--force]', ''], ['/backups/', `${backups}/`]]);
    expect(written(r, file)).toEqual(expected);
    expect(readdirSync(backups)).toEqual(['agentauth-2026-11-30.sqlite']);

    const before = readFileSync(file);
    const refused = await sh(agentauthLine, [[' [--force]', ''], ['/backups/', `${backups}/`]]);
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    expect(refused.stderr.split('\n').filter((l) => l.startsWith('agentauth backup: '))).toEqual([`agentauth backup: ${file} already exists; pass --force to replace it`]);
    expect(readFileSync(file).equals(before)).toBe(true);
  });

  test('with --force: FILE is replaced by a new backup (a client registered since is in its count)', async () => {
    await newClient('after the first backup');
    const expected = await counts();
    const r = await sh(agentauthLine, [[' [--force]', ' --force'], ['/backups/', `${backups}/`]]);
    expect(written(r, file)).toEqual(expected);
    expect(readdirSync(backups)).toEqual(['agentauth-2026-11-30.sqlite']);
  });

  test('--force or not, the live agentauth.sqlite is refused as FILE (exit 2)', async () => {
    const live = join(env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite');
    const r = await sh(agentauthLine, [[' [--force]', ' --force'], [BACKUP, live]]);
    expect([r.code, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toContain(`agentauth backup: --out ${live} is the live store itself`);
    expect((await keysList()).length).toBeGreaterThan(0); // the store is intact
  });

  test('the checkout form, `npm exec -- node dist/server/cli.js backup --out ...` in the checkout, writes the same kind of backup', async () => {
    const other = tempDir('agentauth-backups-');
    const expected = await counts();
    const r = await sh(checkoutLine, [['/backups/', `${other}/`]], { cwd: ROOT, shim: false });
    expect(written(r, join(other, 'agentauth-2026-11-30.sqlite'))).toEqual(expected);
    rmSync(other, { recursive: true, force: true });
  });

  afterAll(() => rmSync(backups, { recursive: true, force: true }));
});

describe('Key rotation runbook', () => {
  let client: Client;
  let first: string;

  beforeAll(async () => {
    client = await newClient('key rotation');
  });

  test('the page\'s examples of `keys list` lines and of what `keys rotate` prints have the forms checked here', () => {
    expect(SHOWN.keyLines).toHaveLength(2);
    for (const l of SHOWN.keyLines) expect(KEY_LINE.test(l)).toBe(true);
    expect(PAGE.replace(/\s*\n\s*/g, ' ')).toContain('It prints what it scheduled (`new key <kid> (ES256) activates at <time>, replacing <kid>`;');
  });

  test('`agentauth keys rotate`: prints the new key, when it activates and what it replaces; keys list shows it next, then active at that time with the old key retired, and the server signs with it', async () => {
    const keys = await keysList();
    expect(keys.map((k) => k.state)).toEqual(['active']);
    first = keys[0]!.kid;
    const t0 = Date.now();
    const r = ok(await sh(lineOf(BLOCKS.routine, 'agentauth keys rotate')));
    const t1 = Date.now();
    const m = /^new key (\S+) \(ES256\) activates at (\S+), replacing (\S+)\n$/.exec(r.stdout);
    expect(m).not.toBeNull();
    const [, kid, activatesAt, replaces] = m!;
    expect(replaces).toBe(first);
    // keys.publishDelaySeconds after the moment the command ran (somewhere between t0 and t1: a CLI process can take
    // over a second to start on a loaded machine), to the second.
    expect(Date.parse(activatesAt!) - t0).toBeGreaterThanOrEqual(KEYS.publishDelaySeconds * 1000 - 1000);
    expect(Date.parse(activatesAt!) - t1).toBeLessThanOrEqual(KEYS.publishDelaySeconds * 1000 + 1000);

    const scheduled = await keysList();
    expect(states(scheduled)).toEqual({ [first]: 'active', [kid!]: 'next' });
    expect(scheduled.map((k) => k.kid)).toEqual([first, kid]); // oldest first
    expect(scheduled[1]!.activates).toBe(activatesAt);
    // "If a rotation is already scheduled, the command changes nothing" (and says so, with the waiting key).
    const again = ok(await sh(lineOf(BLOCKS.routine, 'agentauth keys rotate')));
    expect(again.stdout).toBe(`a rotation is already scheduled: key ${kid} activates at ${activatesAt} (nothing changed)\n`);
    expect((await keysList()).length).toBe(2);

    // At activatesAt the server switches (within refreshIntervalSeconds), with no restart.
    const seen = await signsWith(client, kid!, KEYS.publishDelaySeconds * 1000 + KEYS.refreshIntervalSeconds * 1000 + 3000);
    expect(seen.at(-1)).toBe(kid);
    const activated = await keysList();
    expect(states(activated)).toEqual({ [first]: 'retired', [kid!]: 'active' });
    expect(activated[0]!.retired).toBe(activatesAt);
    expect(activated[0]!.publishedUntil).not.toBe('-');
    // The retired key stays published, after the signing key.
    expect(await jwksKids()).toEqual([kid, first]);
  });

  test('`agentauth keys rotate --immediately`: the new key is active at once, the old one and a waiting next key retired; the server follows within refreshIntervalSeconds', async () => {
    const signing = (await keysList()).find((k) => k.state === 'active')!.kid;
    const waiting = ok(await sh(lineOf(BLOCKS.routine, 'agentauth keys rotate')));
    const next = /^new key (\S+) /.exec(waiting.stdout)![1]!;

    const t0 = Date.now();
    const r = ok(await sh(lineOf(BLOCKS.emergency, 'agentauth keys rotate --immediately')));
    const t1 = Date.now();
    const m = /^new key (\S+) \(ES256\) activates at (\S+), replacing (\S+)\n$/.exec(r.stdout);
    expect(m).not.toBeNull();
    const [, kid, activatesAt, replaces] = m!;
    expect(replaces).toBe(signing);
    // At once: while the command ran.
    expect(Date.parse(activatesAt!)).toBeGreaterThanOrEqual(t0 - 1000);
    expect(Date.parse(activatesAt!)).toBeLessThanOrEqual(t1 + 1000);
    const keys = await keysList();
    expect(states(keys)).toEqual({ [first]: 'retired', [signing]: 'retired', [next]: 'retired', [kid!]: 'active' });
    expect(keys.find((k) => k.kid === signing)!.retired).toBe(activatesAt);
    const seen = await signsWith(client, kid!, KEYS.refreshIntervalSeconds * 1000 + 3000);
    expect(seen.at(-1)).toBe(kid);
    expect(seen).not.toContain(next); // the cancelled next key never signed
    // The old keys stay published until their published_until.
    expect(await jwksKids()).toEqual(expect.arrayContaining([kid, signing, first]));
  });

  test('`agentauth keys retire <kid>`: a scheduled next key is retired and never signs; the signing key is refused (exit 2), an unknown kid exits 1, a retired key is left as it is', async () => {
    const signing = (await keysList()).find((k) => k.state === 'active')!.kid;
    const waiting = ok(await sh(lineOf(BLOCKS.routine, 'agentauth keys rotate')));
    const [, next, activatesAt] = /^new key (\S+) \(ES256\) activates at (\S+),/.exec(waiting.stdout)!;
    const retireLine = lineOf(BLOCKS.retire, 'agentauth keys retire <kid>');

    const r = ok(await sh(retireLine, [['<kid>', next!]]));
    expect(r.stdout).toBe(`retired ${next}\n`);
    expect(states(await keysList())).toMatchObject({ [signing]: 'active', [next!]: 'retired' });
    // Past its activation time the cancelled key has not become the signing key.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, Date.parse(activatesAt!) - Date.now()) + KEYS.refreshIntervalSeconds * 1000 + 500));
    expect(states(await keysList())).toMatchObject({ [signing]: 'active', [next!]: 'retired' });
    expect(decodeProtectedHeader(String((await token(client)).body.access_token)).kid).toBe(signing);
    expect(await jwksKids()).toContain(next); // published for the retire grace

    const refused = await sh(retireLine, [['<kid>', signing]]);
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    // The message the page quotes: "The signing key is refused (`` <kid> is the signing key; ... ``)".
    const quoted = /The signing key is refused \(`` (<kid> is the signing key;.*?) ``\)/.exec(PAGE.replace(/\s*\n\s*/g, ' '))?.[1];
    expect(quoted).toBe('<kid> is the signing key; run `agentauth keys rotate` (or --immediately) to replace it first');
    expect(refused.stderr).toContain(`agentauth: ${replaceExactly(quoted!, '<kid>', signing, `docs/${DOC}`)}\n`);

    const unknown = await sh(retireLine, [['<kid>', 'no-such-kid']]);
    expect([unknown.code, unknown.stdout]).toEqual([1, '']);
    expect(unknown.stderr).toContain(`agentauth: keys retire: no key no-such-kid in ${join(env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite')}`);

    const beforeRetired = (await keysList()).find((k) => k.kid === first)!;
    expect(ok(await sh(retireLine, [['<kid>', first]])).stdout).toBe(`retired ${first}\n`);
    expect((await keysList()).find((k) => k.kid === first)).toEqual(beforeRetired);
  });
});

describe('Withdrawing a stolen key', () => {
  test('rotate --immediately, then `keys withdraw <kid>`: the key leaves /jwks, its tokens introspect inactive, verify says untrusted (exit 1); the signing key is refused, an unknown kid exits 1, a second withdraw changes nothing', async () => {
    const client = await newClient('withdraw');
    const stolen = (await keysList()).find((k) => k.state === 'active')!.kid;
    const signedByStolen = String((await token(client)).body.access_token);
    expect(decodeProtectedHeader(signedByStolen).kid).toBe(stolen);
    expect((await introspect(url, signedByStolen)).active).toBe(true);

    const rotated = ok(await sh(lineOf(BLOCKS.withdraw, 'agentauth keys rotate --immediately')));
    const fresh = /^new key (\S+) /.exec(rotated.stdout)![1]!;
    expect((await signsWith(client, fresh, KEYS.refreshIntervalSeconds * 1000 + 3000)).at(-1)).toBe(fresh);
    // Retired, not withdrawn: still published, and its genuine token still active.
    expect(await jwksKids()).toContain(stolen);
    expect((await introspect(url, signedByStolen)).active).toBe(true);

    const withdrawLine = lineOf(BLOCKS.withdraw, 'agentauth keys withdraw <kid>');
    const before = Date.now();
    const r = ok(await sh(withdrawLine, [['<kid>', stolen]]));
    expect(r.stdout).toBe(`withdrew ${stolen}: every instance stops publishing it and accepting its tokens within ${KEYS.refreshIntervalSeconds} s (keys.refreshIntervalSeconds)\n`);
    const listed = (await keysList()).find((k) => k.kid === stolen)!;
    expect(listed).toMatchObject({ state: 'withdrawn', publishedUntil: listed.withdrawn });
    expect(Date.parse(listed.withdrawn!)).toBeGreaterThanOrEqual(before - 1000);

    // Within refreshIntervalSeconds the server stops publishing it and introspects its token inactive.
    const deadline = Date.now() + KEYS.refreshIntervalSeconds * 1000 + 3000;
    while ((await jwksKids()).includes(stolen) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
    expect(await jwksKids()).not.toContain(stolen);
    expect(await introspect(url, signedByStolen)).toEqual({ active: false });
    // The new key's tokens are unaffected.
    expect((await introspect(url, String((await token(client)).body.access_token))).active).toBe(true);
    const archive = (await (await fetch(`${url}/keys`)).json()) as { keys: Array<{ kid: string; state: string; withdrawn_at?: string }> };
    expect(archive.keys.find((k) => k.kid === stolen)).toMatchObject({ state: 'withdrawn', withdrawn_at: listed.withdrawn });

    const verified = await runCli(['verify', signedByStolen], env);
    expect(verified.code).toBe(1);
    expect(verified.stdout).toContain('signature valid\n');
    expect(verified.stdout).toContain(`untrusted: key ${stolen} was withdrawn at ${listed.withdrawn}`);
    const audit = (await auditRecords()).filter((x) => x.type === 'key.withdrawn');
    expect(audit.map((x) => x.details)).toEqual([{ kid: stolen, by: 'cli' }]);

    const again = ok(await sh(withdrawLine, [['<kid>', stolen]]));
    expect(again.stdout).toBe(`${stolen} was already withdrawn (nothing changed)\n`);
    expect((await auditRecords()).filter((x) => x.type === 'key.withdrawn')).toHaveLength(1);

    const refused = await sh(withdrawLine, [['<kid>', fresh]]);
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    const section = PAGE.slice(PAGE.indexOf('\n### Withdrawing a stolen key\n')).replace(/\s*\n\s*/g, ' ');
    const quoted = /The signing key is refused \(`` (<kid> is the signing key;.*?) ``, exit 2\)/.exec(section)?.[1];
    expect(quoted).toBe('<kid> is the signing key; run `agentauth keys rotate --immediately` to replace it first, then withdraw it');
    expect(refused.stderr).toContain(`agentauth: ${replaceExactly(quoted!, '<kid>', fresh, `docs/${DOC}`)}\n`);
    expect(states(await keysList())).toMatchObject({ [fresh]: 'active', [stolen]: 'withdrawn' });

    const unknown = await sh(withdrawLine, [['<kid>', 'no-such-kid']]);
    expect([unknown.code, unknown.stdout]).toEqual([1, '']);
    expect(unknown.stderr).toContain(`agentauth: keys withdraw: no key no-such-kid in ${join(env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite')}`);
  });
});

describe('Audit log: reading, exporting and verifying', () => {
  const line = (start: string) => lineOf(BLOCKS.audit, start);
  const work = tempDir('agentauth-audit-');
  const FILE = 'audit-2026-11-22.jsonl';
  let exported: AuditRecord[];
  let heads: string;

  /** The newest `n` records of all chains, oldest first by time (ties: chain, then seq), as the page describes tail. */
  function newest(records: AuditRecord[], n: number): AuditRecord[] {
    const sorted = [...records].sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : (a.chain ?? '').localeCompare(b.chain ?? '') || a.seq - b.seq));
    return sorted.slice(-n);
  }

  beforeAll(async () => {
    // Enough records that -n 100 is a limit too: token requests, each a token.issued record.
    const client = await newClient('audit');
    for (let i = 0; i < 4; i += 1) await Promise.all(Array.from({ length: 25 }, () => token(client)));
  });

  test('`agentauth audit tail`: the newest 20 records of every chain as JSON lines, oldest first', async () => {
    const r = ok(await sh(line('agentauth audit tail')));
    const records = await auditRecords();
    expect(records.length).toBeGreaterThan(100);
    const tail = jsonLines(r.stdout);
    expect(tail).toHaveLength(20);
    expect(tail).toEqual(newest(records, 20));
    // Both writers' chains are in the log: the server process and the CLI (keys and clients commands).
    const chains = [...new Set(records.map((x) => String(x.chain)))];
    expect(chains).toHaveLength(2);
    expect(chains).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`:${server.port}#0$`)), expect.stringMatching(/#cli$/)]));
  });

  test('`agentauth audit tail -n 100`: the newest 100, oldest first', async () => {
    const r = ok(await sh(line('agentauth audit tail -n 100')));
    const tail = jsonLines(r.stdout);
    expect(tail).toHaveLength(100);
    expect(tail).toEqual(newest(await auditRecords(), 100));
    expect(tail.map((x) => x.time)).toEqual([...tail.map((x) => x.time)].sort());
  });

  test('`agentauth audit export --out FILE`: every record, chain after chain in seq order, to FILE (mode 0600); stderr ends with the count and each chain\'s head', async () => {
    const r = ok(await sh(line('agentauth audit export --out audit-2026-11-22.jsonl'), [], { cwd: work }));
    expect(r.stdout).toBe('');
    const path = join(work, FILE);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(work)).toEqual([FILE]);
    exported = jsonLines(readFileSync(path, 'utf8'));
    expect(exported).toEqual(await auditRecords());
    // Chain after chain, each in seq order from 1.
    const chains = [...new Set(exported.map((x) => x.chain))];
    expect(chains).toHaveLength(2);
    expect(exported.map((x) => x.chain)).toEqual(chains.flatMap((c) => exported.filter((x) => x.chain === c).map(() => c)));
    for (const c of chains) expect(exported.filter((x) => x.chain === c).map((x) => x.seq)).toEqual(exported.filter((x) => x.chain === c).map((_, i) => i + 1));
    heads = headsOf(exported);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe(`exported ${exported.length} audit records to ${FILE}; ${heads}`);
  });

  test('`agentauth audit verify`: the stored log is intact: exit 0, "audit log OK: N records in C chains, heads ..." with the export\'s heads', async () => {
    const r = ok(await sh(line('agentauth audit verify')));
    expect(r.stdout).toBe(`audit log OK: ${exported.length} records in 2 chains, ${heads}\n`);
  });

  test('`agentauth audit verify --file FILE`: the export verifies the same; edited or with a record deleted, it fails with exit 1, naming the problem', async () => {
    const verifyFile = line('agentauth audit verify --file audit-2026-11-22.jsonl');
    const r = ok(await sh(verifyFile, [], { cwd: work }));
    expect(r.stdout).toBe(`audit log OK: ${exported.length} records in 2 chains, ${heads}\n`);

    const path = join(work, FILE);
    const original = readFileSync(path, 'utf8');
    const lines = original.split('\n');
    // Edited: one token.issued record's scope changed, its hash kept.
    const at = exported.findIndex((x) => x.type === 'token.issued');
    const target = exported[at]!;
    lines[at] = JSON.stringify({ ...target, details: { ...target.details, scope: 'write' } });
    writeFileSync(path, lines.join('\n'));
    const edited = await sh(verifyFile, [], { cwd: work });
    expect(edited.code).toBe(1);
    const out = edited.stdout.trimEnd().split('\n');
    expect(out[0]).toMatch(new RegExp(`^chain ${target.chain!.replace(/[.]/g, '\\.')} seq ${target.seq}: edited: `));
    expect(out.at(-1)).toMatch(/^audit log FAILED: /);

    // Deleted: a record in the middle of a chain removed.
    const removed = original.split('\n');
    const gone = exported[at + 1]!;
    removed.splice(at + 1, 1);
    writeFileSync(path, removed.join('\n'));
    const deleted = await sh(verifyFile, [], { cwd: work });
    expect(deleted.code).toBe(1);
    expect(deleted.stdout).toMatch(new RegExp(`^chain ${gone.chain!.replace(/[.]/g, '\\.')} seq ${gone.seq}: deleted: `, 'm'));
    expect(deleted.stdout.trimEnd().split('\n').at(-1)).toMatch(/^audit log FAILED: /);
  });

  afterAll(() => rmSync(work, { recursive: true, force: true }));
});

test('every command line of the blocks was run', () => {
  expect(ALL_LINES.filter((l) => !ran.has(l))).toEqual([]);
  expect(ALL_LINES.length).toBe(20);
});
