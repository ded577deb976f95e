import { createServer } from 'node:http';
import type { Server } from 'node:http';
import Koa from 'koa';
import type { Registry } from 'prom-client';

import { metricsRoute } from '../../server/metrics/route.js';

/** One sample of a Prometheus text exposition: metric name, labels, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text format (the subset prom-client writes: no timestamps, escaped label values). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

/** Sum of the samples named `name` whose labels include every label in `where`. */
export function total(samples: Sample[], name: string, where: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** A listener that serves only the metrics admin route, for tests before the admin listener serves it. */
export async function metricsListener(registry: Registry): Promise<{ url: string; server: Server }> {
  const route = metricsRoute(registry);
  const app = new Koa();
  app.use(async (ctx) => {
    if (ctx.method === route.method && ctx.path === route.path) await route.handle(ctx);
  });
  const server = createServer(app.callback());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  return { url: `http://127.0.0.1:${address.port}`, server };
}

export async function scrape(url: string): Promise<{ samples: Sample[]; text: string; contentType: string | null; status: number }> {
  const res = await fetch(`${url}/metrics`);
  const text = await res.text();
  return { samples: res.status === 200 ? parseExposition(text) : [], text, contentType: res.headers.get('content-type'), status: res.status };
}
