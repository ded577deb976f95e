// A data directory written by the previous layout (keys.json, key-transitions.json, audit.jsonl, as the throwaway
// store AGENTAUTH_STORE=memory still writes it) is imported into the SQLite store once, at the first `agentauth start`
// with the default store: the same signing keys serve, tokens they signed still verify, the audit chains verify and
// continue, and the old files are kept as *.imported. Two different key sets for one server are refused.
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AuditRecord } from '../../adapters/types.js';
import { freePort } from '../support/ferretdb.js';
import { logLines, runCli, startServer, tempDir, writeConfig } from '../support/server.js';

const RESOURCE = 'https://api.example.com';
const CLIENT = { id: 'svc', secret: 'legacy-import-secret-0123456789abcdef' };
const CONFIG = {
  resourceServers: [{ identifier: RESOURCE, scopes: ['read'] }],
  clients: [{ client_id: CLIENT.id, client_secret: CLIENT.secret }],
};
const LEGACY_FILES = ['keys.json', 'key-transitions.json', 'audit.jsonl'];

async function issue(url: string): Promise<string> {
  const res = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${CLIENT.id}:${CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials&scope=read',
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

const jwksKids = async (url: string) => ((await (await fetch(`${url}/jwks`)).json()) as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid).sort();
const jsonLines = (path: string) => readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);

/** A data directory in the previous layout: a server on the throwaway store issued a token, then the CLI rotated the key. */
async function legacyDataDir(port: number) {
  const dir = tempDir('agentauth-legacy-import-');
  const dataDir = join(dir, 'data');
  const env = { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_CONFIG: writeConfig(dir, CONFIG) };
  const memory = { ...env, AGENTAUTH_STORE: 'memory' };
  const server = await startServer(memory, port);
  let token: string;
  try {
    token = await issue(server.url);
  } finally {
    expect(await server.stop()).toBe(0);
  }
  const rotated = await runCli(['keys', 'rotate', '--immediately'], memory);
  expect(rotated.code).toBe(0);
  for (const name of LEGACY_FILES) expect(existsSync(join(dataDir, name))).toBe(true);
  expect(existsSync(join(dataDir, 'agentauth.sqlite'))).toBe(false);
  return { dataDir, env, memory, token };
}

describe('importing a data directory in the previous layout into SQLite', () => {
  test('once, at start: logged with its counts; the same keys serve and verify the earlier token; the audit chains verify and continue; the files become *.imported', async () => {
    const port = await freePort();
    const { dataDir, env, memory, token } = await legacyDataDir(port);
    const oldKid = decodeProtectedHeader(token).kid!;
    const keys = JSON.parse(readFileSync(join(dataDir, 'keys.json'), 'utf8')) as Array<{ kid: string }>;
    const transitions = JSON.parse(readFileSync(join(dataDir, 'key-transitions.json'), 'utf8')) as unknown[];
    const audit = jsonLines(join(dataDir, 'audit.jsonl'));
    expect(keys).toHaveLength(2);
    expect(audit.map((r) => r.type)).toEqual(expect.arrayContaining(['key.generated', 'token.issued', 'key.rotated']));
    const chains = new Set(audit.map((r) => r.chain ?? ''));
    expect(chains.size).toBe(2); // the server's chain and the CLI's
    // The audit log as the previous layout verifies it: after the import the SQLite store must verify the same way.
    const before = await runCli(['audit', 'verify'], memory);
    expect(before.code).toBe(0);
    expect(before.stdout).toMatch(new RegExp(`^audit log OK: ${audit.length} records in 2 chains`));

    const server = await startServer(env, port);
    try {
      const imported = logLines(server.output()).filter((l) => l.event === 'storage.imported');
      expect(imported).toHaveLength(1);
      expect(imported[0]).toMatchObject({
        level: 'warn',
        dataDir,
        keys: 2,
        transitions: transitions.length,
        auditRecords: audit.length,
        chains: 2,
        files: LEGACY_FILES,
      });
      expect(String(imported[0]!.msg)).toContain(`(2 keys, ${transitions.length} key transitions, ${audit.length} audit records)`);
      expect(server.output()).not.toContain('generated the first signing key');

      // The imported keys, not new ones: both published, the earlier token verifies, new tokens come from the rotated key.
      expect(await jwksKids(server.url)).toEqual(keys.map((k) => k.kid).sort());
      const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`${server.url}/jwks`)), { issuer: server.url });
      expect(payload.aud).toBe(RESOURCE);
      // The same records in SQLite: verified exactly as the files were (read while the server runs on the file).
      const after = await runCli(['audit', 'verify'], env);
      expect({ code: after.code, stdout: after.stdout }).toEqual({ code: before.code, stdout: before.stdout });

      const fresh = await issue(server.url);
      expect(decodeProtectedHeader(fresh).kid).toBe(keys.find((k) => k.kid !== oldKid)!.kid);
    } finally {
      expect(await server.stop()).toBe(0);
    }

    const files = readdirSync(dataDir);
    for (const name of LEGACY_FILES) {
      expect(files).toContain(`${name}.imported`);
      expect(files).not.toContain(name);
    }
    expect(readFileSync(join(dataDir, 'audit.jsonl.imported'), 'utf8').trim().split('\n')).toHaveLength(audit.length); // kept as it was

    const verified = await runCli(['verify', token, '--json'], env);
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ signature: 'valid', kid: oldKid });

    // The server's chain (same host and port) continued from its imported head: one more record, still intact.
    const verifiedAudit = await runCli(['audit', 'verify'], env);
    expect(verifiedAudit.code).toBe(0);
    expect(verifiedAudit.stdout).toMatch(new RegExp(`^audit log OK: ${audit.length + 1} records in 2 chains`));
    const storage = new SqliteStorage({ dataDir });
    await storage.init();
    try {
      const serverChain = [...chains].find((c) => !c.endsWith('#cli'))!;
      const head = await storage.audit.head(serverChain);
      const importedHead = audit.filter((r) => r.chain === serverChain).at(-1)!;
      expect(head).toMatchObject({ seq: importedHead.seq + 1, prev_hash: importedHead.hash, type: 'token.issued' });
    } finally {
      await storage.close();
    }

    // A second start has nothing to import and serves the same keys.
    const again = await startServer(env, port);
    try {
      expect(again.output()).not.toContain('storage.imported');
      expect(await jwksKids(again.url)).toEqual(keys.map((k) => k.kid).sort());
    } finally {
      expect(await again.stop()).toBe(0);
    }
    expect(readdirSync(dataDir).filter((f) => LEGACY_FILES.includes(f))).toEqual([]);
  });

  test('refused when the SQLite store already holds other signing keys: the server exits at start naming both, and nothing is imported or renamed', async () => {
    // A data directory whose SQLite store has its own key, and a keys.json from another server's data directory.
    const { dataDir: otherDir } = await legacyDataDir(await freePort());
    const foreignKids = (JSON.parse(readFileSync(join(otherDir, 'keys.json'), 'utf8')) as Array<{ kid: string }>).map((k) => k.kid);
    const dir = tempDir('agentauth-legacy-clash-');
    const dataDir = join(dir, 'data');
    const env = { AGENTAUTH_DATA_DIR: dataDir, AGENTAUTH_CONFIG: writeConfig(dir, CONFIG) };
    const first = await startServer(env);
    const storeKids = await jwksKids(first.url);
    expect(await first.stop()).toBe(0);
    const foreign = readFileSync(join(otherDir, 'keys.json'));
    writeFileSync(join(dataDir, 'keys.json'), foreign, { mode: 0o600 });

    const res = await runCli(['start'], { ...env, PORT: String(await freePort()) });
    expect(res.code).toBe(2);
    // One line naming both key sets and the file, and what to do; no stack trace.
    const refusal = `agentauth: the store already holds signing keys (${storeKids.join(', ')}) and ${join(dataDir, 'keys.json')} holds others (${foreignKids.join(', ')}); move one of them away and start again\n`;
    expect(res.stderr).toBe(refusal);
    expect(res.stdout).not.toContain('agentauth listening');

    expect(readFileSync(join(dataDir, 'keys.json'))).toEqual(foreign);
    expect(existsSync(join(dataDir, 'keys.json.imported'))).toBe(false);
    expect((await runCli(['start'], { ...env, PORT: String(await freePort()) })).code).not.toBe(0); // refused at every start

    // The operator moves the other server's keys away: the store's own key serves, untouched.
    renameSync(join(dataDir, 'keys.json'), join(dir, 'other-keys.json'));
    const again = await startServer(env);
    try {
      expect(await jwksKids(again.url)).toEqual(storeKids);
      expect(again.output()).not.toContain('storage.imported');
    } finally {
      await again.stop();
    }
  });
});
