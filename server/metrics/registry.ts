import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Every series agentauth exposes, in one registry per server (never prom-client's global one), so that two servers
 * in one process (tests, an embedding application) keep their own counts. docs/operations.md lists each series.
 */
export interface Metrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  readonly httpDuration: Histogram<'route' | 'method' | 'status_class'>;
  readonly tokensIssued: Counter<'grant_type' | 'tier' | 'binding' | 'token_type'>;
  readonly refusals: Counter<'route' | 'error'>;
  readonly storageDuration: Histogram<'backend' | 'store' | 'operation'>;
  readonly storageErrors: Counter<'backend' | 'store' | 'operation' | 'error'>;
  readonly auditWriteDuration: Histogram<'outcome'>;
  readonly auditBacklog: Gauge;
  readonly signingKeys: Gauge<'state'>;
  /** What the gauges read at scrape time; set once the audit log and the keyring exist (audit.ts, keys.ts). */
  readonly samplers: { auditBacklog: Sampler<number>; keyStates: Sampler<Record<string, number>> };
}

const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const STORAGE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** A callback read at scrape time, set by whoever owns the value (until then the gauge reads 0). */
export interface Sampler<T> {
  current: (() => T) | undefined;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  const registers = [registry];
  // Process metrics (CPU, memory, event loop lag, GC, handles) under their conventional names.
  collectDefaultMetrics({ register: registry });
  const auditBacklogSampler: Sampler<number> = { current: undefined };
  const keyStateSampler: Sampler<Record<string, number>> = { current: undefined };
  return {
    registry,
    samplers: { auditBacklog: auditBacklogSampler, keyStates: keyStateSampler },
    httpRequests: new Counter({
      name: 'agentauth_http_requests_total',
      help: 'HTTP requests answered, by route (the oidc-provider route or agentauth route name; "other" for any unknown path), method and status',
      labelNames: ['route', 'method', 'status'],
      registers,
    }),
    httpDuration: new Histogram({
      name: 'agentauth_http_request_duration_seconds',
      help: 'Time from a request reaching agentauth to its response being ready, by route, method and status class',
      labelNames: ['route', 'method', 'status_class'],
      buckets: HTTP_BUCKETS,
      registers,
    }),
    tokensIssued: new Counter({
      name: 'agentauth_tokens_issued_total',
      help: 'Access and refresh tokens handed out, by grant type, client tier, binding (dpop or bearer) and token type',
      labelNames: ['grant_type', 'tier', 'binding', 'token_type'],
      registers,
    }),
    refusals: new Counter({
      name: 'agentauth_refusals_total',
      help: 'Requests refused, by route and OAuth error code (invalid_grant, invalid_client, temporarily_unavailable, ...)',
      labelNames: ['route', 'error'],
      registers,
    }),
    storageDuration: new Histogram({
      name: 'agentauth_storage_operation_duration_seconds',
      help: 'Storage calls, by backend (sqlite, mongodb, embedded), store (an oidc-provider model, keys, nonces, revoked_tokens, audit, storage) and operation',
      labelNames: ['backend', 'store', 'operation'],
      buckets: STORAGE_BUCKETS,
      registers,
    }),
    storageErrors: new Counter({
      name: 'agentauth_storage_errors_total',
      help: 'Storage calls that failed, by backend, store, operation and error kind (storage_unavailable, invalid_storage_value, unreadable_record, other)',
      labelNames: ['backend', 'store', 'operation', 'error'],
      registers,
    }),
    auditWriteDuration: new Histogram({
      name: 'agentauth_audit_write_duration_seconds',
      help: 'Time from an audit event being accepted to it being durably in the store (outcome ok) or refused (outcome error)',
      labelNames: ['outcome'],
      buckets: STORAGE_BUCKETS,
      registers,
    }),
    auditBacklog: new Gauge({
      name: 'agentauth_audit_backlog',
      help: 'Audit events accepted and not yet written (queued or in the batch being written)',
      registers,
      collect() {
        this.set(auditBacklogSampler.current?.() ?? 0);
      },
    }),
    signingKeys: new Gauge({
      name: 'agentauth_signing_keys',
      help: 'Signing keys by lifecycle state (next, active, retired, archived)',
      labelNames: ['state'],
      registers,
      // Every worker of `start --workers N` reads the same key store: gathered over the workers, the count, not a sum.
      aggregator: 'max',
      collect() {
        const counts = keyStateSampler.current?.();
        if (!counts) return;
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    }),
  };
}
