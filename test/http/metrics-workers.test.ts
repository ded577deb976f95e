import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

import Koa from 'koa';

import { metricsRoute } from '../../server/metrics/route.js';
import { clusterMetricsGatherer, MetricsGatherError } from '../../server/metrics/cluster.js';
import { createMetrics } from '../../server/metrics/registry.js';
import { baseConfig, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { logLines, newKek, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { parseExposition, total } from '../support/metrics.js';

/**
 * GET /metrics under `agentauth start --workers 2` (docs/operations.md, "Metrics"): the workers share the admin port,
 * so each scrape lands on either worker; each answers with both workers' metrics, gathered by the primary, so every
 * scrape shows every token issued, whichever worker issued it and whichever answers. Before this, a scrape showed
 * only the counts of the worker that took it, and successive scrapes jumped between them.
 */

const ADMIN_TOKEN = 'metrics-workers-admin-token-0123456789abcdef';
const TOKENS = 30;

/** A POST on a connection of its own (no keep-alive), so that node:cluster hands successive requests to each worker in turn. */
function onNewConnection(url: string, path: string, init: { method: string; headers: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { method: init.method, headers: init.headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

describe('GET /metrics with --workers 2: every worker\'s metrics, whichever worker answers', () => {
  let server: RunningServer;
  let admin: string;

  beforeAll(async () => {
    const adminPort = await freePort();
    admin = `http://127.0.0.1:${adminPort}`;
    const dir = tempDir();
    server = await startServer(
      {
        AGENTAUTH_CONFIG: writeConfig(dir, { ...baseConfig(), admin: { host: '127.0.0.1', port: adminPort } }),
        AGENTAUTH_DATA_DIR: `${dir}/data`,
        AGENTAUTH_KEK: newKek(),
        AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN,
      },
      undefined,
      { args: ['--workers', '2'], listening: 2 },
    );
    const basic = `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`;
    for (let i = 0; i < TOKENS; i += 1) {
      const res = await onNewConnection(server.url, '/token', {
        method: 'POST',
        headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }).toString(),
      });
      expect(res.status).toBe(200);
    }
  });

  afterAll(async () => {
    await server?.stop();
  });

  test('both workers issued tokens (so no single worker\'s registry holds them all)', () => {
    const issuedBy = logLines(server.output())
      .filter((l) => l.msg === 'token issued')
      .map((l) => l.worker);
    expect(issuedBy).toHaveLength(TOKENS);
    expect(new Set(issuedBy)).toEqual(new Set([1, 2]));
  });

  test('six scrapes, answered by both workers, each count every token, and the key count once', async () => {
    const before = logLines(server.output()).length;
    for (let i = 0; i < 6; i += 1) {
      const res = await onNewConnection(admin, '/metrics', { method: 'GET', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(res.status).toBe(200);
      const samples = parseExposition(res.body);
      expect(total(samples, 'agentauth_tokens_issued_total', { grant_type: 'client_credentials' })).toBe(TOKENS);
      expect(total(samples, 'agentauth_http_requests_total', { route: 'token', status: '200' })).toBe(TOKENS);
      // Both workers read one key store: one active key, not one per worker.
      expect(total(samples, 'agentauth_signing_keys', { state: 'active' })).toBe(1);
      // Counters and histograms summed: the token route's duration histogram counts every request.
      expect(total(samples, 'agentauth_http_request_duration_seconds_count', { route: 'token' })).toBe(TOKENS);
    }
    const answeredBy = logLines(server.output())
      .slice(before)
      .filter((l) => l.msg === 'admin request' && l.path === '/metrics')
      .map((l) => l.worker);
    expect(new Set(answeredBy)).toEqual(new Set([1, 2]));
  });

  test('a worker that does not answer (stopped) gets the scrape a 503 within about 5 s from the other worker, and scrapes are whole again once it resumes', async () => {
    const workers = new Map<number, number>();
    for (const l of logLines(server.output())) if (typeof l.worker === 'number' && l.worker > 0) workers.set(l.worker, Number(l.pid));
    expect(workers.size).toBe(2);
    const stoppedPid = workers.get(1)!;
    const scrape = () => {
      const started = Date.now();
      return onNewConnection(admin, '/metrics', { method: 'GET', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((r) => ({ ...r, ms: Date.now() - started }));
    };
    process.kill(stoppedPid, 'SIGSTOP');
    let both: Array<Promise<{ status: number; body: string; ms: number }>> = [];
    let answered: { status: number; body: string; ms: number };
    try {
      // One connection may be handed to the stopped worker and wait for it; the other reaches the running one.
      both = [scrape(), scrape()];
      answered = await Promise.race(both);
    } finally {
      process.kill(stoppedPid, 'SIGCONT');
    }
    expect(answered.status).toBe(503);
    expect(JSON.parse(answered.body)).toMatchObject({ error: 'temporarily_unavailable', error_description: expect.stringContaining("the workers' metrics could not be gathered") });
    expect(answered.ms).toBeGreaterThanOrEqual(4500);
    expect(answered.ms).toBeLessThan(8000);
    await Promise.allSettled(both);
    const whole = await scrape();
    expect(whole.status).toBe(200);
    expect(total(parseExposition(whole.body), 'agentauth_tokens_issued_total', { grant_type: 'client_credentials' })).toBe(TOKENS);
  }, 30_000);

  test('the admin credential is still required', async () => {
    const res = await onNewConnection(admin, '/metrics', { method: 'GET', headers: {} });
    expect(res.status).toBe(401);
  });
});

describe('when the workers\' metrics cannot be gathered', () => {
  test('outside a cluster worker (this test runner may have an IPC channel of its own) the gatherer sends nothing and refuses; GET /metrics answers 503 temporarily_unavailable', async () => {
    const metrics = createMetrics();
    const gather = clusterMetricsGatherer(metrics.registry);
    await expect(gather()).rejects.toBeInstanceOf(MetricsGatherError);
    const route = metricsRoute(metrics.registry, { gather });
    const app = new Koa();
    app.use(async (ctx) => route.handle(ctx));
    const listener = createServer(app.callback());
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', () => resolve()));
    try {
      const res = await fetch(`http://127.0.0.1:${(listener.address() as AddressInfo).port}/metrics`);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('5');
      expect(await res.json()).toEqual({ error: 'temporarily_unavailable', error_description: "the workers' metrics could not be gathered: this process is not a worker of agentauth start --workers" });
    } finally {
      listener.close();
    }
  });
});
