import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { baseConfig, basicAuth, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { runCli, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { mongoUri } from '../support/storages.js';

/**
 * `agentauth audit prune`: removes audit records older than a cut-off while servers run, never a chain's newest, only
 * what a verified archive holds (or with --discard), never from a log that does not verify; what is left verifies
 * from the checkpoint, exports say where each pruned chain starts, and `agentauth verify` says when a revocation may
 * have been pruned.
 */

async function token(url: string): Promise<string> {
  const res = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function revoke(url: string, t: string): Promise<void> {
  const res = await fetch(`${url}/token/revocation`, {
    method: 'POST',
    headers: { authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: t }),
  });
  expect(res.status).toBe(200);
}

const exportLines = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.each([
  ['SQLite', () => ({})],
  ['MongoDB (FerretDB)', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('auditprune') })],
] as const)('agentauth audit prune on %s, with the server running', (store, storeEnv) => {
  const dir = tempDir('agentauth-prune-');
  let env: Record<string, string>;
  let server: RunningServer;
  let revoked: string;
  const cli = (...args: string[]) => runCli(args, env, 60_000);

  beforeAll(async () => {
    env = { AGENTAUTH_CONFIG: writeConfig(dir, baseConfig()), AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_KEK: 'q'.repeat(43) + '=', ...storeEnv() };
    server = await startServer(env);
    revoked = await token(server.url);
    for (let i = 0; i < 5; i += 1) await token(server.url);
    await revoke(server.url, revoked);
  });
  afterAll(async () => {
    await server.stop();
  });

  test.each([
    [[], /give exactly one of --before <date-time> and --older-than <days>d/],
    [['--before', '2026-01-01', '--older-than', '90d', '--discard'], /give exactly one of --before/],
    [['--older-than', '90', '--discard'], /--older-than must be a whole number of days followed by d, e.g. 90d \(got "90"\)/],
    [['--older-than', '0d', '--discard'], /--older-than must be a whole number of days/],
    [['--before', 'yesterday', '--discard'], /--before must be an ISO 8601 date or date-time/],
    [['--before', '2026-01-01T00:00:00', '--discard'], /--before must be an ISO 8601 date or date-time with its offset/],
    [['--before', '2999-01-01', '--discard'], /--before 2999-01-01 is in the future/],
    [['--older-than', '1d'], /give one of --archive-to <new file> .*, --archive <file> .* or, to remove them unarchived, --discard/],
    [['--older-than', '1d', '--archive', 'x.jsonl', '--discard'], /give one of --archive-to/],
    [['--older-than', '1d', '--archive', 'x.jsonl', '--archive-to', 'y.jsonl'], /give one of --archive-to/],
  ])('usage errors exit 2 and remove nothing: %j', async (args, message) => {
    const before = await cli('audit', 'verify', '--json');
    const res = await cli('audit', 'prune', ...args);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
    expect((await cli('audit', 'verify', '--json')).stdout).toBe(before.stdout);
  });

  test('nothing older than the cut-off: nothing is removed', async () => {
    const res = await cli('audit', 'prune', '--older-than', '1d', '--discard');
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^nothing to prune: no audit record before \S+ \(each chain's newest record is always kept\)\n$/);
  });

  test('prune checks its archive, removes what it holds, and the log, exports and verify still agree', async () => {
    const stale = join(dir, `stale-${store.length}.jsonl`);
    expect((await cli('audit', 'export', '--out', stale)).code).toBe(0);
    // Two records the stale export does not hold: the newest stays (a chain's newest is never removed), the other would go.
    await token(server.url);
    await token(server.url);
    await pause(20);
    const cutoff = new Date().toISOString();
    const countBefore = (JSON.parse((await cli('audit', 'verify', '--json')).stdout) as { records: number }).records;

    // An archive that stops short of what would be removed is refused, and nothing is removed.
    let res = await cli('audit', 'prune', '--before', cutoff, '--archive', stale);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/does not hold .* up to seq \d+ as stored \(export again, then prune\); nothing was removed/);
    // So is one that does not verify (one record edited).
    const edited = join(dir, `edited-${store.length}.jsonl`);
    const lines = readFileSync(stale, 'utf8').split('\n');
    lines[1] = lines[1]!.replace('"token.issued"', '"token.revoked"');
    writeFileSync(edited, lines.join('\n'));
    res = await cli('audit', 'prune', '--before', cutoff, '--archive', edited);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/the archive .* does not verify \(run agentauth audit verify --file/);
    expect((JSON.parse((await cli('audit', 'verify', '--json')).stdout) as { records: number }).records).toBe(countBefore);

    // A fresh export is accepted: everything before the cut-off goes, except each chain's newest record.
    const archive = join(dir, `archive-${store.length}.jsonl`);
    expect((await cli('audit', 'export', '--out', archive)).code).toBe(0);
    // A dry run checks the same and says what would go, removing nothing.
    res = await cli('audit', 'prune', '--before', cutoff, '--archive', archive, '--dry-run', '--json');
    expect(res.code).toBe(0);
    const dry = JSON.parse(res.stdout) as { dry_run: boolean; would_prune: Array<{ chain: string; through_seq: number; records: number }> };
    expect(dry.dry_run).toBe(true);
    expect(dry.would_prune.length).toBeGreaterThan(0);
    expect((JSON.parse((await cli('audit', 'verify', '--json')).stdout) as { records: number; pruned: unknown[] })).toMatchObject({ records: countBefore, pruned: [] });
    expect((await cli('audit', 'prune', '--before', cutoff, '--archive', stale, '--dry-run')).code).toBe(2);

    res = await cli('audit', 'prune', '--before', cutoff, '--archive', archive, '--json');
    expect(res.code).toBe(0);
    const answer = JSON.parse(res.stdout) as { ok: boolean; pruned: Array<{ chain: string; from_seq: number; through_seq: number; removed: number }> };
    expect(answer.ok).toBe(true);
    expect(answer.pruned.length).toBeGreaterThan(0);
    const removed = answer.pruned.reduce((n, p) => n + p.removed, 0);
    for (const p of answer.pruned) expect(p.removed).toBe(p.through_seq - p.from_seq + 1);
    // The dry run named exactly what went.
    expect(answer.pruned.map((p) => ({ chain: p.chain, through_seq: p.through_seq, records: p.removed }))).toEqual(dry.would_prune.map(({ chain, through_seq: seq, records }) => ({ chain, through_seq: seq, records })));

    // The stored log verifies from its checkpoints, and says where each pruned chain starts.
    const verified = JSON.parse((await cli('audit', 'verify', '--json')).stdout) as { ok: boolean; records: number; pruned: Array<{ chain: string; seq: number }> };
    expect(verified.ok).toBe(true);
    expect(verified.pruned).toEqual(expect.arrayContaining(answer.pruned.map((p) => ({ chain: p.chain, seq: p.through_seq }))));
    // What is left: the records before, less those removed, plus the prune's own record.
    expect(verified.records).toBe(countBefore - removed + 1);
    const text = await cli('audit', 'verify');
    expect(text.stdout).toMatch(/^audit log OK: .*; pruned: .* starts after seq \d+/);

    // The prune is on the record, in the command line's chain.
    const tail = (await cli('audit', 'tail', '-n', '5')).stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; details: Record<string, unknown> });
    expect(tail.at(-1)).toMatchObject({ type: 'audit.pruned', details: { before: cutoff, archive } });

    // An export made now opens each pruned chain with where it starts, and verifies by itself.
    const after = join(dir, `after-${store.length}.jsonl`);
    expect((await cli('audit', 'export', '--out', after)).code).toBe(0);
    const exported = exportLines(after);
    for (const p of answer.pruned) expect(exported).toContainEqual({ chain: p.chain, pruned_through: expect.objectContaining({ seq: p.through_seq }) });
    const fileVerify = await cli('audit', 'verify', '--file', after, '--json');
    expect(fileVerify.code).toBe(0);
    expect(JSON.parse(fileVerify.stdout)).toMatchObject({ ok: true, records: verified.records });
    // Its pruned-chain lines are checked too: one moved after its chain's records is refused.
    const moved = exported.filter((l) => !('pruned_through' in l)).concat(exported.filter((l) => 'pruned_through' in l));
    writeFileSync(after, moved.map((l) => JSON.stringify(l)).join('\n'));
    expect((await cli('audit', 'verify', '--file', after)).code).toBe(1);

    // The server kept running throughout and still records.
    await token(server.url);
    expect(JSON.parse((await cli('audit', 'verify', '--json')).stdout)).toMatchObject({ ok: true, records: verified.records + 1 });

    // A token issued before the cut-off: verify says its revocation may have been pruned.
    const v = JSON.parse((await cli('verify', revoked, '--json')).stdout) as { signature: string; revocation_note?: string };
    expect(v.signature).toBe('valid');
    expect(v.revocation_note).toMatch(/^the audit log was pruned up to \S+ \(agentauth audit prune\): a revocation of this token/);
    // One issued after it has no such note.
    const fresh = await token(server.url);
    expect(JSON.parse((await cli('verify', fresh, '--json')).stdout)).not.toHaveProperty('revocation_note');

    // A second prune with the later export continues from the checkpoint.
    await pause(20);
    const later = join(dir, `later-${store.length}.jsonl`);
    expect((await cli('audit', 'export', '--out', later)).code).toBe(0);
    res = await cli('audit', 'prune', '--before', new Date().toISOString(), '--archive', later);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/audit prune: removed \d+ records before .* from \d+ chains?, all of them in /);
    expect(JSON.parse((await cli('audit', 'verify', '--json')).stdout)).toMatchObject({ ok: true });
  });
});

test('a log that does not verify up to the cut-off is not pruned (the evidence stays)', async () => {
  const dir = tempDir('agentauth-prune-');
  const env = { AGENTAUTH_CONFIG: writeConfig(dir, baseConfig()), AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_KEK: 'r'.repeat(43) + '=' };
  const server = await startServer(env);
  try {
    for (let i = 0; i < 4; i += 1) await token(server.url);
  } finally {
    await server.stop();
  }
  const db = new DatabaseSync(join(dir, 'data', 'agentauth.sqlite'));
  db.prepare("UPDATE audit_records SET record = json_set(record, '$.client_id', 'someone-else') WHERE seq = 2 AND json_extract(record, '$.type') = 'token.issued'").run();
  const rows = Number((db.prepare('SELECT count(*) AS n FROM audit_records').get() as { n: number }).n);
  db.close();
  const res = await runCli(['audit', 'prune', '--before', new Date().toISOString(), '--discard'], env);
  expect(res.code).toBe(1);
  expect(res.stdout).toMatch(/seq 2: edited: /);
  expect(res.stdout).toMatch(/audit prune FAILED: the log does not verify up to \S+; nothing was removed \(run agentauth audit verify\)\n$/);
  const after = new DatabaseSync(join(dir, 'data', 'agentauth.sqlite'));
  expect(Number((after.prepare('SELECT count(*) AS n FROM audit_records').get() as { n: number }).n)).toBe(rows);
  after.close();
});

test('the memory store\'s audit file is not pruned', async () => {
  const dir = tempDir('agentauth-prune-');
  const env = { AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_STORE: 'memory', AGENTAUTH_KEK: 's'.repeat(43) + '=' };
  const server = await startServer(env);
  await server.stop();
  const res = await runCli(['audit', 'prune', '--older-than', '1d', '--discard'], env);
  expect(res.code).toBe(2);
  expect(res.stderr).toMatch(/the memory store's audit log is the file .*audit\.jsonl, which is not pruned/);
});

test('records at or below a checkpoint (an interrupted prune\'s, or planted) fail verify, count for no revocation, and the next prune removes them', async () => {
  const dir = tempDir('agentauth-prune-');
  const env = { AGENTAUTH_CONFIG: writeConfig(dir, baseConfig()), AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_KEK: 't'.repeat(43) + '=' };
  const server = await startServer(env);
  let revoked: string;
  try {
    revoked = await token(server.url);
    await revoke(server.url, revoked);
    for (let i = 0; i < 3; i += 1) await token(server.url);
  } finally {
    await server.stop();
  }
  await pause(20);
  const archive = join(dir, 'archive.jsonl');
  expect((await runCli(['audit', 'export', '--out', archive], env)).code).toBe(0);
  expect((await runCli(['audit', 'prune', '--before', new Date().toISOString(), '--archive', archive], env)).code).toBe(0);
  const revocation = exportLines(archive).find((l) => l.type === 'token.revoked')!;
  // Before: the revocation is gone from the store, and verify says so.
  let facts = JSON.parse((await runCli(['verify', revoked, '--json'], env)).stdout) as { revocation: string[]; revocation_note?: string };
  expect(facts.revocation.some((f) => f.startsWith('token revoked at'))).toBe(false);
  expect(facts.revocation_note).toMatch(/^the audit log was pruned up to/);

  // The removed record put back where it was, below the checkpoint.
  const db = new DatabaseSync(join(dir, 'data', 'agentauth.sqlite'));
  db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)').run(String(revocation.chain ?? ''), Number(revocation.seq), JSON.stringify(revocation));
  db.close();
  const res = await runCli(['audit', 'verify'], env);
  expect(res.code).toBe(1);
  expect(res.stdout).toMatch(/edited: 1 record is stored at or below the checkpoint \(seq \d+\), where no verification reads: left by an interrupted audit prune \(running it again removes them\), or planted/);
  facts = JSON.parse((await runCli(['verify', revoked, '--json'], env)).stdout) as { revocation: string[] };
  expect(facts.revocation.some((f) => f.startsWith('token revoked at'))).toBe(false);

  // A dry run says it would remove it; a prune with nothing else to do removes it, and the log verifies again.
  const dry = await runCli(['audit', 'prune', '--older-than', '1d', '--discard', '--dry-run'], env);
  expect(dry.stderr).toMatch(/1 record left at or below a checkpoint by an earlier prune would be removed/);
  expect((await runCli(['audit', 'verify'], env)).code).toBe(1);
  const again = await runCli(['audit', 'prune', '--older-than', '1d', '--discard'], env);
  expect(again.code).toBe(0);
  expect(again.stderr).toMatch(/1 record left at or below a checkpoint by an earlier prune was removed/);
  expect((await runCli(['audit', 'verify'], env)).code).toBe(0);
});

test('--archive-to writes exactly what goes to a new file, synced and checked, before removing it; archives chain across prunes', async () => {
  const dir = tempDir('agentauth-prune-');
  const env = { AGENTAUTH_CONFIG: writeConfig(dir, baseConfig()), AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_KEK: 'u'.repeat(43) + '=' };
  const server = await startServer(env);
  try {
    for (let i = 0; i < 4; i += 1) await token(server.url);
    await pause(20);
    const first = join(dir, 'first.jsonl');
    let res = await runCli(['audit', 'prune', '--before', new Date().toISOString(), '--archive-to', first, '--json'], env);
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/wrote \d+ records to .*first\.jsonl \(synced to disk\)/);
    const answer = JSON.parse(res.stdout) as { archive: string; pruned: Array<{ chain: string; from_seq: number; through_seq: number; removed: number }> };
    expect(answer.archive).toBe(first);
    // The file holds exactly the records removed, and verifies by itself.
    const lines = exportLines(first);
    expect(lines).toHaveLength(answer.pruned.reduce((n, p) => n + p.removed, 0));
    expect(lines.map((l) => [l.chain ?? '', l.seq])).toEqual(answer.pruned.flatMap((p) => Array.from({ length: p.removed }, (_, i) => [p.chain, p.from_seq + i])));
    expect((await runCli(['audit', 'verify', '--file', first], env)).code).toBe(0);
    expect((await runCli(['audit', 'verify'], env)).code).toBe(0);

    // An existing file is never replaced: refused before anything is read or removed.
    const before = (await runCli(['audit', 'verify', '--json'], env)).stdout;
    res = await runCli(['audit', 'prune', '--older-than', '1d', '--archive-to', first], env);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/--archive-to .*first\.jsonl exists; name a new file \(archives are never replaced\)/);
    // Nor the store's own files.
    res = await runCli(['audit', 'prune', '--older-than', '1d', '--archive-to', join(dir, 'data', 'agentauth.sqlite')], env);
    expect(res.code).toBe(2);
    expect((await runCli(['audit', 'verify', '--json'], env)).stdout).toBe(before);

    // The next archive opens each chain with where the previous one ended, and verifies by itself too.
    for (let i = 0; i < 3; i += 1) await token(server.url);
    await pause(20);
    const second = join(dir, 'second.jsonl');
    res = await runCli(['audit', 'prune', '--before', new Date().toISOString(), '--archive-to', second], env);
    expect(res.code).toBe(0);
    const next = exportLines(second);
    const serverChain = answer.pruned.find((p) => p.removed > 1)!;
    expect(next).toContainEqual({ chain: serverChain.chain, pruned_through: expect.objectContaining({ seq: serverChain.through_seq }) });
    expect((await runCli(['audit', 'verify', '--file', second], env)).code).toBe(0);
    expect((await runCli(['audit', 'verify'], env)).code).toBe(0);
    // No temporary file is left behind.
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  } finally {
    await server.stop();
  }
});
