import { StorageUnavailableError } from '../../adapters/errors.js';
import { EmbeddedStorage } from '../../adapters/memory.js';
import type { ModelName, ModelStore } from '../../adapters/types.js';
import { withDeadline } from '../../adapters/deadline.js';
import { AuditLog } from '../../server/audit/log.js';
import { measuredAudit } from '../../server/metrics/audit.js';
import type Koa from 'koa';

import { PENDING_TOKENS, requestMetrics, routeLabel } from '../../server/metrics/http.js';
import type { PendingToken } from '../../server/metrics/http.js';
import { createMetrics } from '../../server/metrics/registry.js';
import { measuredStorage } from '../../server/metrics/storage.js';
import { parseExposition, total } from '../support/metrics.js';
import { tempDir } from '../support/server.js';

const samples = async (metrics: ReturnType<typeof createMetrics>) => parseExposition(await metrics.registry.metrics());

describe('route labels', () => {
  test.each([
    ['/healthz', undefined, 'healthz'],
    ['/readyz', undefined, 'readyz'],
    ['/keys', undefined, 'key_archive'],
    ['/wallet/nonce', undefined, 'wallet_nonce'],
    ['/.well-known/oauth-authorization-server', { route: 'discovery' }, 'oauth_authorization_server_metadata'],
    ['/.well-known/openid-configuration', { route: 'discovery' }, 'discovery'],
    ['/interaction/abc_DEF-1', undefined, 'interaction'],
    ['/interaction/abc/login', undefined, 'interaction_login'],
    ['/interaction/abc/nonce', undefined, 'interaction_nonce'],
    ['/interaction-assets/login.js', undefined, 'interaction_asset'],
    ['/TOKEN/', { route: 'token' }, 'token'],
    ['/reg', { route: 'registration' }, 'registration'],
  ])('%s (oidc-provider route: %p) is labelled %s', (path, oidc, label) => {
    expect(routeLabel(path, oidc)).toBe(label);
  });

  test.each([
    ['/random-path-0123'],
    ['/HEALTHZ'],
    ['/interaction/abc/other'],
    ['/interaction-assets/../x'],
  ])('%s, which nothing serves, is "other"', (path) => {
    expect(routeLabel(path, undefined)).toBe('other');
  });

  test('a route name that is not a plain identifier is "other", never echoed', () => {
    expect(routeLabel('/x', { route: '/x?y=1' })).toBe('other');
    expect(routeLabel('/x', { route: 42 })).toBe('other');
  });
});

describe('request metrics', () => {
  const token: PendingToken = { grant_type: 'client_credentials', tier: 'standard', binding: 'dpop', token_type: 'access_token' };
  /** Runs the middleware around a handler that mints one token and answers `status` with `body`. */
  async function run(metrics: ReturnType<typeof createMetrics>, status: number, body: unknown): Promise<void> {
    const ctx = { path: '/token', method: 'POST', status: 404, body: undefined as unknown, state: {} as Record<string, unknown>, oidc: { route: 'token' } };
    await requestMetrics(metrics)(ctx as unknown as Koa.Context, async () => {
      ctx.state[PENDING_TOKENS] = [token];
      ctx.status = status;
      ctx.body = body;
    });
  }

  test('a token is counted once its response is a success', async () => {
    const metrics = createMetrics();
    await run(metrics, 200, { access_token: 'x', token_type: 'DPoP' });
    const s = await samples(metrics);
    expect(total(s, 'agentauth_tokens_issued_total', { ...token })).toBe(1);
    expect(total(s, 'agentauth_refusals_total')).toBe(0);
  });

  test('a token minted for a request that then failed (its audit record refused: 503) is not counted', async () => {
    const metrics = createMetrics();
    await run(metrics, 503, { error: 'temporarily_unavailable', error_description: 'audit log unavailable' });
    const s = await samples(metrics);
    expect(total(s, 'agentauth_tokens_issued_total')).toBe(0);
    expect(total(s, 'agentauth_refusals_total', { route: 'token', error: 'temporarily_unavailable' })).toBe(1);
    expect(total(s, 'agentauth_http_requests_total', { route: 'token', method: 'POST', status: '503' })).toBe(1);
  });

  test('an error code that is not a plain OAuth code is counted as "other"', async () => {
    const metrics = createMetrics();
    await run(metrics, 400, { error: 'Bad <script>' });
    expect(total(await samples(metrics), 'agentauth_refusals_total', { route: 'token', error: 'other' })).toBe(1);
  });
});

describe('storage metrics', () => {
  let inner: EmbeddedStorage;
  beforeEach(async () => {
    inner = new EmbeddedStorage({ dataDir: tempDir('agentauth-metrics-unit-') });
    await inner.init();
  });
  afterEach(async () => {
    await inner.close();
  });

  test('calls are timed by backend, store and operation; results pass through unchanged', async () => {
    const metrics = createMetrics();
    const storage = measuredStorage(inner, metrics);
    expect(storage.kind).toBe('embedded');
    await storage.model('Client').upsert('client-1', { client_id: 'client-1' });
    expect(await storage.model('Client').find('client-1')).toEqual({ client_id: 'client-1' });
    expect(await storage.model('Client').find('missing')).toBeUndefined();
    await storage.nonces.issue('nonce-1', 60, 'client:client-1');
    expect(await storage.nonces.consume('nonce-1')).toBe(true);
    expect(await storage.nonces.consume('nonce-1')).toBe(false);
    const s = await samples(metrics);
    const count = (store: string, operation: string) => total(s, 'agentauth_storage_operation_duration_seconds_count', { backend: 'embedded', store, operation });
    expect(count('Client', 'upsert')).toBe(1);
    expect(count('Client', 'find')).toBe(2);
    expect(count('nonces', 'consume')).toBe(2);
    expect(count('nonces', 'issue')).toBe(1);
    expect(total(s, 'agentauth_storage_errors_total')).toBe(0);
  });

  test('every store follows a storage whose stores are replaced (MongoStorage after a client replacement)', async () => {
    // MongoStorage hands out views (withDeadline) that look up its current connection's stores on every call; the
    // metrics layer must not pin the methods of the first one.
    const second = new EmbeddedStorage({ dataDir: tempDir('agentauth-metrics-unit-') });
    await second.init();
    let current = inner;
    const views = {
      keys: withDeadline(() => current.keys, 1000, 'keys'),
      audit: withDeadline(() => current.audit, 1000, 'audit'),
      nonces: withDeadline(() => current.nonces, 1000, 'nonces'),
      revokedTokens: withDeadline(() => current.revokedTokens, 1000, 'revokedTokens'),
      model: (name: ModelName) => withDeadline(() => current.model(name), 1000, name),
    };
    const replaceable = new Proxy(inner, { get: (t, prop) => (prop in views ? views[prop as keyof typeof views] : Reflect.get(t, prop)) });
    const storage = measuredStorage(replaceable, createMetrics());
    try {
      await storage.nonces.issue('before', 60, 'client:a');
      await storage.model('Client').upsert('client-before', { client_id: 'client-before' });
      current = second;
      await storage.nonces.issue('after', 60, 'client:a');
      await storage.model('Client').upsert('client-after', { client_id: 'client-after' });
      expect(await second.nonces.boundTo('after')).toBe('client:a');
      expect(await inner.nonces.boundTo('after')).toBeUndefined();
      expect(await second.model('Client').find('client-after')).toEqual({ client_id: 'client-after' });
      expect(await inner.model('Client').find('client-after')).toBeUndefined();
      expect(await storage.model('Client').find('client-before')).toBeUndefined(); // read from the new store too
    } finally {
      await second.close();
    }
  });

  test('failures are counted by error kind and rethrown as they were', async () => {
    const metrics = createMetrics();
    const down = new StorageUnavailableError('the store is down');
    const clients = inner.model('Client') as ModelStore;
    clients.find = () => Promise.reject(down);
    clients.destroy = () => Promise.reject(new Error('something else'));
    const storage = measuredStorage(inner, metrics);
    await expect(storage.model('Client').find('client-1')).rejects.toBe(down);
    // A value that must not reach a query: the store's own validation refuses it.
    await expect(storage.model('Grant').upsert('$where', {})).rejects.toMatchObject({ code: 'invalid_storage_value' });
    await expect(storage.model('Client').destroy('client-1')).rejects.toThrow('something else');
    const s = await samples(metrics);
    expect(total(s, 'agentauth_storage_errors_total', { backend: 'embedded', store: 'Client', operation: 'find', error: 'storage_unavailable' })).toBe(1);
    expect(total(s, 'agentauth_storage_errors_total', { backend: 'embedded', store: 'Grant', operation: 'upsert', error: 'invalid_storage_value' })).toBe(1);
    expect(total(s, 'agentauth_storage_errors_total', { backend: 'embedded', store: 'Client', operation: 'destroy', error: 'other' })).toBe(1);
    // Failed calls are timed too.
    expect(total(s, 'agentauth_storage_operation_duration_seconds_count', { store: 'Client', operation: 'find' })).toBe(1);
  });
});

describe('audit metrics', () => {
  test('write latency by outcome, and the backlog while events wait', async () => {
    const inner = new EmbeddedStorage({ dataDir: tempDir('agentauth-metrics-audit-') });
    await inner.init();
    try {
      const metrics = createMetrics();
      const audit = measuredAudit(new AuditLog(inner.audit), metrics);
      const writes = [audit.record({ type: 'test.one', details: {} }), audit.record({ type: 'test.two', details: {} })];
      // Both are queued until the writer's next turn.
      expect(total(await samples(metrics), 'agentauth_audit_backlog')).toBe(2);
      await Promise.all(writes);
      let s = await samples(metrics);
      expect(total(s, 'agentauth_audit_backlog')).toBe(0);
      expect(total(s, 'agentauth_audit_write_duration_seconds_count', { outcome: 'ok' })).toBe(2);

      const down = new StorageUnavailableError('the audit store is down');
      inner.audit.insertBatch = () => Promise.reject(down);
      await expect(audit.record({ type: 'test.three', details: {} })).rejects.toBe(down);
      s = await samples(metrics);
      expect(total(s, 'agentauth_audit_write_duration_seconds_count', { outcome: 'error' })).toBe(1);
      expect(total(s, 'agentauth_audit_backlog')).toBe(0);
      await audit.close();
    } finally {
      await inner.close();
    }
  });
});
