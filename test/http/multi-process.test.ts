import { availableParallelism } from 'node:os';

import { decodeProtectedHeader } from 'jose';
import { Wallet } from 'ethers';

import { freePort } from '../support/ferretdb.js';
import { baseConfig, STRICT_REFRESH_TIERS, introspect, register, REDIRECT, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { all, basic, codeFor, form, oneDpopProof, redemption, refreshing, statuses } from '../support/races.js';
import { logLines, newKek, runCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * Design invariant 2 across processes on the embedded default store (SQLite, no MONGODB_URI): several agentauth
 * processes on one data directory, every single-use item used 50 times at once with the requests split across the
 * processes, exactly one success. Two set-ups: two `agentauth start` on their own ports behind one public name (as
 * behind a proxy: TRUST_PROXY and X-Forwarded-Host, so a DPoP proof's htu is valid at both), where the split is
 * exact (even requests to one, odd to the other); and `agentauth start --workers 2`, one port, where node:cluster
 * hands the 50 connections to the workers in turn. Plus the CLI next to running servers on the same file.
 */
const CONCURRENCY = 50;
const ROUNDS = 3;
const wallet = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Cluster {
  /** The public issuer. */
  issuer: string;
  /** Where request i goes, and the headers that make it reach the issuer's name there. */
  target(i: number): { origin: string; headers: Record<string, string> };
  env: Record<string, string>;
  servers: RunningServer[];
}

function sharedEnv(issuer: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    AGENTAUTH_DATA_DIR: tempDir('agentauth-multi-'),
    AGENTAUTH_KEK: newKek(),
    AGENTAUTH_CONFIG: writeConfig(tempDir(), baseConfig({ registration: { quota: { max: 10_000 } }, keys: { refreshIntervalSeconds: 1 }, tiers: STRICT_REFRESH_TIERS })),
    ISSUER: issuer,
    ...extra,
  };
}

async function twoProcesses(): Promise<Cluster> {
  const [portA, portB] = [await freePort(), await freePort()];
  const issuer = `http://localhost:${portA}`;
  const env = sharedEnv(issuer, { TRUST_PROXY: 'true' });
  const servers = await Promise.all([startServer(env, portA), startServer(env, portB)]);
  return {
    issuer,
    env,
    servers,
    target: (i): { origin: string; headers: Record<string, string> } =>
      i % 2 === 0 ? { origin: issuer, headers: {} } : { origin: `http://localhost:${portB}`, headers: { 'x-forwarded-host': `localhost:${portA}` } },
  };
}

async function twoWorkers(): Promise<Cluster> {
  const port = await freePort();
  const issuer = `http://localhost:${port}`;
  const env = sharedEnv(issuer);
  const server = await startServer(env, port, { args: ['--workers', '2'], listening: 2 });
  return { issuer, env, servers: [server], target: () => ({ origin: issuer, headers: {} }) };
}

const rounds = Array.from({ length: ROUNDS }, (_, i) => [i + 1]);

describe.each([
  ['two agentauth processes on their own ports', twoProcesses],
  ['agentauth start --workers 2', twoWorkers],
])('single use across processes on one SQLite file: %s', (_name, setUp) => {
  let c: Cluster;

  beforeAll(async () => {
    c = await setUp();
  });
  afterAll(async () => {
    await Promise.all((c?.servers ?? []).map((s) => s.stop()));
  });

  const tokenRequest = (i: number, authorization: string, body: string, extra: Record<string, string> = {}) => {
    const t = c.target(i);
    return fetch(`${t.origin}/token`, { method: 'POST', headers: { ...t.headers, authorization, 'content-type': 'application/x-www-form-urlencoded', ...extra }, body });
  };

  test.each(rounds)('authorization code, round %i: one success out of 50', async () => {
    const code = await codeFor(c.issuer, wallet);
    const results = await all(CONCURRENCY, (i) => tokenRequest(i, basic(code.clientId, code.secret), redemption(code)));
    expect(statuses(results)).toBe([...Array(CONCURRENCY - 1).fill('400'), '200'].sort().join(','));
    expect(results.filter((r) => r.status === 400).every((r) => r.body.error === 'invalid_grant')).toBe(true);
    // A code used twice revokes what it gave (RFC 6749 §4.1.2), whichever process saw the second use.
    const won = results.find((r) => r.status === 200)!.body as { access_token: string };
    expect(await introspect(c.issuer, won.access_token)).toEqual({ active: false });
  });

  test.each(rounds)('refresh token, round %i: one success out of 50, and the grant is revoked after', async () => {
    const code = await codeFor(c.issuer, wallet);
    const first = (await (await tokenRequest(0, basic(code.clientId, code.secret), redemption(code))).json()) as { access_token: string; refresh_token: string };
    expect((await introspect(c.issuer, first.access_token)).active).toBe(true);
    const results = await all(CONCURRENCY, (i) => tokenRequest(i, basic(code.clientId, code.secret), refreshing(first.refresh_token)));
    expect(statuses(results)).toBe([...Array(CONCURRENCY - 1).fill('400'), '200'].sort().join(','));
    expect(results.filter((r) => r.status === 400).every((r) => r.body.error === 'invalid_grant')).toBe(true);
    const won = results.find((r) => r.status === 200)!.body as { access_token: string; refresh_token: string };
    expect(await introspect(c.issuer, first.access_token)).toEqual({ active: false });
    expect(await introspect(c.issuer, won.access_token)).toEqual({ active: false });
    for (const i of [0, 1]) {
      const next = await tokenRequest(i, basic(code.clientId, code.secret), refreshing(won.refresh_token));
      expect({ status: next.status, error: ((await next.json()) as { error?: string }).error }).toEqual({ status: 400, error: 'invalid_grant' });
    }
  });

  test.each(rounds)('DPoP proof, round %i: one token for one proof sent 50 times', async () => {
    const proof = await oneDpopProof(c.issuer, RS_CLIENT.id, RS_CLIENT.secret);
    const body = form({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' });
    const results = await all(CONCURRENCY, (i) => tokenRequest(i, basic(RS_CLIENT.id, RS_CLIENT.secret), body, { dpop: proof }));
    expect(statuses(results)).toBe([...Array(CONCURRENCY - 1).fill('400'), '200'].sort().join(','));
    expect(results.filter((r) => r.status === 400).every((r) => r.body.error === 'invalid_dpop_proof')).toBe(true);
    // The control: a fresh proof is accepted at both processes.
    for (const i of [0, 1]) {
      const fresh = await oneDpopProof(c.issuer, RS_CLIENT.id, RS_CLIENT.secret);
      expect((await tokenRequest(i, basic(RS_CLIENT.id, RS_CLIENT.secret), body, { dpop: fresh })).status).toBe(200);
    }
  });

  test.each(rounds)('registration access token, round %i: one read out of 50, one working successor', async () => {
    const created = await register(c.issuer, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
    expect(created.status).toBe(201);
    const path = new URL(created.body.registration_client_uri as string).pathname;
    const rat = created.body.registration_access_token as string;
    const read = (i: number, token: string) => {
      const t = c.target(i);
      return fetch(`${t.origin}${path}`, { headers: { ...t.headers, authorization: `Bearer ${token}` } });
    };
    const results = await all(CONCURRENCY, (i) => read(i, rat));
    expect(statuses(results)).toBe([...Array(CONCURRENCY - 1).fill('401'), '200'].sort().join(','));
    expect(results.filter((r) => r.status === 401).every((r) => r.body.error === 'invalid_token')).toBe(true);
    const successor = results.find((r) => r.status === 200)!.body.registration_access_token as string;
    expect((await read(1, successor)).status).toBe(200);
  });

  test('each process says where it computes signatures: on its event loop when the processes leave no core to the thread pool', () => {
    const workers = c.servers.length === 1;
    const lines = c.servers.flatMap((s) => logLines(s.output()).filter((l) => l.msg === 'where ECDSA and Ed25519 signatures are computed'));
    // Two worker processes of one server know there are two; two servers started one by one each count itself.
    const processes = workers ? 2 : 1;
    const expected = processes >= availableParallelism() ? 'event loop' : 'thread pool';
    expect(lines).toEqual(Array.from({ length: 2 }, () => expect.objectContaining({ level: 'info', signatures: expected, processes, cores: availableParallelism() })));
  });

  test('every process served and wrote its own audit chain, and the chains verify', async () => {
    const verified = await runCli(['audit', 'verify'], c.env);
    expect(verified.code).toBe(0);
    const ports = c.servers.length === 2 ? c.servers.map((s) => `:${s.port}#0 seq `) : [`:${c.servers[0]!.port}#1 seq `, `:${c.servers[0]!.port}#2 seq `];
    for (const chain of ports) expect(verified.stdout).toContain(chain);
  });
});

describe('the CLI next to two running servers on one SQLite file', () => {
  let c: Cluster;

  beforeAll(async () => {
    c = await twoProcesses();
  });
  afterAll(async () => {
    await Promise.all((c?.servers ?? []).map((s) => s.stop()));
  });

  test('keys rotate while both serve: both sign with the new key, and audit tail shows every writer', async () => {
    const seen: Array<{ process: number; status: number; kid?: string }> = [];
    let running = true;
    const loop = (async () => {
      // Bounded: at most 2000 requests, whatever happens.
      for (let i = 0; running && i < 2000; i += 1) {
        const t = c.target(i);
        const res = await fetch(`${t.origin}/token`, {
          method: 'POST',
          headers: { ...t.headers, authorization: basic(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
          body: form({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
        });
        const body = (await res.json()) as { access_token?: string };
        seen.push({ process: i % 2, status: res.status, ...(body.access_token ? { kid: decodeProtectedHeader(body.access_token).kid! } : {}) });
        await sleep(10);
      }
    })();

    await sleep(300);
    const oldKid = seen.find((s) => s.kid)!.kid!;
    const rotated = await runCli(['keys', 'rotate', '--immediately', '--json'], c.env);
    expect(rotated.code).toBe(0);
    const newKid = (JSON.parse(rotated.stdout) as { kid: string }).kid;
    expect(newKid).not.toBe(oldKid);

    // Each server follows the store (keys.refreshIntervalSeconds: 1); wait, bounded, until both have signed with it.
    const followed = () => [0, 1].every((p) => seen.some((s) => s.process === p && s.kid === newKid));
    for (const deadline = Date.now() + 20_000; !followed() && Date.now() < deadline; ) await sleep(100);
    running = false;
    await loop;
    expect(followed()).toBe(true);
    expect(seen.filter((s) => s.status !== 200)).toEqual([]);
    for (const s of c.servers) {
      const kids = ((await (await fetch(`http://localhost:${s.port}/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
      expect(kids).toEqual(expect.arrayContaining([oldKid, newKid]));
    }

    const tail = await runCli(['audit', 'tail', '-n', '5000'], c.env);
    expect(tail.code).toBe(0);
    const records = tail.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { chain?: string; type: string; details?: Record<string, unknown> });
    for (const s of c.servers) expect(records.some((r) => r.chain?.endsWith(`:${s.port}#0`) && r.type === 'token.issued')).toBe(true);
    expect(records.some((r) => r.chain?.endsWith('#cli') && r.type === 'key.rotated' && r.details?.kid === newKid)).toBe(true);
    const verified = await runCli(['audit', 'verify'], c.env);
    expect(verified.code).toBe(0);
  }, 60_000);
});
