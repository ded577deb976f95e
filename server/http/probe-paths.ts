/** The liveness and readiness probes' paths: served exactly as spelled, to GET and HEAD only (server/app.ts probes). */
export const LIVENESS_PATH = '/healthz';
export const READINESS_PATH = '/readyz';
/** Every key agentauth ever signed with, for auditors (server/app.ts): GET and HEAD only. */
export const KEY_ARCHIVE_PATH = '/keys';

/** Whether a request is one the probes answer: the same test the probes route by, so exemptions match them exactly. */
export function isProbeRequest(ctx: { path: string; method: string }): boolean {
  return (ctx.path === LIVENESS_PATH || ctx.path === READINESS_PATH) && (ctx.method === 'GET' || ctx.method === 'HEAD');
}
