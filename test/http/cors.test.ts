import { baseConfig, basicAuth, RS_CLIENT } from '../support/agent-server.js';
import { startOnLoopback } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * A browser-based client reads the answers of the endpoints oidc-provider serves cross-origin, refusals included:
 * those agentauth's own layers make before the route runs (server/http/early-refusal-cors.ts) carry CORS as the route's
 * own errors do, in every spelling the router accepts; a route not served cross-origin gets none, and oidc-provider's
 * refusal of a client's disallowed origin stays unreadable. The storage outage's 503 is in outage.test.ts.
 */

const ORIGIN = 'https://agent-ui.example';

describe('CORS on refusals made before the route', () => {
  let server: RunningServer;
  let url: string;

  beforeAll(async () => {
    ({ server, url } = await startOnLoopback(baseConfig(), 'agentauth-cors-'));
  });
  afterAll(async () => {
    await server?.stop();
  });

  const send = (method: string, path: string, headers: Record<string, string> = {}, body?: string) =>
    fetch(`${url}${path}`, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(20_000) });

  test('a malformed request to a cross-origin endpoint is a 400 the caller can read, whichever spelling of the path it used', async () => {
    const form = { origin: ORIGIN, 'content-type': 'application/x-www-form-urlencoded' };
    const cases: Array<[string, string, Record<string, string>, string?]> = [
      ['POST', '/token?x=%FF', form, 'grant_type=client_credentials'],
      ['POST', '/TOKEN?x=%FF', form, 'grant_type=client_credentials'],
      ['POST', '/token/?x=%FF', form, 'grant_type=client_credentials'],
      ['POST', '/token/introspection?x=%FF', form, 'token=x'],
      ['POST', '/token/revocation?x=%FF', form, 'token=x'],
      ['GET', '/me?x=%FF', { origin: ORIGIN }],
      ['GET', '/jwks?x=%FF', { origin: ORIGIN }],
      ['GET', '/Jwks/?x=%FF', { origin: ORIGIN }],
      ['GET', '/.well-known/openid-configuration?x=%FF', { origin: ORIGIN }],
      ['GET', '/.well-known/oauth-authorization-server?x=%FF', { origin: ORIGIN }],
    ];
    for (const [method, path, headers, body] of cases) {
      const res = await send(method, path, headers, body);
      const error = ((await res.json()) as { error: string }).error;
      expect({ path, status: res.status, error, allow: res.headers.get('access-control-allow-origin') }).toEqual({ path, status: 400, error: 'invalid_request', allow: ORIGIN });
      expect(res.headers.get('vary')).toMatch(/\bOrigin\b/);
      expect(res.headers.get('access-control-expose-headers')).toContain('Retry-After');
    }
  });

  test('a malformed DPoP header and a body too large at the token endpoint: readable too', async () => {
    const twoProofs = await send('POST', '/token', { origin: ORIGIN, 'content-type': 'application/x-www-form-urlencoded', dpop: '' }, 'grant_type=client_credentials');
    expect(twoProofs.status).toBeGreaterThanOrEqual(400);
    expect(twoProofs.headers.get('access-control-allow-origin')).toBe(ORIGIN);
    const large = await send('POST', '/token', { origin: ORIGIN, 'content-type': 'application/x-www-form-urlencoded' }, `grant_type=client_credentials&x=${'a'.repeat(3 * 1024 * 1024)}`);
    expect(large.status).toBe(413);
    expect(large.headers.get('access-control-allow-origin')).toBe(ORIGIN);
  });

  test('no Origin, no CORS; an endpoint not served cross-origin (authorization, registration, logout, the wallet nonce) gets none on its refusals', async () => {
    const plain = await send('POST', '/token?x=%FF', { 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=client_credentials');
    expect(plain.status).toBe(400);
    expect(plain.headers.get('access-control-allow-origin')).toBeNull();
    for (const [method, path] of [['GET', '/auth?x=%FF'], ['POST', '/reg?x=%FF'], ['GET', '/session/end?x=%FF'], ['POST', '/wallet/nonce?x=%FF']] as const) {
      const res = await send(method, path, { origin: ORIGIN, accept: 'application/json', 'content-type': 'application/json' }, method === 'POST' ? '{}' : undefined);
      expect({ path, status: res.status, allow: res.headers.get('access-control-allow-origin') }).toEqual({ path, status: 400, allow: null });
    }
  });

  test("oidc-provider's refusal of a confidential client's cross-origin request stays unreadable: the header it removed is not put back", async () => {
    const res = await send('POST', '/token', { origin: ORIGIN, authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com&scope=read');
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error_description: string }).error_description).toMatch(/not allowed for client/);
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    // The same client without an Origin gets its token: the refusal was the origin's.
    const direct = await send('POST', '/token', { authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' }, 'grant_type=client_credentials&resource=https%3A%2F%2Fapi.example.com&scope=read');
    expect(direct.status).toBe(200);
  });

  test('a preflight is answered by oidc-provider, in every spelling of the path', async () => {
    // A query whose escapes are not UTF-8 too: the preflight reads no query, and the request it lets through is refused
    // readably (the first test).
    for (const path of ['/token', '/TOKEN', '/token/', '/token/introspection', '/token?x=%FF']) {
      const res = await send('OPTIONS', path, { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'dpop, content-type' });
      expect({ path, status: res.status, allow: res.headers.get('access-control-allow-origin') }).toEqual({ path, status: 204, allow: ORIGIN });
    }
  });
});
