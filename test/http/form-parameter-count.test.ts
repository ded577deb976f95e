import { baseConfig, basicAuth, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * Node's querystring.parse, which oidc-provider reads every form body with, kept the first 1,000 parameters and dropped
 * the rest without a word: a body of 1,000 filler parameters, or 1,000 bare `&`, then `scope=write`, walked around
 * RFC 6749 §3.1 (a parameter sent twice) and §2.3 (one client authentication method). Such a body is now 400
 * invalid_request at every endpoint and spelling that parses one, and changes nothing; 1,000 pairs are still read.
 */
const REFUSED = { error: 'invalid_request', error_description: 'the request body has more than 1000 parameters, the most this server reads: send each parameter once, and nothing else' };

describe('form bodies with more parameters than the parser reads', () => {
  let server: RunningServer;
  let issuer: string;
  const auth = basicAuth(RS_CLIENT.id, RS_CLIENT.secret);

  beforeAll(async () => {
    server = (await startConfigured(baseConfig())).server;
    issuer = server.url;
  });
  afterAll(() => server?.stop());

  async function post(path: string, body: string, headers: Record<string, string> = { authorization: auth }): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${issuer}${path}`, { method: 'POST', headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }
  const grant = `grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read`;
  const filler = (n: number) => 'x=1&'.repeat(n);
  const bare = (n: number) => '&'.repeat(n);
  async function accessToken(): Promise<string> {
    const r = await post('/token', grant);
    expect(r.status).toBe(200);
    return r.body.access_token as string;
  }
  const active = async (token: string) => (await post('/token/introspection', `token=${encodeURIComponent(token)}`)).body.active;

  test.each([
    ['/token', () => `${grant}&${filler(1000)}scope=write`],
    ['/TOKEN', () => `${grant}&${bare(1000)}scope=write`],
    ['/token/', () => `${filler(1000)}${grant}`],
    ['/request', () => `response_type=code&client_id=${RS_CLIENT.id}&${bare(1000)}scope=read`],
  ])('%s: a parameter after the first 1,000 pairs (filler or bare &) is 400 invalid_request, not dropped', async (path, body) => {
    expect(await post(path, body())).toEqual({ status: 400, body: REFUSED });
  });

  test('a second client authentication method past 1,000 pairs is refused, not ignored (RFC 6749 section 2.3)', async () => {
    const r = await post('/token', `${grant}&${filler(1000)}client_id=${RS_CLIENT.id}&client_secret=${RS_CLIENT.secret}`);
    expect(r).toEqual({ status: 400, body: REFUSED });
  });

  test('introspection and revocation (every spelling): refused, and the token they carry is untouched', async () => {
    const token = await accessToken();
    for (const path of ['/token/introspection', '/Token/Introspection/', '/token/revocation', '/TOKEN/REVOCATION']) {
      expect({ path, ...(await post(path, `token=${token}&${bare(1000)}token_type_hint=access_token`)) }).toEqual({ path, status: 400, body: REFUSED });
    }
    expect(await active(token)).toBe(true);
  });

  test('1,000 pairs, empty ones included, are read as before', async () => {
    // grant has 3 pairs: 996 filler pairs and the bare & before them make 1,000.
    expect((await post('/token', `${grant}&${filler(996).slice(0, -1)}`)).status).toBe(200);
    expect((await post('/token', `${bare(997)}${grant}`)).status).toBe(200);
    expect(await post('/token', `${bare(998)}${grant}`)).toEqual({ status: 400, body: REFUSED });
  });

  test('none of it made the server log an error', () => {
    expect(server.output()).not.toMatch(/"level":"error"/);
  });
});
