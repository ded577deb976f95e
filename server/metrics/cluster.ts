import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';

import { AggregatorRegistry } from 'prom-client';
import type { Registry } from 'prom-client';

/**
 * Metrics of `agentauth start --workers N`, gathered over every worker. The workers share the admin port, so a scrape
 * of GET /metrics reaches whichever worker the kernel hands the connection to; answered from that worker's registry
 * alone, successive scrapes would jump between the workers' counts (and Prometheus would read every jump down as a
 * counter reset). Instead the worker that takes the scrape asks the primary, which gathers every worker's registry
 * through prom-client's AggregatorRegistry over the cluster's IPC channel and hands back one text: counters and
 * histograms summed, gauges as each series says (`aggregator`), process metrics as prom-client defines them.
 */

const REQUEST = 'agentauth:metrics-request';
const ANSWER = 'agentauth:metrics-answer';
/** prom-client gives up on a worker that does not answer after 5 s; the asking worker waits a little longer. */
const GATHER_TIMEOUT_MS = 6000;

interface MetricsRequest {
  type: typeof REQUEST;
  id: number;
}

interface MetricsAnswer {
  type: typeof ANSWER;
  id: number;
  text?: string;
  error?: string;
}

/** Whether an IPC message is one of ours of this type (other messages share the channel: prom-client's, cluster's). */
const isMessage = (message: unknown, type: string): boolean =>
  typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type && typeof (message as { id?: unknown }).id === 'number';
const isRequest = (message: unknown): message is MetricsRequest => isMessage(message, REQUEST);
const isAnswer = (message: unknown): message is MetricsAnswer => isMessage(message, ANSWER);

/** In the primary: answers the workers' requests for the gathered metrics. Call once, before forking. */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker: Worker, message: unknown) => {
    if (!isRequest(message)) return;
    const reply = (answer: Omit<MetricsAnswer, 'type' | 'id'>) => {
      if (worker.isConnected()) worker.send({ type: ANSWER, id: message.id, ...answer });
    };
    aggregator.clusterMetrics().then(
      (text) => reply({ text }),
      (err: unknown) => reply({ error: err instanceof Error ? err.message : String(err) }),
    );
  });
}

/** The workers' metrics could not be gathered (a worker did not answer in time, or the primary is gone). */
export class MetricsGatherError extends Error {
  readonly code = 'temporarily_unavailable';

  constructor(reason: string) {
    super(`the workers' metrics could not be gathered: ${reason}`);
    this.name = 'MetricsGatherError';
  }
}

/**
 * In a worker: offers `registry` to the primary's gathering, and returns what GET /metrics serves, every worker's
 * metrics gathered by the primary. Rejects with MetricsGatherError when that fails.
 */
export function clusterMetricsGatherer(registry: Registry): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one installs prom-client's worker-side listener that answers the primary with setRegistries' registries.
  new AggregatorRegistry();
  let next = 0;
  const waiting = new Map<number, { resolve(text: string): void; reject(err: Error): void; timer: NodeJS.Timeout }>();
  process.on('message', (message: unknown) => {
    if (!isAnswer(message)) return;
    const pending = waiting.get(message.id);
    if (!pending) return;
    waiting.delete(message.id);
    clearTimeout(pending.timer);
    if (typeof message.text === 'string') pending.resolve(message.text);
    else pending.reject(new MetricsGatherError(message.error ?? 'no answer'));
  });
  return () =>
    new Promise<string>((resolve, reject) => {
      // Only a cluster worker asks: any other process with an IPC channel (a test runner's child) has no primary to answer.
      if (!cluster.isWorker) {
        reject(new MetricsGatherError('this process is not a worker of agentauth start --workers'));
        return;
      }
      if (!process.send || !process.connected) {
        reject(new MetricsGatherError('the primary process is not reachable'));
        return;
      }
      const id = next++;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new MetricsGatherError(`no answer within ${GATHER_TIMEOUT_MS} ms`));
      }, GATHER_TIMEOUT_MS);
      timer.unref();
      waiting.set(id, { resolve, reject, timer });
      process.send({ type: REQUEST, id } satisfies MetricsRequest);
    });
}
