import { hash } from 'node:crypto';
import type Koa from 'koa';

import { temporarilyUnavailable } from '../../adapters/oidc-adapter.js';
import { answerUnavailable } from '../http/unavailable.js';
import type { AuditEventInput } from './chain.js';

/** Anything that durably appends an audit event (server/audit/log.ts AuditLog). */
export interface AuditRecorder {
  record(event: AuditEventInput): Promise<unknown>;
}

export interface AuditTrailLog {
  error(obj: object, msg: string): void;
}

const sha256 = (value: string) => hash('sha256', value, 'hex');

/**
 * Queues an audit event for the request being handled. Any layer may call it (interaction routes, the wallet grant,
 * oidc-provider event listeners); the trail middleware writes them all before the response leaves.
 */
export function auditLater(ctx: { state: Record<string, unknown> } | undefined, event: AuditEventInput): void {
  if (!ctx) return;
  const list = (ctx.state.auditEvents ??= []) as AuditEventInput[];
  list.push(event);
}

/** Where auditTrail leaves its recorder for the request (auditNow). */
const RECORD_NOW = 'agentauthRecordAudit';

/**
 * Writes `event` now and resolves once it is durable: for a change that must be recorded before it is made (a client
 * registered or updated through RFC 7591/7592, recorded just before its write, as administrative changes are), so
 * that a change applied after its request was answered 503 still has its record. A record that cannot be written
 * throws 503 `temporarily_unavailable`, and the change is not made. Outside a request served through auditTrail (a
 * provider built for `config check`) the event is queued as auditLater would.
 */
export async function auditNow(ctx: { state: Record<string, unknown> } | undefined, event: AuditEventInput): Promise<void> {
  const record = ctx?.state[RECORD_NOW] as ((e: AuditEventInput) => Promise<unknown>) | undefined;
  if (!record) return auditLater(ctx, event);
  try {
    await record(event);
  } catch (cause) {
    throw Object.assign(temporarilyUnavailable('the authorization server cannot record this request in its audit log; retry shortly'), { cause });
  }
}

/**
 * Runs `fn` once the request's audit records are durable (at once if it has none), and never if they could not be
 * written and the request was answered 503 instead: for what may only be said of a request that went through (the
 * "token issued" log line).
 */
export function whenRecorded(ctx: { state: Record<string, unknown> } | undefined, fn: () => void): void {
  if (!ctx) return;
  const list = (ctx.state.afterAudit ??= []) as Array<() => void>;
  list.push(fn);
}

/** The header and claims of a compact JWS, undecoded when the token is not one (an opaque token). No verification. */
function jwtParts(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } | undefined {
  const first = token.indexOf('.');
  const second = token.indexOf('.', first + 1);
  if (first <= 0 || second < 0 || token.indexOf('.', second + 1) >= 0) return undefined;
  try {
    // The token was signed by this server a moment ago: plain base64url + JSON is enough to read it back.
    const header: unknown = JSON.parse(Buffer.from(token.slice(0, first), 'base64url').toString('utf8'));
    const claims: unknown = JSON.parse(Buffer.from(token.slice(first + 1, second), 'base64url').toString('utf8'));
    if (typeof header !== 'object' || header === null || typeof claims !== 'object' || claims === null) return undefined;
    return { header: header as Record<string, unknown>, claims: claims as Record<string, unknown> };
  } catch {
    return undefined;
  }
}

/** What an issued token looks like in the audit log: identifiers and a hash, never the token itself. */
export function tokenIssuedEvent(token: string, kind: 'access_token' | 'refresh_token' | 'id_token', context: { grant_type?: string; client_id?: string }): AuditEventInput {
  const details: Record<string, unknown> = { token_type_issued: kind, sha256: sha256(token), grant_type: context.grant_type };
  let sub: string | undefined;
  let clientId = context.client_id;
  const jwt = kind === 'refresh_token' ? undefined : jwtParts(token);
  if (jwt && kind === 'id_token') {
    // Who signed in, to which client, under which key, until when; the session (`sid`) logout ends.
    const { header, claims } = jwt;
    Object.assign(details, { format: 'jwt', aud: claims.aud, exp: claims.exp, kid: header.kid, sid: claims.sid, auth_time: claims.auth_time });
    sub = typeof claims.sub === 'string' ? claims.sub : undefined;
  } else if (jwt) {
    const { header, claims } = jwt;
    Object.assign(details, {
      format: 'jwt',
      jti: claims.jti,
      aud: claims.aud,
      scope: claims.scope,
      exp: claims.exp,
      jkt: (claims.cnf as { jkt?: unknown } | undefined)?.jkt,
      kid: header.kid,
      grant_id: claims.grant_id,
    });
    sub = typeof claims.sub === 'string' ? claims.sub : undefined;
    clientId = typeof claims.client_id === 'string' ? claims.client_id : clientId;
  } else if (kind === 'access_token') {
    details.format = 'opaque';
  }
  return { type: 'token.issued', ...(clientId ? { client_id: clientId } : {}), ...(sub ? { sub } : {}), details };
}

/**
 * Writes the request's audit events before its response is sent. Token responses are recorded here (one
 * token.issued per token, plus refresh.rotated). If the write fails, a successful response is replaced by 503
 * temporarily_unavailable: a token nobody recorded is never handed out, and an acknowledged event is never lost.
 */
export function auditTrail(recorder: AuditRecorder, log: AuditTrailLog): Koa.Middleware {
  return async (ctx, next) => {
    ctx.state[RECORD_NOW] = (event: AuditEventInput) => recorder.record(event);
    await next();
    const events = ((ctx.state.auditEvents as AuditEventInput[] | undefined) ?? []).slice();
    // Bound to the route oidc-provider resolved (`token`), so /token, /TOKEN and /token/ are all recorded.
    const oidc = (ctx as unknown as { oidc?: { route?: string; params?: Record<string, unknown>; client?: { clientId: string } } }).oidc;
    if (oidc?.route === 'token' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
      const body = ctx.body as Record<string, unknown>;
      const context = { grant_type: String(oidc?.params?.grant_type ?? ''), client_id: oidc?.client?.clientId };
      if (typeof body.access_token === 'string') events.push(tokenIssuedEvent(body.access_token, 'access_token', context));
      if (typeof body.refresh_token === 'string') events.push(tokenIssuedEvent(body.refresh_token, 'refresh_token', context));
      if (typeof body.id_token === 'string') events.push(tokenIssuedEvent(body.id_token, 'id_token', context));
      if (context.grant_type === 'refresh_token') {
        // A grace re-issue (server/grants/refresh-grace.ts) handed back an existing successor: no rotation happened.
        const grace = ctx.state.refreshGrace !== undefined;
        events.push({ type: grace ? 'refresh.grace_reissued' : 'refresh.rotated', ...(context.client_id ? { client_id: context.client_id } : {}), details: grace ? (ctx.state.refreshGrace as Record<string, unknown>) : {} });
      }
    }
    const after = (ctx.state.afterAudit as Array<() => void> | undefined) ?? [];
    if (events.length === 0) {
      for (const fn of after) fn();
      return;
    }
    try {
      await Promise.all(events.map((e) => recorder.record(e)));
      for (const fn of after) fn();
    } catch (err) {
      log.error({ err: err instanceof Error ? err.message : String(err), events: events.map((e) => e.type) }, 'audit events could not be written');
      if (ctx.status < 400) {
        // What the withheld answer leaves undelivered (a refresh token's rotation: server/grants/refresh-grace.ts).
        await Promise.all(((ctx.state.auditRefused as Array<() => Promise<void>> | undefined) ?? []).map((fn) => fn()));
        answerUnavailable(ctx, { error: 'temporarily_unavailable', error_description: 'the authorization server cannot record this request in its audit log; retry shortly' });
      }
    }
  };
}
