/** The liveness and readiness probes' paths: served exactly as spelled, to GET and HEAD only (server/app.ts probes). */
export const LIVENESS_PATH = '/healthz';
export const READINESS_PATH = '/readyz';
/** Every key agentauth ever signed with, for auditors (server/app.ts): GET and HEAD only. */
export const KEY_ARCHIVE_PATH = '/keys';

/** Whether a request is one the probes answer: the same test the probes route by, so exemptions match them exactly. */
export function isProbeRequest(ctx: { path: string; method: string }): boolean {
  return (ctx.path === LIVENESS_PATH || ctx.path === READINESS_PATH) && (ctx.method === 'GET' || ctx.method === 'HEAD');
}

const WILDCARDS = new Set(['', '0.0.0.0', '::', '[::]']);

/**
 * The URL the container health check (server/healthcheck.ts) asks: the server's PORT and HOST read as the server reads
 * them (empty means unset, so `PORT=` is 3000), a wildcard or unset HOST reached on the loopback address.
 */
export function probeUrl(env: NodeJS.ProcessEnv, probe: string): string {
  const port = env.PORT || '3000';
  const host = env.HOST ?? '';
  const target = WILDCARDS.has(host) ? '127.0.0.1' : host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `http://${target}:${port}${probe}`;
}
