/**
 * How long a 503 asks a client to wait before retrying (RFC 9110 §10.2.3), in seconds: the storage health monitor
 * pings every second (adapters/health.ts), so by then an outage that ended has been seen to end.
 */
export const RETRY_AFTER_SECONDS = 5;

/** Answers 503 with Retry-After and the given JSON body: one wording of "not now" for every listener and route. */
export function answerUnavailable(ctx: { status: number; body: unknown; set(field: string, value: string): void }, body: Record<string, string>): void {
  ctx.status = 503;
  ctx.set('Retry-After', String(RETRY_AFTER_SECONDS));
  ctx.body = body;
}
