import { randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { Wallet } from 'ethers';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

import { loadConfig } from '../../server/config.js';
import { createLogger } from '../../server/logger.js';
import { metricsRoute } from '../../server/metrics/route.js';
import { start } from '../../server/start.js';
import type { Running } from '../../server/start.js';
import { baseConfig, introspect, register, REDIRECT, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { metricsListener, scrape, total } from '../support/metrics.js';
import type { Sample } from '../support/metrics.js';
import { basic, form, walletCode } from '../support/races.js';
import { mongoUri } from '../support/storages.js';
import { newKek, tempDir, uniqueDbName, writeConfig } from '../support/server.js';

/**
 * Prometheus metrics (issue 13 item 2): two servers run in this process, one on MongoDB (FerretDB) and one on the
 * SQLite store, each with its own registry. After real traffic the scrape of each shows its own counts, with route
 * labels bounded to route names.
 */
const CONFIG = baseConfig({ registration: { quota: { max: 1000 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } });

async function startInProcess(store: 'mongodb' | 'sqlite'): Promise<{ running: Running; url: string }> {
  const port = await freePort();
  const env: Record<string, string> = { AGENTAUTH_CONFIG: writeConfig(tempDir(), CONFIG), AGENTAUTH_KEK: newKek(), PORT: String(port), HOST: '127.0.0.1' };
  if (store === 'mongodb') Object.assign(env, { MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('metrics') });
  else env.AGENTAUTH_DATA_DIR = tempDir('agentauth-metrics-');
  const running = await start(loadConfig(env), createLogger('silent'));
  return { running, url: `http://127.0.0.1:${port}` };
}

const tokenRequest = (url: string, auth: string, params: Record<string, string>, headers: Record<string, string> = {}) =>
  fetch(`${url}/token`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: form(params) });

const wallet = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');

/** A public client signed in by the wallet holder (the real login and consent pages), then one refresh. */
async function codeFlowAndRefresh(url: string): Promise<void> {
  const created = await register(url, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'read' });
  expect(created.status).toBe(201);
  const clientId = created.body.client_id as string;
  const { code, verifier } = await walletCode(url, clientId, wallet);
  const redeemed = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT, resource: RESOURCE, client_id: clientId }),
  });
  const tokens = (await redeemed.json()) as { refresh_token?: string };
  expect(redeemed.status).toBe(200);
  expect(typeof tokens.refresh_token).toBe('string');
  const refreshed = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, resource: RESOURCE, client_id: clientId }),
  });
  expect(refreshed.status).toBe(200);
}

async function dpopProof(htu: string): Promise<string> {
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  return new SignJWT({ htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(publicKey) })
    .sign(privateKey);
}

describe('Prometheus metrics', () => {
  let a: { running: Running; url: string };
  let b: { running: Running; url: string };
  let scrapeA: { url: string; server: Server };
  let scrapeB: { url: string; server: Server };

  beforeAll(async () => {
    a = await startInProcess('mongodb');
    b = await startInProcess('sqlite');
    scrapeA = await metricsListener(a.running.agentauth.metrics.registry);
    scrapeB = await metricsListener(b.running.agentauth.metrics.registry);
  });
  afterAll(async () => {
    await a?.running.shutdown();
    await b?.running.shutdown();
    scrapeA?.server.close();
    scrapeB?.server.close();
  });

  test('the route answers Prometheus text with the registry content type, and is an admin route', async () => {
    const res = await scrape(scrapeA.url);
    expect(res.status).toBe(200);
    expect(res.contentType).toBe(a.running.agentauth.metrics.registry.contentType);
    expect(res.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(res.text).toMatch(/^# HELP agentauth_http_requests_total /m);
    expect(res.text).toMatch(/^# TYPE agentauth_http_request_duration_seconds histogram$/m);
    const route = metricsRoute(a.running.agentauth.metrics.registry);
    expect([route.method, route.path, route.auth]).toEqual(['GET', '/metrics', 'admin']);
  });

  describe('after traffic', () => {
    let before: Sample[];
    let after: Sample[];
    let afterText: string;
    let randomPath: string;

    beforeAll(async () => {
      before = (await scrape(scrapeA.url)).samples;
      const url = a.url;

      // A client registration (open mode, client_credentials allowed for anonymous clients).
      const created = await register(url, { client_name: 'metrics', grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
      expect(created.status).toBe(201);
      const client = basic(created.body.client_id as string, created.body.client_secret as string);

      // A bearer client_credentials token, then a DPoP-bound one.
      const bearer = await tokenRequest(url, client, { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' });
      expect(bearer.status).toBe(200);
      const bearerBody = (await bearer.json()) as { access_token: string; token_type: string };
      expect(bearerBody.token_type).toBe('Bearer');
      const dpop = await tokenRequest(url, client, { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }, { dpop: await dpopProof(`${url}/token`) });
      expect(dpop.status).toBe(200);
      expect(((await dpop.json()) as { token_type: string }).token_type).toBe('DPoP');

      // Refused token requests: a wrong secret, and a resource no resource server has.
      const wrongSecret = await tokenRequest(url, basic(created.body.client_id as string, 'not-the-secret'), { grant_type: 'client_credentials', resource: RESOURCE });
      expect(wrongSecret.status).toBe(401);
      const badTarget = await tokenRequest(url, client, { grant_type: 'client_credentials', resource: 'https://unknown.example.com', scope: 'read' });
      expect(badTarget.status).toBe(400);
      expect(((await badTarget.json()) as { error: string }).error).toBe('invalid_target');

      // An introspection, and the token endpoint spelled in capitals (the same route for oidc-provider).
      expect((await introspect(url, bearerBody.access_token)).active).toBe(true);
      const upper = await fetch(`${url}/TOKEN`, { method: 'POST', headers: { authorization: client, 'content-type': 'application/x-www-form-urlencoded' }, body: form({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }) });
      expect(upper.status).toBe(200);

      // agentauth's own refusal (a nonce request naming no client), and one oidc-provider renders as a page.
      const nonce = await fetch(`${url}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      expect(nonce.status).toBe(400);
      const page = await fetch(`${url}/auth?client_id=no-such-client&response_type=code&scope=openid`, { headers: { accept: 'text/html' } });
      expect(page.status).toBe(400);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);

      // A person's sign-in on the login and consent pages, the code redeemed, the refresh token rotated.
      await codeFlowAndRefresh(url);

      // agentauth's own routes, and a path nobody serves.
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect((await fetch(`${url}/.well-known/oauth-authorization-server`)).status).toBe(200);
      randomPath = `/no-such-${randomBytes(6).toString('hex')}`;
      expect((await fetch(`${url}${randomPath}`)).status).toBe(404);

      const res = await scrape(scrapeA.url);
      after = res.samples;
      afterText = res.text;
    });

    const delta = (name: string, where: Record<string, string>) => total(after, name, where) - total(before, name, where);

    test('requests are counted by the route oidc-provider resolved, method and status', () => {
      expect(delta('agentauth_http_requests_total', { route: 'registration', method: 'POST', status: '201' })).toBe(2);
      // Bearer, DPoP, the /TOKEN spelling, the code redemption and the refresh; then the two refusals.
      expect(delta('agentauth_http_requests_total', { route: 'token', method: 'POST', status: '200' })).toBe(5);
      expect(delta('agentauth_http_requests_total', { route: 'token', method: 'POST', status: '401' })).toBe(1);
      expect(delta('agentauth_http_requests_total', { route: 'token', method: 'POST', status: '400' })).toBe(1);
      expect(delta('agentauth_http_requests_total', { route: 'introspection', method: 'POST', status: '200' })).toBe(1);
      expect(delta('agentauth_http_requests_total', { route: 'healthz', method: 'GET', status: '200' })).toBe(1);
      expect(delta('agentauth_http_requests_total', { route: 'oauth_authorization_server_metadata', method: 'GET', status: '200' })).toBe(1);
      // The latency histogram counts the same requests.
      expect(delta('agentauth_http_request_duration_seconds_count', { route: 'token', method: 'POST', status_class: '2xx' })).toBe(5);
      // The sign-in went through oidc-provider's authorization endpoint and agentauth's interaction pages.
      expect(delta('agentauth_http_requests_total', { route: 'authorization', method: 'GET' })).toBeGreaterThanOrEqual(1);
      expect(delta('agentauth_http_requests_total', { route: 'interaction', method: 'GET', status: '200' })).toBeGreaterThanOrEqual(1);
      expect(delta('agentauth_http_requests_total', { route: 'interaction_login', method: 'POST' })).toBe(1);
      expect(delta('agentauth_http_request_duration_seconds_count', { route: 'token', method: 'POST', status_class: '4xx' })).toBe(2);
      expect(total(after, 'agentauth_http_request_duration_seconds_bucket', { route: 'token', le: '+Inf' })).toBe(total(after, 'agentauth_http_request_duration_seconds_count', { route: 'token' }));
    });

    test('route labels are bounded: an unknown path counts as "other", never as itself', () => {
      expect(delta('agentauth_http_requests_total', { route: 'other', method: 'GET', status: '404' })).toBe(1);
      expect(afterText).not.toContain(randomPath);
      expect(afterText).not.toContain('TOKEN');
      const routes = new Set(after.filter((s) => s.name === 'agentauth_http_requests_total').map((s) => s.labels.route));
      for (const route of routes) expect(route).toMatch(/^[a-z][a-z0-9_]*$/);
    });

    test('tokens issued are counted by grant type, tier and binding', () => {
      const cc = { grant_type: 'client_credentials', tier: 'standard', token_type: 'access_token' };
      expect(delta('agentauth_tokens_issued_total', { ...cc, binding: 'bearer' })).toBe(2);
      expect(delta('agentauth_tokens_issued_total', { ...cc, binding: 'dpop' })).toBe(1);
      // The public client's tokens: bearer (no DPoP), a refresh token with each access token.
      const pub = { tier: 'standard', binding: 'bearer' };
      expect(delta('agentauth_tokens_issued_total', { ...pub, grant_type: 'authorization_code', token_type: 'access_token' })).toBe(1);
      expect(delta('agentauth_tokens_issued_total', { ...pub, grant_type: 'authorization_code', token_type: 'refresh_token' })).toBe(1);
      expect(delta('agentauth_tokens_issued_total', { ...pub, grant_type: 'refresh_token', token_type: 'access_token' })).toBe(1);
      expect(delta('agentauth_tokens_issued_total', { ...pub, grant_type: 'refresh_token', token_type: 'refresh_token' })).toBe(1);
      // Refused requests issued nothing.
      expect(delta('agentauth_tokens_issued_total', {})).toBe(7);
    });

    test('refusals are counted by route and OAuth error code', () => {
      expect(delta('agentauth_refusals_total', { route: 'token', error: 'invalid_client' })).toBe(1);
      expect(delta('agentauth_refusals_total', { route: 'token', error: 'invalid_target' })).toBe(1);
      // The 404 for an unknown path carries no OAuth error: not a refusal.
      expect(delta('agentauth_refusals_total', { route: 'other' })).toBe(0);
      expect(delta('agentauth_refusals_total', { route: 'wallet_nonce', error: 'invalid_request' })).toBe(1);
      // An error page carries no JSON body: the code comes from oidc-provider's authorization.error event.
      expect(delta('agentauth_refusals_total', { route: 'authorization', error: 'invalid_client' })).toBe(1);
      expect(delta('agentauth_refusals_total', {})).toBe(4);
    });

    test('storage calls are timed by backend, store and operation', () => {
      expect(delta('agentauth_storage_operation_duration_seconds_count', { backend: 'mongodb', store: 'Client', operation: 'upsert' })).toBeGreaterThanOrEqual(1);
      // Opaque or JWT, every DPoP proof's jti goes through replay detection.
      expect(delta('agentauth_storage_operation_duration_seconds_count', { backend: 'mongodb', store: 'ReplayDetection', operation: 'insertOnce' })).toBeGreaterThanOrEqual(1);
      expect(delta('agentauth_storage_operation_duration_seconds_count', { backend: 'mongodb', store: 'audit', operation: 'insertBatch' })).toBeGreaterThanOrEqual(1);
      expect(total(after, 'agentauth_storage_operation_duration_seconds_count', { backend: 'sqlite' })).toBe(0);
      expect(total(after, 'agentauth_storage_errors_total')).toBe(0);
    });

    test('audit writes are timed and the backlog is exposed', () => {
      // One token.issued per token handed out, plus the registrations.
      expect(delta('agentauth_audit_write_duration_seconds_count', { outcome: 'ok' })).toBeGreaterThanOrEqual(9);
      expect(delta('agentauth_audit_write_duration_seconds_count', { outcome: 'error' })).toBe(0);
      expect(after.some((s) => s.name === 'agentauth_audit_backlog')).toBe(true);
      expect(total(after, 'agentauth_audit_backlog')).toBe(0);
    });

    test('signing keys are counted by state, every state present', () => {
      expect(total(after, 'agentauth_signing_keys', { state: 'active' })).toBe(1);
      for (const state of ['next', 'retired', 'archived']) {
        expect(after.some((s) => s.name === 'agentauth_signing_keys' && s.labels.state === state)).toBe(true);
        expect(total(after, 'agentauth_signing_keys', { state })).toBe(0);
      }
    });

    test('process metrics are collected', () => {
      expect(after.some((s) => s.name === 'process_cpu_user_seconds_total')).toBe(true);
      expect(total(after, 'process_resident_memory_bytes')).toBeGreaterThan(0);
      expect(after.some((s) => s.name === 'nodejs_eventloop_lag_seconds')).toBe(true);
    });

    test('a second server in the same process keeps its own counts', async () => {
      const own = (await scrape(scrapeB.url)).samples;
      expect(total(own, 'agentauth_http_requests_total', { route: 'token' })).toBe(0);
      expect(total(own, 'agentauth_tokens_issued_total')).toBe(0);
      expect(total(own, 'agentauth_storage_operation_duration_seconds_count', { backend: 'mongodb' })).toBe(0);

      const res = await tokenRequest(b.url, basic(RS_CLIENT.id, RS_CLIENT.secret), { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' });
      expect(res.status).toBe(200);
      const bAfter = (await scrape(scrapeB.url)).samples;
      expect(total(bAfter, 'agentauth_http_requests_total', { route: 'token', status: '200' })).toBe(1);
      expect(total(bAfter, 'agentauth_tokens_issued_total', { grant_type: 'client_credentials', binding: 'bearer' })).toBe(1);
      expect(total(bAfter, 'agentauth_storage_operation_duration_seconds_count', { backend: 'sqlite', store: 'audit', operation: 'insertBatch' })).toBeGreaterThanOrEqual(1);
      // A's counts did not move.
      const aNow = (await scrape(scrapeA.url)).samples;
      expect(total(aNow, 'agentauth_http_requests_total', { route: 'token' })).toBe(total(after, 'agentauth_http_requests_total', { route: 'token' }));
    });
  });
});
