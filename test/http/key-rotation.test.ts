import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';

import { RESOURCE, RS_CLIENT, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { runCli, startServer, tempDir } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SHORT = { accessTokenTTL: 3, refreshTokenIdleTTL: 60, refreshTokenAbsoluteTTL: 120, dpop: 'optional', dpopNonce: false };
// Retire grace = 3 s tokens + 8 s skew: long enough that the "retired but published" checks hold on a loaded machine.
const KEYS = { publishDelaySeconds: 2, refreshIntervalSeconds: 1, clockSkewSeconds: 8 };
/** How late an instance may start signing with the new key after its activation time (refresh interval + slack). */
const FOLLOW_BOUND_MS = KEYS.refreshIntervalSeconds * 1000 + 1500;

async function token(url: string): Promise<{ status: number; token?: string }> {
  const res = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
  });
  const body = (await res.json()) as { access_token?: string };
  return { status: res.status, ...(body.access_token ? { token: body.access_token } : {}) };
}

describe('key rotation with two server processes on one MongoDB', () => {
  let as: AgentServer;
  let b: RunningServer;

  beforeAll(async () => {
    as = await startAgentServer({
      resourceServers: [{ identifier: RESOURCE, scopes: ['read'], accessTokenTTL: 3 }],
      clients: [{ client_id: RS_CLIENT.id, client_secret: RS_CLIENT.secret }],
      tiers: { standard: SHORT, bound: { ...SHORT, dpop: 'required' }, strict: { ...SHORT, dpop: 'required', dpopNonce: true } },
      keys: KEYS,
    });
    b = await startServer(as.env);
  });
  afterAll(async () => {
    await Promise.all([as?.server.stop(), b?.stop()]);
  });

  test('rotate while a client fetches tokens: no request fails, both sign with the new key, old tokens verify until archived and offline after', async () => {
    const a = as.server;
    const issuer = a.url;
    const first = await token(a.url);
    const oldKid = decodeProtectedHeader(first.token!).kid!;
    const oldToken = first.token!;
    // Revoked while valid; the audit log remembers it after the denylist entry (kept until exp) is gone.
    const revoke = await fetch(`${a.url}/token/revocation`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: oldToken }),
    });
    expect(revoke.status).toBe(200);

    // A client fetching tokens from both instances in a loop for the whole rotation.
    const seen: Array<{ at: number; server: 'a' | 'b'; status: number; kid?: string }> = [];
    let running = true;
    const loop = (async () => {
      for (let i = 0; running; i += 1) {
        const server = i % 2 ? 'b' : 'a';
        const r = await token(server === 'a' ? a.url : b.url);
        seen.push({ at: Date.now(), server, status: r.status, ...(r.token ? { kid: decodeProtectedHeader(r.token).kid! } : {}) });
        await sleep(20);
      }
    })();

    const rotated = await runCli(['keys', 'rotate', '--json'], as.env);
    expect(rotated.code).toBe(0);
    const rotation = JSON.parse(rotated.stdout) as { status: string; kid: string; activatesAt: string; replaces: string };
    expect(rotation).toMatchObject({ status: 'scheduled', replaces: oldKid });
    const newKid = rotation.kid;
    const activatesAt = Date.parse(rotation.activatesAt);

    // Published before it signs: within a refresh interval both instances' JWKS carry the new key.
    await sleep(KEYS.refreshIntervalSeconds * 1000 + 300);
    for (const url of [a.url, b.url]) {
      const kids = ((await (await fetch(`${url}/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
      expect(kids).toEqual(expect.arrayContaining([oldKid, newKid]));
    }

    await sleep(Math.max(0, activatesAt - Date.now()) + FOLLOW_BOUND_MS);
    running = false;
    await loop;

    expect(seen.length).toBeGreaterThan(20);
    expect(seen.filter((s) => s.status !== 200)).toEqual([]);
    for (const server of ['a', 'b'] as const) {
      const mine = seen.filter((s) => s.server === server);
      expect(mine.filter((s) => s.at < activatesAt - 200).every((s) => s.kid === oldKid)).toBe(true);
      const firstNew = mine.find((s) => s.kid === newKid);
      expect(firstNew).toBeDefined();
      expect(firstNew!.at - activatesAt).toBeLessThanOrEqual(FOLLOW_BOUND_MS);
      expect(mine.filter((s) => s.at > activatesAt + FOLLOW_BOUND_MS).every((s) => s.kid === newKid)).toBe(true);
    }

    // Retired, still published: the old token's signature verifies against JWKS (at its own time, it has expired).
    const claims = decodeJwt(oldToken);
    const atIssue = new Date(claims.iat! * 1000);
    await expect(jwtVerify(oldToken, createRemoteJWKSet(new URL(`${b.url}/jwks`)), { issuer, currentDate: atIssue })).resolves.toBeDefined();

    // Both processes appended audit events throughout (every token issued), each on its own chain
    // (<host>:<port>#0), and the CLI's key commands on a third: every chain verifies.
    const chain = await runCli(['audit', 'verify'], as.env);
    expect(chain.code).toBe(0);
    expect(chain.stdout).toMatch(/audit log OK: \d+ records in [3-9] chains, heads /);
    expect(chain.stdout).toContain(`:${new URL(a.url).port}#0 seq `);
    expect(chain.stdout).toContain(`:${new URL(b.url).port}#0 seq `);
    expect(Number(/OK: (\d+) records/.exec(chain.stdout)![1])).toBeGreaterThanOrEqual(seen.length);

    // Archived after the longest token lifetime plus skew: gone from JWKS, still verifiable offline.
    const list = await runCli(['keys', 'list'], as.env);
    const publishedUntil = Date.parse(/published until (\S+)/.exec(list.stdout.split('\n').find((l) => l.startsWith(oldKid))!)![1]!);
    await sleep(Math.max(0, publishedUntil - Date.now()) + FOLLOW_BOUND_MS);
    for (const url of [a.url, b.url]) {
      const kids = ((await (await fetch(`${url}/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid);
      expect(kids).not.toContain(oldKid);
      await expect(jwtVerify(oldToken, createRemoteJWKSet(new URL(`${url}/jwks`)), { issuer, currentDate: atIssue })).rejects.toBeInstanceOf(joseErrors.JWKSNoMatchingKey);
    }
    const archive = (await (await fetch(`${a.url}/keys`)).json()) as { keys: Array<{ kid: string; state: string }> };
    expect(archive.keys.find((k) => k.kid === oldKid)?.state).toBe('archived');

    const verified = await runCli(['verify', oldToken, '--json'], as.env);
    expect(verified.code).toBe(0);
    const report = JSON.parse(verified.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ signature: 'valid', kid: oldKid, key_state: 'archived', expired: true, revoked: true });
    expect(JSON.stringify(report.revocation)).toMatch(/token revoked at/);

    // The same from an exported archive file, without storage.
    const file = `${tempDir()}/keys.json`;
    expect((await runCli(['keys', 'export', '--public', '--out', file, '--issuer', as.server.url], as.env)).code).toBe(0);
    const offline = await runCli(['verify', oldToken, '--archive', file, '--json'], {});
    expect(offline.code).toBe(0);
    expect(JSON.parse(offline.stdout)).toMatchObject({ signature: 'valid', key_state: 'archived', expired: true });
  });

  test('a token signed by a key that was never agentauth\'s is reported invalid', async () => {
    const { SignJWT, generateKeyPair } = await import('jose');
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT({ client_id: RS_CLIENT.id, jti: 'x' })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'not-ours' })
      .setIssuer(as.server.url)
      .setExpirationTime('5m')
      .sign(privateKey);
    const res = await runCli(['verify', forged, '--json'], as.env);
    expect(res.code).toBe(1);
    expect(JSON.parse(res.stdout)).toMatchObject({ signature: 'invalid', reason: expect.stringMatching(/never one of this agentauth's signing keys/) });

    // A real kid with a forged signature is invalid too.
    const real = (await token(as.server.url)).token!;
    const [h, p] = real.split('.');
    const tampered = `${h}.${p}.${Buffer.from('x'.repeat(64)).toString('base64url')}`;
    const bad = await runCli(['verify', tampered, '--json'], as.env);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ signature: 'invalid' });
  });
});
