#!/usr/bin/env node
/**
 * The container health check (Dockerfile HEALTHCHECK): asks the server in this container for a probe and exits 0
 * when it answers 2xx, 1 otherwise (no answer within 3 s included). The image has no curl or wget; this needs only
 * Node. Usage: `node dist/server/healthcheck.js [/healthz|/readyz]` (default /healthz: the process serves HTTP).
 * It reads PORT and HOST as the server does; a wildcard or unset HOST is reached on the loopback address.
 */
import { LIVENESS_PATH, READINESS_PATH, probeUrl } from './http/probe-paths.js';

const PROBES = new Set([LIVENESS_PATH, READINESS_PATH]);

const probe = process.argv[2] ?? LIVENESS_PATH;
if (!PROBES.has(probe)) {
  process.stderr.write(`healthcheck: the probe must be /healthz or /readyz (got ${JSON.stringify(probe)})\n`);
  process.exit(2);
}
const url = probeUrl(process.env, probe);

try {
  const res = await fetch(url, { signal: AbortSignal.timeout(3000), headers: { 'x-request-id': 'healthcheck' } });
  process.stdout.write(`${probe}: ${res.status}\n`);
  process.exit(res.ok ? 0 : 1);
} catch (err) {
  process.stdout.write(`${probe}: no answer from ${url} (${err instanceof Error ? err.message : String(err)})\n`);
  process.exit(1);
}
