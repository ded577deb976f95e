import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';

import { AggregatorRegistry } from 'prom-client';
import type { Registry } from 'prom-client';

/**
 * Metrics of `agentauth start --workers N`, gathered over every worker. The workers share the admin port, so a scrape
 * of GET /metrics reaches whichever worker the kernel hands the connection to; answered from that worker's registry
 * alone, successive scrapes would jump between the workers' counts (and Prometheus would read every jump down as a
 * counter reset). Instead the worker that takes the scrape asks the primary, which asks every worker for its registry
 * (as JSON, over the cluster's IPC channel) and aggregates the answers with prom-client's `AggregatorRegistry.aggregate`
 * into one text: counters and histograms summed, gauges as each series says (`aggregator`), process metrics as
 * prom-client defines them.
 *
 * The gathering is ours, not prom-client's `clusterMetrics()`: that one keeps a request whose worker never answers in
 * its module-level map for good (with the answers of the workers that did), so every scrape while a worker hangs
 * grew the primary. Here a gathering that times out is dropped, and a late answer to it is ignored.
 */

const REQUEST = 'agentauth:metrics-request';
const ANSWER = 'agentauth:metrics-answer';
const COLLECT = 'agentauth:metrics-collect';
const COLLECTED = 'agentauth:metrics-collected';
/** How long the primary waits for every worker's registry. */
export const WORKER_TIMEOUT_MS = 5000;
/** The asking worker waits a little longer than the primary does. */
const GATHER_TIMEOUT_MS = WORKER_TIMEOUT_MS + 1000;

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

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

export interface CollectRequest {
  type: typeof COLLECT;
  id: number;
}

export interface Collected {
  type: typeof COLLECTED;
  id: number;
  metrics?: MetricsJson;
  error?: string;
}

/** Whether an IPC message is one of ours of this type (other messages share the channel: cluster's own). */
const isMessage = (message: unknown, type: string): boolean =>
  typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type && typeof (message as { id?: unknown }).id === 'number';
const isRequest = (message: unknown): message is MetricsRequest => isMessage(message, REQUEST);
const isAnswer = (message: unknown): message is MetricsAnswer => isMessage(message, ANSWER);
const isCollect = (message: unknown): message is CollectRequest => isMessage(message, COLLECT);
const isCollected = (message: unknown): message is Collected => isMessage(message, COLLECTED);

/** A worker as the gathering sees it (node:cluster's Worker in the server; plain objects in tests). */
export interface GatheredWorker {
  id: number;
  isConnected(): boolean;
  send(message: CollectRequest): unknown;
}

interface Gathering {
  waiting: Set<number>;
  responses: MetricsJson[];
  settle(err: Error | undefined, text?: string): void;
}

/**
 * The primary's side: asks every connected worker for its registry and aggregates the answers. At most one gathering
 * per scrape is pending, and none outlives its timeout.
 */
export class MetricsGatherer {
  #next = 0;
  readonly #pending = new Map<number, Gathering>();

  constructor(
    private readonly workers: () => readonly GatheredWorker[],
    private readonly timeoutMs = WORKER_TIMEOUT_MS,
  ) {}

  /** Gatherings waiting for a worker (0 once every one has answered or timed out). */
  get pending(): number {
    return this.#pending.size;
  }

  gather(): Promise<string> {
    const id = this.#next++;
    return new Promise<string>((resolve, reject) => {
      const connected = this.workers().filter((w) => w.isConnected());
      if (connected.length === 0) {
        reject(new Error('no worker is connected'));
        return;
      }
      const timer = setTimeout(() => {
        const g = this.#pending.get(id);
        g?.settle(new Error(`no answer within ${this.timeoutMs} ms from ${g.waiting.size} of ${connected.length} workers`));
      }, this.timeoutMs);
      timer.unref();
      this.#pending.set(id, {
        waiting: new Set(connected.map((w) => w.id)),
        responses: [],
        settle: (err, text) => {
          this.#pending.delete(id);
          clearTimeout(timer);
          if (err) reject(err);
          else resolve(text ?? '');
        },
      });
      for (const w of connected) w.send({ type: COLLECT, id });
    });
  }

  /** A worker's answer: counted once per worker; an answer to a gathering already settled is dropped. */
  answer(workerId: number, message: Collected): void {
    const g = this.#pending.get(message.id);
    if (!g || !g.waiting.delete(workerId)) return;
    if (message.error !== undefined || !Array.isArray(message.metrics)) {
      g.settle(new Error(`worker ${workerId}: ${message.error ?? 'no metrics'}`));
      return;
    }
    g.responses.push(message.metrics);
    if (g.waiting.size > 0) return;
    const failed = (err: unknown) => g.settle(err instanceof Error ? err : new Error(String(err)));
    try {
      // aggregate() throws at once on a series it cannot combine (an unknown aggregator): in the primary's message
      // listener, uncaught, that would end the primary.
      AggregatorRegistry.aggregate(g.responses).metrics().then((text) => g.settle(undefined, text), failed);
    } catch (err) {
      failed(err);
    }
  }
}

/** In the primary: answers the workers' requests for the gathered metrics. Call once, before forking. */
export function serveClusterMetrics(): MetricsGatherer {
  const gatherer = new MetricsGatherer(() => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined));
  cluster.on('message', (worker: Worker, message: unknown) => {
    if (isCollected(message)) {
      gatherer.answer(worker.id, message);
      return;
    }
    if (!isRequest(message)) return;
    const reply = (answer: Omit<MetricsAnswer, 'type' | 'id'>) => {
      if (worker.isConnected()) worker.send({ type: ANSWER, id: message.id, ...answer });
    };
    gatherer.gather().then(
      (text) => reply({ text }),
      (err: unknown) => reply({ error: err instanceof Error ? err.message : String(err) }),
    );
  });
  return gatherer;
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
  let next = 0;
  const waiting = new Map<number, { resolve(text: string): void; reject(err: Error): void; timer: NodeJS.Timeout }>();
  process.on('message', (message: unknown) => {
    if (isCollect(message)) {
      // The primary gathers: this worker's registry, as JSON (nothing is sent once the primary is gone).
      const send = (answer: Collected) => {
        if (process.send && process.connected) process.send(answer);
      };
      registry.getMetricsAsJSON().then(
        (metrics) => send({ type: COLLECTED, id: message.id, metrics }),
        (err: unknown) => send({ type: COLLECTED, id: message.id, error: err instanceof Error ? err.message : String(err) }),
      );
      return;
    }
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
