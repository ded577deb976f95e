import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { SqliteStorage } from '../../adapters/sqlite.js';
import { allAuditRecords } from '../support/audit.js';
import { logLines, runCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * `agentauth start` runs on Node's AsyncContextFrame (server/async-context.ts): started without the flag, it replaces
 * its own process image with the same command plus `--experimental-async-context-frame`, keeping its PID. And the
 * request context still follows each request through interleaved async work: every audit record names the request
 * that caused it.
 */
const SECRET = 'async-context-client-secret-0123456789abcdef';
const CONFIG = {
  resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
  clients: [{ client_id: 'svc', client_secret: SECRET }],
};

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
const modeLine = (server: RunningServer) => logLines(server.output()).filter((l) => l.msg === 'AsyncLocalStorage implementation' || typeof l.asyncContext === 'string');

/** Starts `agentauth start` with `env`, checks it was not re-executed (no flag in its command line), runs `check`, stops it. */
async function notReexecuted(env: Record<string, string>, check: (server: RunningServer, mode: Array<Record<string, unknown>>) => Promise<void> | void): Promise<void> {
  const server = await startServer({ AGENTAUTH_DATA_DIR: join(tempDir(), 'data'), ...env });
  try {
    expect(cmdline(server.child.pid!)).not.toContain('--experimental-async-context-frame');
    await check(server, modeLine(server));
  } finally {
    await server.stop();
  }
}

function tokenRequest(url: string, requestId: string): Promise<Response> {
  return fetch(`${url}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`svc:${SECRET}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      'x-request-id': requestId,
    },
    body: 'grant_type=client_credentials&scope=read',
  });
}

const jtiOf = (jwt: string) => (JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti;

describe('agentauth start runs on AsyncContextFrame', () => {
  test('started as `node dist/server/cli.js start`: same PID, now with the flag, and it says so', async () => {
    const dir = tempDir();
    const dataDir = join(dir, 'data');
    const server = await startServer({ AGENTAUTH_CONFIG: writeConfig(dir, CONFIG), AGENTAUTH_DATA_DIR: dataDir });
    try {
      const argv = cmdline(server.child.pid!);
      expect(argv.slice(1, 4)).toEqual(['--experimental-async-context-frame', expect.stringMatching(/dist\/server\/cli\.js$/), 'start']);
      expect(modeLine(server)).toEqual([expect.objectContaining({ level: 'info', asyncContext: 'frame', reason: 'flag', pid: server.child.pid })]);

      // 60 concurrent token requests, each with its own id: each token's audit record carries the id of the request
      // that issued it (the context did not leak between interleaved requests).
      const ids = Array.from({ length: 60 }, (_, i) => `acf-${i}-${Math.random().toString(36).slice(2, 10)}`);
      const answers = await Promise.all(ids.map(async (id) => {
        const res = await tokenRequest(server.url, id);
        expect(res.status).toBe(200);
        expect(res.headers.get('x-request-id')).toBe(id);
        return { id, jti: jtiOf(((await res.json()) as { access_token: string }).access_token) };
      }));
      const storage = new SqliteStorage({ dataDir });
      await storage.init();
      try {
        const issued = (await allAuditRecords(storage.audit)).filter((r) => r.type === 'token.issued');
        for (const { id, jti } of answers) {
          const records = issued.filter((r) => r.details.jti === jti);
          expect(records.map((r) => r.details.request_id)).toEqual([id]);
        }
      } finally {
        await storage.close();
      }
      // And each request's log lines carry its own id only.
      for (const line of logLines(server.output()).filter((l) => l.msg === 'token issued')) {
        expect(ids).toContain(line.request_id);
      }
    } finally {
      await server.stop();
    }
  });

  test('--workers 2: the workers run with the flag too', async () => {
    const server = await startServer({ AGENTAUTH_DATA_DIR: join(tempDir(), 'data') }, undefined, { args: ['--workers', '2'], listening: 2 });
    try {
      const workers = modeLine(server);
      expect(workers).toHaveLength(2);
      for (const line of workers) {
        expect(line).toMatchObject({ asyncContext: 'frame', reason: 'flag' });
        expect(cmdline(line.pid as number)).toContain('--experimental-async-context-frame');
      }
      expect(cmdline(server.child.pid!)).toContain('--experimental-async-context-frame');
    } finally {
      await server.stop();
    }
  });

  test('AGENTAUTH_ASYNC_CONTEXT=hooks keeps async_hooks, no re-execution; another value is a configuration error', async () => {
    await notReexecuted({ AGENTAUTH_ASYNC_CONTEXT: 'hooks' }, (_, mode) => {
      expect(mode).toEqual([expect.objectContaining({ level: 'info', asyncContext: 'hooks', reason: 'disabled' })]);
    });
    for (const bad of ['fast', 'HOOKS', 'frame ']) {
      const res = await runCli(['start'], { AGENTAUTH_ASYNC_CONTEXT: bad, AGENTAUTH_DATA_DIR: tempDir(), PORT: '18999' });
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/^agentauth: invalid configuration: AGENTAUTH_ASYNC_CONTEXT: must be "frame" \(the default\) or "hooks"/);
    }
  });

  test('already started with the flag (command line or NODE_OPTIONS): no re-execution', async () => {
    await notReexecuted({ NODE_OPTIONS: '--experimental-async-context-frame' }, (_, mode) => {
      expect(mode).toEqual([expect.objectContaining({ asyncContext: 'frame', reason: 'flag' })]);
    });
  });

  test('where it cannot re-execute (or already did, without the flag taking): it runs on async_hooks and warns, never loops', async () => {
    await notReexecuted({ AGENTAUTH_ASYNC_CONTEXT_REEXEC: '1' }, async (server, [line]) => {
      expect(line).toMatchObject({ level: 'warn', asyncContext: 'hooks', reason: 'unsupported' });
      expect(line!.msg).toMatch(/start Node with --experimental-async-context-frame/);
      expect((await fetch(`${server.url}/.well-known/openid-configuration`)).status).toBe(200);
    });
  });
});
