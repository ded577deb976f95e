import { Counter, Gauge, Registry } from 'prom-client';

import { MetricsGatherer } from '../../server/metrics/cluster.js';
import type { GatheredWorker } from '../../server/metrics/cluster.js';
import { parseExposition, total } from '../support/metrics.js';

/**
 * The primary's side of `--workers N` metrics (server/metrics/cluster.ts): every connected worker is asked, the
 * answers are aggregated as prom-client's cluster mode does, and no gathering outlives its timeout, whatever a
 * worker does (never answers, answers late, answers twice, answers with an error).
 */

type Json = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** A worker's registry: a counter and a `max` gauge, as agentauth's tokens and signing-key series are. */
async function registryJson(tokens: number, keys: number): Promise<Json> {
  const registry = new Registry();
  new Counter({ name: 'tokens_total', help: 'tokens', registers: [registry] }).inc(tokens);
  new Gauge({ name: 'keys', help: 'keys', aggregator: 'max', registers: [registry] }).set(keys);
  return registry.getMetricsAsJSON();
}

function fakeWorkers(n: number): { workers: GatheredWorker[]; asked: Array<{ worker: number; id: number }> } {
  const asked: Array<{ worker: number; id: number }> = [];
  const workers = Array.from({ length: n }, (_, i) => ({
    id: i + 1,
    connected: true,
    isConnected() {
      return this.connected;
    },
    send(message: { id: number }) {
      asked.push({ worker: i + 1, id: message.id });
    },
  }));
  return { workers, asked };
}

const collected = (id: number, metrics: Json) => ({ type: 'agentauth:metrics-collected' as const, id, metrics });

test('every connected worker is asked once; counters are summed and a max gauge is the max', async () => {
  const { workers, asked } = fakeWorkers(3);
  (workers[2] as unknown as { connected: boolean }).connected = false;
  const gatherer = new MetricsGatherer(() => workers, 1000);
  const text = gatherer.gather();
  expect(asked.map((a) => a.worker)).toEqual([1, 2]);
  const id = asked[0]!.id;
  gatherer.answer(1, collected(id, await registryJson(10, 2)));
  expect(gatherer.pending).toBe(1);
  gatherer.answer(2, collected(id, await registryJson(5, 3)));
  const series = parseExposition(await text);
  expect(total(series, 'tokens_total', {})).toBe(15);
  expect(total(series, 'keys', {})).toBe(3);
  expect(gatherer.pending).toBe(0);
});

test('a worker that never answers: the gathering rejects after its timeout and nothing of it is kept; its late answer is dropped', async () => {
  const { workers, asked } = fakeWorkers(2);
  const gatherer = new MetricsGatherer(() => workers, 100);
  for (let round = 0; round < 5; round += 1) {
    const text = gatherer.gather();
    const id = asked.at(-1)!.id;
    gatherer.answer(1, collected(id, await registryJson(1, 1)));
    await expect(text).rejects.toThrow('no answer within 100 ms from 1 of 2 workers');
    expect(gatherer.pending).toBe(0);
    gatherer.answer(2, collected(id, await registryJson(1, 1)));
    expect(gatherer.pending).toBe(0);
  }
});

test('an answer counted once per worker: a second answer from the same worker does not stand in for another', async () => {
  const { workers, asked } = fakeWorkers(2);
  const gatherer = new MetricsGatherer(() => workers, 100);
  const text = gatherer.gather();
  const id = asked[0]!.id;
  gatherer.answer(1, collected(id, await registryJson(1, 1)));
  gatherer.answer(1, collected(id, await registryJson(1, 1)));
  await expect(text).rejects.toThrow('from 1 of 2 workers');
  // A worker that was not asked is not counted either.
  const again = gatherer.gather();
  const next = asked.at(-1)!.id;
  gatherer.answer(7, collected(next, await registryJson(1, 1)));
  await expect(again).rejects.toThrow('from 2 of 2 workers');
});

test('a worker that answers with an error fails the gathering at once; no connected worker fails it at once', async () => {
  const { workers, asked } = fakeWorkers(2);
  const gatherer = new MetricsGatherer(() => workers, 5000);
  const text = gatherer.gather();
  gatherer.answer(2, { type: 'agentauth:metrics-collected', id: asked[0]!.id, error: 'registry broke' });
  await expect(text).rejects.toThrow('worker 2: registry broke');
  expect(gatherer.pending).toBe(0);
  await expect(new MetricsGatherer(() => [], 5000).gather()).rejects.toThrow('no worker is connected');
});
