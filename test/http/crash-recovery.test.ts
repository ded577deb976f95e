import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import type { JSONWebKeySet } from 'jose';

import { baseConfig, introspect, register, RESOURCE } from '../support/agent-server.js';
import { newKek, runCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * Design invariant 7 on the embedded default store (SQLite, no MONGODB_URI): a server under load (registrations,
 * token requests, JWT revocations, a key rotation by the CLI, an audit record for each of them) is killed with
 * SIGKILL in the middle; restarted on the same data directory, it still has everything it acknowledged.
 */
const LOAD_MS = 4000;
/** Bounds for the load loops, whatever the machine's speed. */
const MAX_ROUNDS = 400;
const MAX_LOAD_MS = 20_000;

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Registered {
  clientId: string;
  secret: string;
  uri: string;
  rat: string;
}

async function clientCredentials(issuer: string, c: { clientId: string; secret: string }): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: basic(c.clientId, c.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Runs `fn` over `items`, `width` at a time. */
async function eachLimited<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

describe('SIGKILL under load on the SQLite store, then a restart on the same data directory', () => {
  const dataDir = tempDir('agentauth-crash-');
  const env = {
    AGENTAUTH_DATA_DIR: dataDir,
    AGENTAUTH_KEK: newKek(),
    AGENTAUTH_CONFIG: writeConfig(
      tempDir(),
      baseConfig({
        registration: { quota: { max: 100_000 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } },
        keys: { refreshIntervalSeconds: 1 },
      }),
    ),
  };
  let server: RunningServer | undefined;

  afterAll(async () => {
    await server?.stop('SIGKILL');
  });

  test('every acknowledged registration, revocation, key and audit record survives', async () => {
    const started = Date.now();
    server = await startServer(env);
    const issuer = server.url;
    const port = server.port;

    const registered: Registered[] = [];
    /** Access tokens whose revocation was answered 200. */
    const revoked: string[] = [];
    /** Access tokens never sent for revocation: they must still be active after the restart. */
    const kept: string[] = [];
    let failures = 0;
    /** Requests cut off by the kill (never acknowledged). */
    let interrupted = 0;
    let stop = false;
    let killed = false;

    const registerLoop = async () => {
      for (let i = 0; i < MAX_ROUNDS && !stop; i += 1) {
        try {
          const r = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read', client_name: `crash ${i}` });
          if (r.status === 201) {
            registered.push({ clientId: r.body.client_id as string, secret: r.body.client_secret as string, uri: r.body.registration_client_uri as string, rat: r.body.registration_access_token as string });
          } else failures += 1;
        } catch (error) {
          if (!killed) throw error;
          interrupted += 1;
        }
      }
    };
    const tokenLoop = async () => {
      for (let i = 0; i < MAX_ROUNDS && !stop; i += 1) {
        const client = registered[Math.floor(Math.random() * registered.length)];
        if (!client) {
          await sleep(20);
          continue;
        }
        try {
          const t = await clientCredentials(issuer, client);
          if (t.status !== 200) {
            failures += 1;
            continue;
          }
          const token = t.body.access_token as string;
          if (i % 3 === 0) {
            kept.push(token);
            continue;
          }
          const res = await fetch(`${issuer}/token/revocation`, {
            method: 'POST',
            headers: { authorization: basic(client.clientId, client.secret), 'content-type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
          });
          await res.arrayBuffer();
          if (res.status === 200) revoked.push(token);
          else failures += 1;
        } catch (error) {
          if (!killed) throw error;
          interrupted += 1;
        }
      }
    };
    const loops = [registerLoop(), registerLoop(), tokenLoop(), tokenLoop(), tokenLoop()];

    // A key rotation by the CLI (a second process on the same file) while the load runs.
    await sleep(LOAD_MS / 4);
    const oldKid = decodeProtectedHeader(kept[0] ?? revoked[0]!).kid!;
    const rotated = await runCli(['keys', 'rotate', '--immediately', '--json'], env, 30_000);
    expect(rotated.code).toBe(0);
    const newKid = (JSON.parse(rotated.stdout) as { kid: string }).kid;
    expect(newKid).not.toBe(oldKid);

    // Keep the load up until the server signs with the new key (and at least LOAD_MS), then kill it mid-request.
    const signedWith = () => [...kept, ...revoked].map((t) => decodeProtectedHeader(t).kid);
    while ((Date.now() - started < LOAD_MS || !signedWith().includes(newKid)) && Date.now() - started < MAX_LOAD_MS) await sleep(100);
    killed = true;
    server.child.kill('SIGKILL');
    await server.exited;
    stop = true;
    await Promise.all(loops);
    const loadMs = Date.now() - started;

    expect(failures).toBe(0);
    expect(interrupted).toBeGreaterThan(0);
    expect(signedWith()).toEqual(expect.arrayContaining([oldKid, newKid]));
    expect(registered.length).toBeGreaterThan(10);
    expect(revoked.length).toBeGreaterThan(10);
    expect(kept.length).toBeGreaterThan(5);
    process.stdout.write(
      `crash-recovery: acknowledged before SIGKILL after ${loadMs} ms: ${registered.length} registrations, ${revoked.length} revocations, ${kept.length} more tokens; ${interrupted} requests cut off\n`,
    );

    // The same data directory, the same port (the issuer is part of every token).
    server = await startServer(env, port);

    // Every acknowledged registration is readable (RFC 7592) with its registration access token, which rotates.
    await eachLimited(registered, 8, async (c) => {
      const res = await fetch(c.uri, { headers: { authorization: `Bearer ${c.rat}` } });
      const body = (await res.json()) as Record<string, unknown>;
      expect({ status: res.status, client_id: body.client_id }).toEqual({ status: 200, client_id: c.clientId });
      expect(body.registration_access_token).toEqual(expect.any(String));
      c.rat = body.registration_access_token as string;
    });
    // ... and gets tokens with the secret it was given.
    await eachLimited(registered, 8, async (c) => {
      expect((await clientCredentials(server!.url, c)).status).toBe(200);
    });

    // Every acknowledged revocation holds; tokens never revoked are still active (the control).
    await eachLimited(revoked, 8, async (t) => {
      expect(await introspect(issuer, t)).toEqual({ active: false });
    });
    await eachLimited(kept, 8, async (t) => {
      expect(await introspect(issuer, t)).toMatchObject({ active: true, jti: decodeJwt(t).jti });
    });

    // The keys: both are published, and every token issued before the crash verifies against /jwks.
    const jwks = (await (await fetch(`${issuer}/jwks`)).json()) as JSONWebKeySet;
    expect(jwks.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([oldKid, newKid]));
    const keySet = createLocalJWKSet(jwks);
    for (const t of [...kept, ...revoked]) await expect(jwtVerify(t, keySet, { issuer, audience: RESOURCE })).resolves.toBeDefined();
    const byKid = (kid: string, list: string[]) => list.find((t) => decodeProtectedHeader(t).kid === kid);
    for (const [token, isRevoked] of [
      [byKid(oldKid, revoked), true],
      [byKid(newKid, kept) ?? byKid(newKid, revoked), undefined],
    ] as const) {
      expect(token).toBeDefined();
      const verified = await runCli(['verify', token!, '--json'], env);
      expect(verified.code).toBe(0);
      const report = JSON.parse(verified.stdout) as Record<string, unknown>;
      expect(report).toMatchObject({ signature: 'valid', kid: decodeProtectedHeader(token!).kid });
      if (isRevoked) expect(report.revoked).toBe(true);
    }

    // The audit log verifies, and holds a record of everything acknowledged.
    const chain = await runCli(['audit', 'verify'], env);
    expect(chain.stdout).toMatch(/^audit log OK: /);
    expect(chain.code).toBe(0);
    const exported = await runCli(['audit', 'export'], env, 60_000);
    expect(exported.code).toBe(0);
    const records = exported.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string; client_id?: string; details?: Record<string, unknown> });
    const registeredIds = new Set(records.filter((r) => r.type === 'client.registered').map((r) => r.client_id));
    expect(registered.filter((c) => !registeredIds.has(c.clientId))).toEqual([]);
    const issuedJtis = new Set(records.filter((r) => r.type === 'token.issued').map((r) => r.details?.jti));
    expect([...kept, ...revoked].map((t) => decodeJwt(t).jti).filter((jti) => !issuedJtis.has(jti))).toEqual([]);
    const revokedJtis = new Set(records.filter((r) => r.type === 'token.revoked').map((r) => r.details?.jti));
    expect(revoked.map((t) => decodeJwt(t).jti).filter((jti) => !revokedJtis.has(jti))).toEqual([]);
    expect(records.some((r) => r.type.startsWith('key.'))).toBe(true);

    process.stdout.write(`crash-recovery: whole test ${Date.now() - started} ms\n`);
  }, 120_000);
});
