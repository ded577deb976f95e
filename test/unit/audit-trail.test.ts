import Koa from 'koa';
import request from 'supertest';

import { StorageUnavailableError } from '../../adapters/errors.js';
import type { AuditEventInput } from '../../server/audit/chain.js';
import { auditLater, auditTrail, tokenIssuedEvent, whenRecorded } from '../../server/audit/trail.js';

function appWith(recorder: { record(e: AuditEventInput): Promise<unknown> }, respond: (ctx: Koa.Context) => void) {
  const app = new Koa();
  const errors: string[] = [];
  app.use(auditTrail(recorder, { error: (_o, msg) => errors.push(msg) }));
  app.use(async (ctx) => respond(ctx));
  return { app, errors };
}

/** What oidc-provider's router leaves on the context of a token request (the resolved route, whatever the spelling). */
const routedToToken = (ctx: Koa.Context) => Object.assign(ctx, { oidc: { route: 'token', params: { grant_type: 'authorization_code' }, client: { clientId: 'c' } } });

// An unsigned JWT-shaped token is enough: the trail only decodes identifiers from it.
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
const jwt = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })}.${b64({ jti: 'j1', sub: 's', client_id: 'c', aud: 'https://api', scope: 'read', cnf: { jkt: 't' } })}.sig`;

describe('auditTrail', () => {
  test('records token.issued for each token in a token response before it is sent, without the token', async () => {
    const recorded: AuditEventInput[] = [];
    const { app } = appWith({ record: async (e) => recorded.push(e) }, (ctx) => {
      routedToToken(ctx);
      ctx.body = { access_token: jwt, refresh_token: 'opaque-refresh-value', token_type: 'DPoP' };
    });
    const res = await request(app.callback()).post('/TOKEN/');
    expect(res.status).toBe(200);
    expect(recorded.map((e) => [e.type, e.details?.token_type_issued])).toEqual([['token.issued', 'access_token'], ['token.issued', 'refresh_token']]);
    expect(recorded[0]).toMatchObject({ client_id: 'c', sub: 's', details: { jti: 'j1', aud: 'https://api', kid: 'k1', jkt: 't', format: 'jwt' } });
    expect(JSON.stringify(recorded)).not.toContain('opaque-refresh-value');
    expect(JSON.stringify(recorded)).not.toContain(jwt);
  });

  test('a token-shaped response on a route that is not the token endpoint is not recorded as issuance', async () => {
    const recorded: AuditEventInput[] = [];
    const { app } = appWith({ record: async (e) => recorded.push(e) }, (ctx) => {
      ctx.body = { access_token: jwt, token_type: 'Bearer' };
    });
    expect((await request(app.callback()).post('/token')).status).toBe(200);
    expect(recorded).toEqual([]);
  });

  test('a token response whose events cannot be written becomes 503 temporarily_unavailable: no unrecorded token leaves', async () => {
    const { app, errors } = appWith({ record: async () => Promise.reject(new StorageUnavailableError('down')) }, (ctx) => {
      routedToToken(ctx);
      ctx.body = { access_token: jwt, token_type: 'Bearer' };
    });
    const res = await request(app.callback()).post('/token');
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
    expect(res.body).toEqual({ error: 'temporarily_unavailable', error_description: expect.stringMatching(/audit log/) });
    expect(JSON.stringify(res.body)).not.toContain(jwt);
    expect(errors).toHaveLength(1);
  });

  test('what waits for the records (the "token issued" log line) runs once they are written, and never when they are not', async () => {
    for (const [recorder, status, ran] of [
      [{ record: async () => undefined }, 200, true],
      [{ record: async () => Promise.reject(new StorageUnavailableError('down')) }, 503, false],
    ] as const) {
      const said: string[] = [];
      const { app } = appWith(recorder, (ctx) => {
        routedToToken(ctx);
        whenRecorded(ctx, () => said.push('token issued'));
        ctx.body = { access_token: jwt, token_type: 'Bearer' };
      });
      expect((await request(app.callback()).post('/token')).status).toBe(status);
      expect(said).toEqual(ran ? ['token issued'] : []);
    }
    // A request with no records to write runs it at once.
    const said: string[] = [];
    const { app } = appWith({ record: async () => Promise.reject(new Error('not called')) }, (ctx) => {
      whenRecorded(ctx, () => said.push('done'));
      ctx.body = { ok: true };
    });
    expect((await request(app.callback()).get('/x')).status).toBe(200);
    expect(said).toEqual(['done']);
  });

  test('events queued by any layer are written; a failed write leaves an error response as it was', async () => {
    const recorded: AuditEventInput[] = [];
    const ok = appWith({ record: async (e) => recorded.push(e) }, (ctx) => {
      auditLater(ctx, { type: 'login.failed', details: { rule: 'nonce' } });
      ctx.status = 400;
      ctx.body = { error: 'access_denied' };
    });
    expect((await request(ok.app.callback()).post('/interaction/x/login')).status).toBe(400);
    expect(recorded).toEqual([{ type: 'login.failed', details: { rule: 'nonce' } }]);

    const failing = appWith({ record: async () => Promise.reject(new Error('down')) }, (ctx) => {
      auditLater(ctx, { type: 'login.failed', details: {} });
      ctx.status = 400;
      ctx.body = { error: 'access_denied' };
    });
    const res = await request(failing.app.callback()).post('/interaction/x/login');
    expect(res.status).toBe(400);
    expect(failing.errors).toHaveLength(1);
  });

  test('opaque access tokens are recorded by hash only', () => {
    const e = tokenIssuedEvent('opaque-access-token-value', 'access_token', { client_id: 'c', grant_type: 'client_credentials' });
    expect(e.details).toMatchObject({ format: 'opaque', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(JSON.stringify(e)).not.toContain('opaque-access-token-value');
  });

  test('JWT access tokens are recorded by their identifiers (jti, kid, aud, cnf.jkt) and hash, never the token', () => {
    const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const jwt = `${part({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })}.${part({
      jti: 'j1', sub: 'did:pkh:eip155:1:0xA', client_id: 'agent-1', aud: 'https://api.example.com', scope: 'read', exp: 2000000000,
      cnf: { jkt: 'thumb' },
    })}.c2lnbmF0dXJl`;
    const e = tokenIssuedEvent(jwt, 'access_token', { client_id: 'ignored-when-claimed', grant_type: 'client_credentials' });
    expect(e).toMatchObject({ type: 'token.issued', client_id: 'agent-1', sub: 'did:pkh:eip155:1:0xA' });
    expect(e.details).toMatchObject({ format: 'jwt', jti: 'j1', kid: 'k1', aud: 'https://api.example.com', scope: 'read', exp: 2000000000, jkt: 'thumb' });
    expect(JSON.stringify(e)).not.toContain(jwt);
    // Not a compact JWS (too many parts, undecodable parts): recorded as opaque.
    for (const odd of [`${jwt}.extra`, 'a.b.c', '..']) expect(tokenIssuedEvent(odd, 'access_token', {}).details).toMatchObject({ format: 'opaque' });
  });
});
