import { PassThrough } from 'node:stream';

import Koa from 'koa';
import request from 'supertest';

import { revokesOneOf } from '../../adapters/types.js';
import type { AuditRecord, AuditStore, RevocationKeys } from '../../adapters/types.js';
import { chainRecords, computeHash, verifyChain } from '../../server/audit/chain.js';
import { AuditLog } from '../../server/audit/log.js';
import { currentRequest, requestId, requestIdFrom, traceIdOf } from '../../server/http/request-id.js';
import { createLogger, withoutUserinfo } from '../../server/logger.js';
import { cliLine } from '../../server/cli-context.js';

/** The smallest AuditStore: one chain in an array. */
class ArrayAuditStore implements AuditStore {
  readonly records: AuditRecord[] = [];
  async head() {
    return this.records.at(-1);
  }
  async insertBatch(records: AuditRecord[]) {
    this.records.push(...records.map((r) => structuredClone(r)));
    return records.length;
  }
  async list(fromSeq: number, limit: number) {
    return this.records.filter((r) => r.seq >= fromSeq).slice(0, limit);
  }
  async chains() {
    return this.records.length > 0 ? [''] : [];
  }
  async strays() {
    return [];
  }
  async revocations(keys: RevocationKeys, limit: number) {
    return this.records.filter((r) => revokesOneOf(r, keys)).slice(0, limit);
  }
  async checkpoints() {
    return [];
  }
  async prune(): Promise<number> {
    throw new Error('not pruned');
  }
}

describe('requestIdFrom', () => {
  const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';

  test('honours a valid X-Request-Id, up to 128 characters of a safe charset', () => {
    for (const id of ['abc', '16fd4721-d5f6-4c23-b8d3-9c90e984c475', '01HZY3J5Q8M6V7K2', 'Root=1-5f8a.x_y~z:/+=', 'a'.repeat(128)]) {
      expect(requestIdFrom({ 'x-request-id': id })).toEqual({ requestId: id, source: 'x-request-id' });
    }
  });

  test('ignores an invalid X-Request-Id (length, characters, repeated header) and generates one', () => {
    for (const id of ['', 'a'.repeat(129), 'with space', 'a,b', 'a, b', 'new\nline', '"q"', '<script>', 'é']) {
      const got = requestIdFrom({ 'x-request-id': id });
      expect(got.source).toBe('generated');
      expect(got.requestId).not.toBe(id);
    }
    expect(requestIdFrom({ 'x-request-id': ['a', 'b'] }).source).toBe('generated');
    const a = requestIdFrom({});
    const b = requestIdFrom({});
    expect(a.source).toBe('generated');
    expect(a.requestId).not.toBe(b.requestId);
  });

  test('takes the trace id of a valid traceparent when there is no valid X-Request-Id', () => {
    expect(requestIdFrom({ traceparent: `00-${TRACE}-00f067aa0ba902b7-01` })).toEqual({ requestId: TRACE, source: 'traceparent' });
    expect(requestIdFrom({ 'x-request-id': 'bad id', traceparent: `00-${TRACE}-00f067aa0ba902b7-00` })).toEqual({ requestId: TRACE, source: 'traceparent' });
    expect(requestIdFrom({ 'x-request-id': 'edge-1', traceparent: `00-${TRACE}-00f067aa0ba902b7-01` }).requestId).toBe('edge-1');
  });

  test('traceIdOf follows W3C Trace Context: lower-case hex, no all-zero ids, version ff invalid, version 00 has four fields', () => {
    expect(traceIdOf(`00-${TRACE}-00f067aa0ba902b7-01`)).toBe(TRACE);
    // A future version may append fields.
    expect(traceIdOf(`01-${TRACE}-00f067aa0ba902b7-01-future`)).toBe(TRACE);
    for (const bad of [
      `00-${TRACE.toUpperCase()}-00f067aa0ba902b7-01`,
      `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
      `00-${TRACE}-${'0'.repeat(16)}-01`,
      `ff-${TRACE}-00f067aa0ba902b7-01`,
      `00-${TRACE}-00f067aa0ba902b7-01-extra`,
      `00-${TRACE.slice(1)}-00f067aa0ba902b7-01`,
      `00-${TRACE}-00f067aa0ba902b7`,
      'garbage',
    ]) {
      expect(traceIdOf(bad)).toBeUndefined();
    }
  });
});

describe('the requestId middleware, the logger and the audit log', () => {
  function appWith(proxy: boolean) {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => (text += d));
    const log = createLogger('info', out);
    const store = new ArrayAuditStore();
    const audit = new AuditLog(store);
    const app = new Koa();
    app.proxy = proxy;
    app.use(requestId);
    app.use(async (ctx) => {
      log.info({ event: 'grant.success', client_id: 'svc' }, 'token issued');
      await audit.record({ type: 'token.issued', client_id: 'svc', details: { jti: 'j1' } });
      // A caller that names the request itself keeps its value.
      await audit.record({ type: 'token.revoked', details: { request_id: 'set-by-caller' } });
      ctx.body = { seen: currentRequest()?.requestId };
    });
    return { app, store, lines: () => text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) };
  }

  test('the id is echoed, visible to the request, on its log lines with ip, pid and worker, and in its audit records', async () => {
    const { app, store, lines } = appWith(false);
    const res = await request(app.callback()).get('/').set('X-Request-Id', 'req-42').set('X-Forwarded-For', '203.0.113.9');
    expect(res.headers['x-request-id']).toBe('req-42');
    expect(res.body).toEqual({ seen: 'req-42' });
    const [line] = lines();
    expect(line).toMatchObject({ msg: 'token issued', request_id: 'req-42', pid: process.pid, worker: 0, service: 'agentauth' });
    // No proxy trusted: the peer address, not X-Forwarded-For.
    expect(line!.ip).toMatch(/127\.0\.0\.1|::1/);
    expect(store.records.map((r) => [r.type, r.details.request_id])).toEqual([['token.issued', 'req-42'], ['token.revoked', 'set-by-caller']]);
    expect(store.records[0]!.details).toEqual({ jti: 'j1', request_id: 'req-42' });
    expect(verifyChain(store.records).ok).toBe(true);
    // Outside a request there is no context: nothing is added.
    expect(currentRequest()).toBeUndefined();
  });

  test('with app.proxy (TRUST_PROXY=true) the ip is the first X-Forwarded-For address', async () => {
    const { app, lines } = appWith(true);
    await request(app.callback()).get('/').set('X-Forwarded-For', '203.0.113.9, 10.0.0.1');
    expect(lines()[0]).toMatchObject({ ip: '203.0.113.9' });
    expect(lines()[0]!.request_id).toEqual(expect.any(String));
  });

  test('concurrent requests keep their own ids', async () => {
    const { app, store } = appWith(false);
    const agent = request(app.callback());
    await Promise.all(Array.from({ length: 10 }, (_, i) => agent.get('/').set('X-Request-Id', `r${i}`)));
    const issued = store.records.filter((r) => r.type === 'token.issued').map((r) => r.details.request_id).sort();
    expect(issued).toEqual(Array.from({ length: 10 }, (_, i) => `r${i}`).sort());
  });

  test('a record with a request id is covered by the hash; records without one still verify', async () => {
    const store = new ArrayAuditStore();
    // A record written outside a request (and as every record was before request ids): no request_id.
    await new AuditLog(store).record({ type: 'key.generated', details: { kid: 'k1' } });
    const legacy = chainRecords(store.records.at(-1), [{ type: 'client.registered', client_id: 'a', details: { tier: 'default' } }]);
    store.records.push(...legacy);
    const app = new Koa();
    const audit = new AuditLog(store);
    app.use(requestId);
    app.use(async (ctx) => {
      await audit.record({ type: 'token.issued', client_id: 'a' });
      ctx.status = 204;
    });
    await request(app.callback()).get('/').set('X-Request-Id', 'req-7');
    expect(store.records.map((r) => r.details.request_id)).toEqual([undefined, undefined, 'req-7']);
    expect(verifyChain(store.records).ok).toBe(true);

    const forged = structuredClone(store.records);
    forged[2]!.details.request_id = 'req-8';
    const verdict = verifyChain(forged);
    expect(verdict.ok).toBe(false);
    expect(verdict.problems).toEqual([expect.objectContaining({ seq: 3, kind: 'edited' })]);
    // Re-hashing the edited record is what a forger would need (and breaks nothing before it): the hash covers the field.
    expect(computeHash({ ...forged[2]!, hash: undefined })).not.toBe(store.records[2]!.hash);
  });
});

describe('withoutUserinfo (log fields quoting what a client sent)', () => {
  test('the userinfo of every URL is redacted, up to the authority\'s last @, however the slashes are spelled; nothing else changes', () => {
    expect(withoutUserinfo("unknown resource: https://user:hunter2@api.example.com is not a resource server")).toBe('unknown resource: https://[redacted]@api.example.com is not a resource server');
    expect(withoutUserinfo('https://a@b:c@host/x and HTTP://u@h2/')).toBe('https://[redacted]@host/x and HTTP://[redacted]@h2/');
    expect(withoutUserinfo('https:\\\\u:p@host/ and https:/\\u:p@host/')).toBe('https:\\\\[redacted]@host/ and https:/\\[redacted]@host/');
    expect(withoutUserinfo("URI 'https://u:p@app.example'")).toBe("URI 'https://[redacted]@app.example'");
    // Spellings the WHATWG parser reads as userinfo too (after a special scheme, any number of slashes, none included).
    for (const text of ['https:///u:hunter2@api.example.com', 'https:/u:hunter2@h', 'https:u:hunter2@h', 'HTTPS:u:hunter2@h/x', 'wss:u:hunter2@h', 'ftp:\\\\\\u:hunter2@h']) {
      expect(new URL(text).password).toBe('hunter2');
      expect({ text, logged: withoutUserinfo(text) }).toEqual({ text, logged: expect.not.stringContaining('hunter2') });
    }
    // An @ in a path, a query or an address is not userinfo.
    for (const text of ['https://host/path@x', 'https://host?who=a@b', 'mailto:a@b.example', 'admin@agent.test', 'no url here']) expect(withoutUserinfo(text)).toBe(text);
    expect(withoutUserinfo(undefined)).toBeUndefined();
  });
});

describe('cliLine (server warnings a command passes on, as its own lines)', () => {
  test('the message, then the members that say what it is about; the members every line has are left out; the redaction kept', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => (text += d));
    const log = createLogger('info', out);
    log.warn({ event: 'keys.resealed', keys: 2, transitions: 1, details: { client_secret: 's3cr3t' } }, 'key store re-sealed');
    log.warn('storage: the MongoDB-wire server is FerretDB v1');
    const lines = text.trim().split('\n').map(cliLine);
    expect(lines).toEqual(['key store re-sealed (keys=2, transitions=1, details={"client_secret":"[redacted]"})', 'storage: the MongoDB-wire server is FerretDB v1']);
    expect(cliLine('not json')).toBe('not json');
  });
});

