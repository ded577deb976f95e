// autocannon on loopback with per-request material: every request takes the next item of a pre-generated pool.
import autocannon from 'autocannon';

/**
 * Drives `url` for `seconds` with `connections` keep-alive connections (at most `rate` requests per second over all of
 * them when given, else as fast as the server answers). `next()` returns the next request
 * ({ method, path, headers, body }) or undefined once the pre-generated pool is used up: from then on only cheap
 * `GET /healthz` requests go out (never used-up material), they are not counted, the measured window ends at that
 * moment, and the result says `exhausted`.
 * A response counts as a success only if it is 2xx and `verify(body)` accepts it (a 200 `{"active":false}` is not
 * a success); `onResponse(status, body, context)` sees every response (refresh rotation feeds the new token back);
 * `context` is the connection's, the object `next(context)` was given for the request being answered.
 */
export function runLoad({ url, seconds, connections, next, verify, onResponse, rate }) {
  let exhaustedAt;
  let instance;
  let ok = 0;
  let unexpected = 0;
  const request = {
    setupRequest(req, context) {
      const r = exhaustedAt === undefined ? next(context) : undefined;
      if (!r) {
        if (exhaustedAt === undefined) {
          exhaustedAt = process.hrtime.bigint();
          setImmediate(() => instance?.stop());
        }
        return { ...req, method: 'GET', path: '/healthz', headers: {}, body: undefined, parked: true };
      }
      return { ...req, method: r.method ?? 'POST', path: r.path, headers: r.headers, body: r.body };
    },
    onResponse(status, body, context) {
      if (exhaustedAt !== undefined) return;
      if (status >= 200 && status < 300) {
        if (!verify || verify(body)) ok += 1;
        else unexpected += 1;
      }
      onResponse?.(status, body, context);
    },
  };
  // autocannon's own histogram keeps whole milliseconds; keep every 2xx latency to report sub-millisecond percentiles.
  const latencies = [];
  const started = process.hrtime.bigint();
  const cpuBefore = process.cpuUsage();
  return new Promise((resolve, reject) => {
    instance = autocannon(
      { url, connections, duration: seconds, pipelining: 1, timeout: 30, requests: [request], ...(rate ? { overallRate: rate } : {}) },
      (err, result) => {
        if (err) return reject(err);
        const end = exhaustedAt ?? process.hrtime.bigint();
        const elapsed = Number(end - started) / 1e9;
        const loadCpu = process.cpuUsage(cpuBefore);
        latencies.sort((a, b) => a - b);
        const at = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : undefined);
        const r2 = (v) => (v === undefined ? undefined : Math.round(v * 100) / 100);
        const statusCodes = Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([k, v]) => [k, v.count]));
        resolve({
          elapsedSeconds: elapsed,
          // Responses to real requests (the /healthz fillers after exhaustion are left out).
          requests: ok + unexpected + result.non2xx,
          sent: result.requests.sent,
          ok,
          rps: ok / elapsed,
          p50: r2(at(0.5)),
          p90: r2(at(0.9)),
          p99: r2(at(0.99)),
          max: r2(latencies.at(-1)),
          non2xx: result.non2xx,
          mismatches: unexpected,
          errors: result.errors,
          timeouts: result.timeouts,
          statusCodes,
          exhausted: exhaustedAt !== undefined,
          loadGeneratorCpuMicros: loadCpu.user + loadCpu.system,
        });
      },
    );
    instance.on('response', (_client, status, _bytes, ms) => {
      if (exhaustedAt === undefined && status >= 200 && status < 300) latencies.push(ms);
    });
  });
}
