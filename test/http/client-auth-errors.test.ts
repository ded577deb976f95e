import { baseConfig, basicAuth, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * RFC 6749 §5.2: no client authentication, or an Authorization header that cannot be read as the client's
 * credentials, is `401 invalid_client`, with a `WWW-Authenticate` challenge of the scheme the client used when it
 * used the Authorization header. oidc-provider answered `400 invalid_request` (server/http/client-auth-errors.ts).
 * Every endpoint that authenticates clients, in every spelling its router accepts.
 */
describe('client authentication refusals are 401 invalid_client', () => {
  let server: RunningServer;
  beforeAll(async () => {
    ({ server } = await startConfigured(baseConfig()));
  });
  afterAll(async () => {
    await server?.stop();
  });

  const ENDPOINTS: Array<[string, Record<string, string>]> = [
    ['/token', { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }],
    ['/TOKEN', { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }],
    ['/token/', { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }],
    ['/token/introspection', { token: 'not-a-token' }],
    ['/token/revocation', { token: 'not-a-token' }],
    ['/request', { response_type: 'code', redirect_uri: 'https://client.example/cb', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', scope: 'read' }],
  ];
  const send = (path: string, form: Record<string, string>, authorization?: string) =>
    fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) },
      body: new URLSearchParams(form),
    });
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  const HEADER_CASES: Array<[string, string, string]> = [
    ['another scheme', 'Bearer abc', 'the Authorization header must be HTTP Basic with base64(client_id:client_secret) (RFC 6749 section 2.3.1)'],
    ['Basic that is not base64', 'Basic !!!!', 'the Authorization header must be HTTP Basic with base64(client_id:client_secret) (RFC 6749 section 2.3.1)'],
    ['Basic without a colon', `Basic ${b64(RS_CLIENT.id)}`, 'the Authorization header must be HTTP Basic with base64(client_id:client_secret) (RFC 6749 section 2.3.1)'],
    ['Basic with a bad percent-encoding', `Basic ${b64(`${RS_CLIENT.id}:%zz`)}`, 'client_id and client_secret in the Authorization header must each be application/x-www-form-urlencoded before base64 (RFC 6749 section 2.3.1)'],
    ['Basic with an empty secret', `Basic ${b64(`${RS_CLIENT.id}:`)}`, 'the Authorization header carries no client_secret after client_id:'],
  ];

  test.each(ENDPOINTS)('%s: an Authorization header that is not the client\'s credentials is 401 invalid_client with a Basic challenge', async (path, form) => {
    for (const [label, authorization, description] of HEADER_CASES) {
      const res = await send(path, form, authorization);
      expect([label, res.status, await res.json()]).toEqual([label, 401, { error: 'invalid_client', error_description: description }]);
      expect(res.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client"/);
    }
  });

  test.each(ENDPOINTS)('%s: no client authentication at all is 401 invalid_client; credentials sent two ways stay 400 invalid_request', async (path, form) => {
    const none = await send(path, form);
    expect([none.status, await none.json()]).toEqual([401, { error: 'invalid_client', error_description: expect.stringMatching(/^the request does not authenticate the client: send client_id and client_secret/) }]);
    // RFC 9110 section 15.5.2: a 401 carries a challenge, though no Authorization header was sent.
    expect(none.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client", error_description="the request does not authenticate the client: /);
    const twice = await send(path, { ...form, client_secret: RS_CLIENT.secret }, basicAuth(RS_CLIENT.id, RS_CLIENT.secret));
    expect([twice.status, ((await twice.json()) as { error: string }).error]).toEqual([400, 'invalid_request']);
  });

  test('the client\'s own credentials still work, and a wrong secret is 401 as before', async () => {
    const ok = await send('/token', ENDPOINTS[0]![1], basicAuth(RS_CLIENT.id, RS_CLIENT.secret));
    expect(ok.status).toBe(200);
    const wrong = await send('/token', ENDPOINTS[0]![1], basicAuth(RS_CLIENT.id, 'wrong'));
    expect([wrong.status, await wrong.json()]).toEqual([401, { error: 'invalid_client', error_description: 'client authentication failed' }]);
    // One challenge, whichever way the wrong secret came (client_secret_post: no Authorization header).
    expect(wrong.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client", error_description="client authentication failed"$/);
    const posted = await send('/token', { ...ENDPOINTS[0]![1], client_id: RS_CLIENT.id, client_secret: 'wrong' });
    expect(posted.status).toBe(401);
    expect(posted.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+", error="invalid_client", error_description="client authentication failed"$/);
  });
});
