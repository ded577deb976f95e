import { join } from 'node:path';

import { SqliteStorage } from '../../adapters/sqlite.js';
import { verifyLog } from '../../server/audit/chain.js';
import { allAuditRecords } from '../support/audit.js';
import { logLines, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const SECRET = 'request-ids-client-secret-0123456789abcdef';
const CONFIG = {
  resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
  clients: [{ client_id: 'svc', client_secret: SECRET }],
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function tokenRequest(url: string, headers: Record<string, string> = {}, secret = SECRET): Promise<Response> {
  return fetch(`${url}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`svc:${secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      ...headers,
    },
    body: 'grant_type=client_credentials&scope=read',
  });
}

/** Log lines of the request with this id, once its `request` line (written last) is out. */
async function linesOf(server: RunningServer, id: string): Promise<Array<Record<string, unknown>>> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const lines = logLines(server.output()).filter((l) => l.request_id === id);
    if (lines.some((l) => l.msg === 'request') || Date.now() > deadline) return lines;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('request ids (single process, SQLite store)', () => {
  let server: RunningServer;
  let dataDir: string;

  beforeAll(async () => {
    const dir = tempDir();
    dataDir = join(dir, 'data');
    server = await startServer({ AGENTAUTH_CONFIG: writeConfig(dir, CONFIG), AGENTAUTH_DATA_DIR: dataDir });
  });
  afterAll(async () => {
    await server?.stop();
  });

  test('a token request: its id is echoed, and on every log line (with ip, pid, worker) and every audit record of it', async () => {
    const res = await tokenRequest(server.url, { 'x-request-id': 'lb-7f3a9c2e-token' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('lb-7f3a9c2e-token');

    const lines = await linesOf(server, 'lb-7f3a9c2e-token');
    const messages = lines.map((l) => l.msg);
    expect(messages).toEqual(expect.arrayContaining(['token issued', 'request']));
    for (const line of lines) {
      expect(line).toMatchObject({ ip: expect.stringMatching(/^(::ffff:)?127\.0\.0\.1$|^::1$/), pid: server.child.pid, worker: 0 });
    }
    // Lines outside any request carry pid and worker, and no request id or ip.
    const listening = logLines(server.output()).find((l) => l.msg === 'agentauth listening')!;
    expect(listening).toMatchObject({ pid: server.child.pid, worker: 0 });
    expect(listening).not.toHaveProperty('request_id');
    expect(listening).not.toHaveProperty('ip');

    // A refused request: its "request refused" line carries its (generated) id too.
    const refused = await tokenRequest(server.url, {}, 'not-the-secret-0123456789abcdef-0123456789');
    expect(refused.status).toBe(401);
    const refusedId = refused.headers.get('x-request-id')!;
    expect(refusedId).toMatch(UUID);
    expect((await linesOf(server, refusedId)).map((l) => l.msg)).toEqual(expect.arrayContaining(['request refused', 'request']));

    // A refusal quoting what the client sent: a URL's userinfo (a password in the wrong place) is not logged.
    const withPassword = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`svc:${SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=client_credentials&scope=read&resource=${encodeURIComponent('https://user:hunter2@api.example.com')}`,
    });
    const refusal = (await withPassword.json()) as { error: string; error_description: string };
    expect(withPassword.status).toBe(400);
    const passwordLines = await linesOf(server, withPassword.headers.get('x-request-id')!);
    const refusedLine = passwordLines.find((l) => l.msg === 'request refused');
    expect(refusedLine).toMatchObject({ error: refusal.error });
    expect(JSON.stringify(passwordLines)).not.toContain('hunter2');
    // The answer to the client itself may quote it back (the sender knows it); the log line names the URL without it.
    expect(String(refusedLine?.error_description ?? refusedLine?.error_detail ?? '')).toBe(refusal.error_description.replace('user:hunter2@', '[redacted]@'));

    // The audit records of the token request (written before the response left) carry its id; the chains verify.
    const storage = new SqliteStorage({ dataDir });
    await storage.init();
    try {
      const records = await allAuditRecords(storage.audit);
      const mine = records.filter((r) => r.details.request_id === 'lb-7f3a9c2e-token');
      expect(mine.map((r) => r.type)).toEqual(['token.issued']);
      expect(mine[0]!.client_id).toBe('svc');
      // Records written outside any request (the first key, at start) have no request id, and still verify.
      expect(records.find((r) => r.type === 'key.generated')?.details).not.toHaveProperty('request_id');
      expect(verifyLog(records).ok).toBe(true);
    } finally {
      await storage.close();
    }
  });

  test('an invalid X-Request-Id is replaced by a generated one; a valid traceparent gives its trace id', async () => {
    for (const bad of ['', 'has space', 'x'.repeat(129), 'quote"d', 'semi;colon', 'ümlaut']) {
      const res = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': bad } });
      expect(res.headers.get('x-request-id')).toMatch(UUID);
      expect((await linesOf(server, res.headers.get('x-request-id')!)).map((l) => l.msg)).toContain('request');
    }
    const longest = 'a'.repeat(128);
    expect((await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': longest } })).headers.get('x-request-id')).toBe(longest);

    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const traced = await tokenRequest(server.url, { traceparent });
    expect(traced.headers.get('x-request-id')).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect((await linesOf(server, '4bf92f3577b34da6a3ce929d0e0e4736')).map((l) => l.msg)).toEqual(expect.arrayContaining(['token issued', 'request']));
    // X-Request-Id wins over traceparent; an invalid traceparent (all-zero trace id) is ignored.
    const both = await fetch(`${server.url}/healthz`, { headers: { traceparent, 'x-request-id': 'edge-1' } });
    expect(both.headers.get('x-request-id')).toBe('edge-1');
    const zero = await fetch(`${server.url}/healthz`, { headers: { traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' } });
    expect(zero.headers.get('x-request-id')).toMatch(UUID);
  });

  test('without TRUST_PROXY, X-Forwarded-For does not set the logged ip', async () => {
    const res = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'no-proxy-1', 'x-forwarded-for': '203.0.113.9' } });
    expect(res.status).toBe(200);
    const [line] = await linesOf(server, 'no-proxy-1');
    expect(line?.ip).not.toBe('203.0.113.9');
  });
});

describe('request ids behind a proxy and with workers', () => {
  test('TRUST_PROXY=true: the logged ip is the first X-Forwarded-For address', async () => {
    const server = await startServer({ AGENTAUTH_DATA_DIR: join(tempDir(), 'data'), TRUST_PROXY: 'true' });
    try {
      await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'proxied-1', 'x-forwarded-for': '203.0.113.9, 10.0.0.2' } });
      const [line] = await linesOf(server, 'proxied-1');
      expect(line).toMatchObject({ msg: 'request', ip: '203.0.113.9' });
    } finally {
      await server.stop();
    }
  });

  test('--workers 2: each line carries its worker id (1 or 2) and that worker\'s pid', async () => {
    const server = await startServer({ AGENTAUTH_DATA_DIR: join(tempDir(), 'data') }, undefined, { args: ['--workers', '2'], listening: 2 });
    try {
      const listening = logLines(server.output()).filter((l) => l.msg === 'agentauth listening');
      expect(listening.map((l) => l.worker).sort()).toEqual([1, 2]);
      expect(new Set(listening.map((l) => l.pid)).size).toBe(2);
      expect(listening.map((l) => l.pid)).not.toContain(server.child.pid);
      const primary = logLines(server.output()).find((l) => l.msg === 'starting workers');
      expect(primary).toMatchObject({ pid: server.child.pid, worker: 0 });
      await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'worker-req-1' } });
      const [line] = await linesOf(server, 'worker-req-1');
      expect([1, 2]).toContain(line?.worker);
      expect(listening.find((l) => l.worker === line?.worker)?.pid).toBe(line?.pid);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
