import { mkdtempSync, writeFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';

import { temporarilyUnavailable } from '../../adapters/oidc-adapter.js';
import { ConfigError } from '../../server/config.js';
import { notFound } from '../../server/admin/errors.js';
import { createLogger } from '../../server/logger.js';
import { adminHealthRoute, createAdminApp } from '../../server/admin/listener.js';
import { loggedPath, matchRoute } from '../../server/admin/routes.js';
import type { AdminRoute } from '../../server/admin/routes.js';
import { AdminTokenCheck, bearerCredential, resolveAdminToken } from '../../server/admin/token.js';

const TOKEN = 'a'.repeat(20) + 'B'.repeat(20);
const log = createLogger('silent');

describe('admin routes: matching', () => {
  const routes: AdminRoute[] = [
    { method: 'GET', path: '/admin/clients/:id', auth: 'admin', handle: () => undefined },
    { method: 'DELETE', path: '/admin/clients/:id', auth: 'admin', handle: () => undefined },
  ];

  test('a :name segment matches one non-empty segment, percent-decoded', () => {
    expect(matchRoute(routes, 'GET', '/admin/clients/https%3A%2F%2Fagent.example%2Fc')?.match?.params).toEqual({ id: 'https://agent.example/c' });
    expect(matchRoute(routes, 'HEAD', '/admin/clients/x')?.match?.route.method).toBe('GET');
    expect(matchRoute(routes, 'GET', '/admin/clients/').match).toBeUndefined();
    expect(matchRoute(routes, 'GET', '/admin/clients/a/b').match).toBeUndefined();
    expect(matchRoute(routes, 'GET', '/ADMIN/clients/a').match).toBeUndefined();
  });

  test('the same path under other methods is reported (for 405 Allow)', () => {
    expect(matchRoute(routes, 'POST', '/admin/clients/x')).toEqual({ allowed: ['GET', 'DELETE'] });
    expect(matchRoute(routes, 'GET', '/elsewhere')).toEqual({ allowed: [] });
  });

  test('a secret path parameter is never in the path logs and answers show, whatever the spelling', () => {
    const secret: AdminRoute[] = [
      ...routes,
      { method: 'GET', path: '/admin/iats', auth: 'admin', handle: () => undefined },
      { method: 'DELETE', path: '/admin/iats/:id', auth: 'admin', secretParams: ['id'], handle: () => undefined },
    ];
    for (const path of ['/admin/iats/s3cr3t', '/admin/iats/s3cr3t%2D', '/admin/iats/s3cr3t/', '/admin/iats//s3cr3t', '/admin//iats/s3cr3t', '/ADMIN/Iats/s3cr3t', '/admin/iats/s3cr3t%', '/admin/iats/s3cr3t/more']) {
      const shown = loggedPath(secret, path);
      expect({ path, shown: shown.includes('s3cr3t') }).toEqual({ path, shown: false });
      expect(shown).toMatch(/^\/(admin|ADMIN)\/(iats|Iats)\/\[redacted\]$/);
    }
    // Paths a route answers, with no secret in them, are shown as they came; so are the routes' own words.
    for (const path of ['/admin/iats', '/admin/iats/', '/admin/clients/x', '/ADMIN/clients']) expect(loggedPath(secret, path)).toBe(path);
    // Spellings the router does not take (dot segments, escaped letters or slashes, ;parameters) show only the routes'
    // words: the log never gets the token, however the path was spelled.
    for (const [path, shown] of [
      ['/admin/./iats/s3cr3t', '/admin/[redacted]/iats/[redacted]'],
      ['/admin/x/../iats/s3cr3t', '/admin/[redacted]/[redacted]/iats/[redacted]'],
      ['/%61dmin/iats/s3cr3t', '/%61dmin/iats/[redacted]'],
      ['/admin/%69ats/s3cr3t', '/admin/%69ats/[redacted]'],
      ['/admin%2Fiats/s3cr3t', '/[redacted]/[redacted]'],
      ['/admin/iats%2Fs3cr3t', '/admin/[redacted]'],
      ['/admin/iats;s3cr3t', '/admin/[redacted]'],
      ['/elsewhere/s3cr3t/y', '/[redacted]/[redacted]/[redacted]'],
    ]) {
      expect({ path, shown: loggedPath(secret, path!) }).toEqual({ path, shown });
    }
    expect(matchRoute(secret, 'DELETE', '/admin/iats/s3cr3t').match?.params).toEqual({ id: 's3cr3t' });
  });
});

describe('admin token', () => {
  test('Bearer credentials: scheme case-insensitive, one token68, nothing else', () => {
    expect(bearerCredential(`Bearer ${TOKEN}`)).toBe(TOKEN);
    expect(bearerCredential(`bearer ${TOKEN}`)).toBe(TOKEN);
    expect(bearerCredential(`Basic ${TOKEN}`)).toBeUndefined();
    expect(bearerCredential(`Bearer ${TOKEN} extra`)).toBeUndefined();
    expect(bearerCredential('Bearer')).toBeUndefined();
    expect(bearerCredential(undefined)).toBeUndefined();
  });

  test('the check accepts exactly the token', () => {
    const check = new AdminTokenCheck(TOKEN);
    expect(check.matches(TOKEN)).toBe(true);
    expect(check.matches(`${TOKEN}x`)).toBe(false);
    expect(check.matches(TOKEN.slice(1))).toBe(false);
    expect(check.matches('')).toBe(false);
  });

  test('from the variable or the file; short, spaced or unreadable ones are refused naming the setting', () => {
    expect(resolveAdminToken({ token: undefined, tokenFile: undefined })).toBeUndefined();
    expect(resolveAdminToken({ token: ` ${TOKEN}\n`, tokenFile: undefined })).toBe(TOKEN);
    const dir = mkdtempSync(join(tmpdir(), 'agentauth-admin-token-'));
    writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
    expect(resolveAdminToken({ token: undefined, tokenFile: join(dir, 'token') })).toBe(TOKEN);
    expect(() => resolveAdminToken({ token: 'short', tokenFile: undefined })).toThrow(new ConfigError('AGENTAUTH_ADMIN_TOKEN: the admin token must be at least 32 characters with no spaces (e.g. openssl rand -base64 32)'));
    expect(() => resolveAdminToken({ token: `${TOKEN} ${TOKEN}`, tokenFile: undefined })).toThrow(ConfigError);
    // Every token the configuration accepts is one a Bearer header can carry: the rest started a listener that no
    // request could ever authenticate to.
    for (const [token, bad] of [[`pA$$w0rd!with:special#chars@2026-abcdefgh`, '$'], [`${TOKEN}"`, '"'], [`${TOKEN}é`, 'é'], [`${TOKEN}=x`, '=']]) {
      expect(() => resolveAdminToken({ token, tokenFile: undefined })).toThrow(new ConfigError(`AGENTAUTH_ADMIN_TOKEN: the admin token may contain only letters, digits and - . _ ~ + / (with = only at the end), as a Bearer token can (RFC 6750 §2.1); it contains ${JSON.stringify(bad)} (e.g. openssl rand -base64 32)`));
    }
    for (const token of [`${TOKEN}-._~+/`, `${TOKEN}==`, Buffer.alloc(32, 7).toString('base64')]) {
      expect(resolveAdminToken({ token, tokenFile: undefined })).toBe(token);
      expect(bearerCredential(`Bearer ${token}`)).toBe(token);
    }
    expect(() => resolveAdminToken({ token: undefined, tokenFile: join(dir, 'missing') })).toThrow(/admin\.tokenFile .*cannot read the admin token/);
  });
});

describe('admin app', () => {
  const seen: string[] = [];
  const app = createAdminApp({
    token: TOKEN,
    log,
    health: { up: true, markDown: () => undefined },
    routes: [
      { method: 'GET', path: '/open', auth: 'none', handle: (ctx) => void (ctx.body = { ok: true }) },
      { method: 'GET', path: '/x/:id', auth: 'admin', handle: (ctx) => void (seen.push((ctx.params as { id: string }).id), (ctx.body = { id: (ctx.params as { id: string }).id })) },
      { method: 'GET', path: '/boom', auth: 'admin', handle: () => { throw new Error('internal detail'); } },
      // What oidc-provider's adapter raises for a storage outage (an initial access token saved through the provider).
      { method: 'GET', path: '/outage', auth: 'admin', handle: () => { throw temporarilyUnavailable(); } },
    ],
  }).callback();

  test('an auth "none" route needs no token; an admin route runs only with the token', async () => {
    expect((await request(app).get('/open')).body).toEqual({ ok: true });
    const refused = await request(app).get('/x/secret-id');
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toBe('Bearer realm="agentauth-admin"');
    expect(seen).toEqual([]);
    const ok = await request(app).get('/x/abc').set('Authorization', `Bearer ${TOKEN}`);
    expect([ok.status, ok.body]).toEqual([200, { id: 'abc' }]);
    expect(ok.headers['cache-control']).toBe('no-store');
  });

  test('a malformed percent-encoding is 400; an unexpected error is a 500 without its detail', async () => {
    const bad = await request(app).get('/x/%E0%A4%A').set('Authorization', `Bearer ${TOKEN}`);
    expect([bad.status, bad.body.error]).toEqual([400, 'invalid_request']);
    const boom = await request(app).get('/boom').set('Authorization', `Bearer ${TOKEN}`);
    expect(boom.status).toBe(500);
    expect(JSON.stringify(boom.body)).not.toContain('internal detail');
  });

  test('a storage outage raised through oidc-provider is a 503 with Retry-After, not a 500', async () => {
    const res = await request(app).get('/outage').set('Authorization', `Bearer ${TOKEN}`);
    expect([res.status, res.body]).toEqual([503, { error: 'temporarily_unavailable', error_description: 'the authorization server cannot reach its storage; retry shortly' }]);
    expect(res.headers['retry-after']).toMatch(/^[1-9][0-9]*$/);
  });
});

describe('the admin request log line', () => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d));
  const known = new Set(['agent-1']);
  const app = createAdminApp({
    token: TOKEN,
    log: createLogger('info', out),
    health: { up: true, markDown: () => undefined },
    routes: [{
      method: 'GET', path: '/admin/clients/:id', auth: 'admin',
      handle: (ctx) => {
        const { id } = ctx.params as { id: string };
        if (!known.has(id)) throw notFound(`no client ${id}`);
        ctx.body = { client_id: id };
      },
    }],
  }).callback();
  const paths = () => text.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; path?: string }).filter((l) => l.msg === 'admin request').map((l) => l.path);

  test('a path parameter that named nothing (404) is logged as the route pattern; one that named a client, as sent', async () => {
    // An access token pasted where a client id goes: answered 404, and never written to the log.
    const pasted = 'eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln';
    const missing = await request(app).get(`/admin/clients/${pasted}`).set('Authorization', `Bearer ${TOKEN}`);
    expect([missing.status, missing.body.error]).toEqual([404, 'not_found']);
    const found = await request(app).get('/admin/clients/agent-1').set('Authorization', `Bearer ${TOKEN}`);
    expect(found.status).toBe(200);
    expect(paths()).toEqual(['/admin/clients/:id', '/admin/clients/agent-1']);
    expect(text).not.toContain(pasted);
    // Without the admin token, nothing is looked up and the id may be anything: the pattern on both lines.
    const refused = await request(app).get(`/admin/clients/${pasted}`);
    expect(refused.status).toBe(401);
    expect(paths().at(-1)).toBe('/admin/clients/:id');
    expect(text).not.toContain(pasted);
  });
});

describe('GET /admin/health', () => {
  const health = { up: true, markDown: () => undefined };
  const app = createAdminApp({ token: TOKEN, log, health, routes: [adminHealthRoute(health)] }).callback();

  test('200 ok while storage is up; 503 with Retry-After and "unavailable" while it is down, with no credential either way', async () => {
    health.up = true;
    const up = await request(app).get('/admin/health');
    expect([up.status, up.body, up.headers['retry-after']]).toEqual([200, { status: 'ok', storage: 'ok' }, undefined]);
    health.up = false;
    const down = await request(app).get('/admin/health');
    // It was a 200 with "status":"ok": a monitor reading the status code saw no outage.
    expect([down.status, down.body, down.headers['retry-after'], down.headers['cache-control']]).toEqual([503, { status: 'unavailable', storage: 'unreachable' }, '5', 'no-store']);
    expect((await request(app).head('/admin/health')).status).toBe(503);
    health.up = true;
    expect((await request(app).get('/admin/health')).status).toBe(200);
  });
});
