import { baseConfig, basicAuth, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * Form bodies at oidc-provider's endpoints must be UTF-8, before and after percent-decoding (RFC 6749 Appendix B).
 * oidc-provider's parser (Node's querystring) read both raw bytes that are not UTF-8 and escapes that decode to such
 * bytes as U+FFFD, so `%FF`, `%FE` and a raw 0xFF byte were one value. Each is now 400 invalid_request, at every
 * endpoint and spelling of it, whatever the spelling of the media type, and changes nothing. So is U+FFFD itself,
 * which the parsed value cannot tell from a replacement.
 */
const FORM_TYPES = ['application/x-www-form-urlencoded', 'APPLICATION/X-WWW-FORM-URLENCODED', 'application/x-www-form-urlencoded; charset=UTF-8'];

const REFUSED = { error: 'invalid_request', error_description: 'the request body is not valid UTF-8: a value decodes to U+FFFD, which replaces bytes that are not UTF-8 (send UTF-8, percent-encoding the bytes of each character: U+00E9 is %C3%A9)' };

/** Values that are not UTF-8 once decoded: raw bytes, and escapes of such bytes (a lone lead, a surrogate, overlong, 0xFF). */
const NOT_UTF8: Array<[string, Buffer]> = [
  ['a raw 0xFF byte', Buffer.from([0x61, 0xff])],
  ['a raw lead byte at the end', Buffer.from([0xc3])],
  ['a raw lead byte completed by an escape', Buffer.concat([Buffer.from([0xc3]), Buffer.from('%A9')])],
  ['%FF', Buffer.from('%FF')],
  ['%ff (lower case)', Buffer.from('%ff')],
  ['%C3 (a lead byte alone)', Buffer.from('%C3')],
  ['%ED%A0%80 (a surrogate)', Buffer.from('%ED%A0%80')],
  ['%C0%AF (overlong)', Buffer.from('%C0%AF')],
  ['U+FFFD itself, percent-encoded (it cannot be told from a replacement)', Buffer.from('%EF%BF%BD')],
  ['U+FFFD itself, raw', Buffer.from('\uFFFD')],
];

describe('form bodies that are not UTF-8', () => {
  let server: RunningServer;
  let issuer: string;
  const auth = basicAuth(RS_CLIENT.id, RS_CLIENT.secret);

  beforeAll(async () => {
    server = (await startConfigured(baseConfig())).server;
    issuer = server.url;
  });
  afterAll(() => server?.stop());

  async function post(path: string, body: Buffer, type = FORM_TYPES[0]!): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${issuer}${path}`, { method: 'POST', headers: { authorization: auth, 'content-type': type, accept: 'application/json' }, body });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }
  const form = (prefix: string, value: Buffer) => Buffer.concat([Buffer.from(prefix), value]);

  async function accessToken(): Promise<string> {
    const r = await post('/token', Buffer.from(new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }).toString()));
    expect(r.status).toBe(200);
    return r.body.access_token as string;
  }
  const active = async (token: string) => (await post('/token/introspection', Buffer.from(`token=${encodeURIComponent(token)}`))).body.active;

  const ENDPOINTS: Array<[string, (token: string) => string]> = [
    ['/token', () => `grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read&x=`],
    ['/TOKEN', () => `grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read&x=`],
    ['/token/', () => `grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read&x=`],
    ['/token/introspection', (t) => `token=${t}&x=`],
    ['/Token/Introspection/', (t) => `token=${t}&x=`],
    ['/token/revocation', (t) => `token=${t}&x=`],
    ['/TOKEN/REVOCATION', (t) => `token=${t}&x=`],
    ['/request', () => `response_type=code&client_id=${RS_CLIENT.id}&redirect_uri=`],
  ];

  test.each(ENDPOINTS)('%s: every such value, with every spelling of the media type, is 400 invalid_request saying which; the token it carried is untouched', async (path, prefix) => {
    const token = await accessToken();
    for (const type of FORM_TYPES) {
      for (const [name, value] of NOT_UTF8) {
        const r = await post(path, form(prefix(token), value), type);
        expect({ name, type, ...r }).toEqual({ name, type, status: 400, body: REFUSED });
      }
    }
    // The revocation was not carried out, nor anything else: the token is still active.
    expect(await active(token)).toBe(true);
  });

  test('UTF-8 sent raw or percent-encoded is read as before (é both ways, and an escape of an ASCII byte)', async () => {
    for (const value of [Buffer.from('%C3%A9'), Buffer.from('é'), Buffer.from('%41%f0%9f%98%80'), Buffer.from('%Z9%')]) {
      const r = await post('/token', form(`grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read&x=`, value));
      expect({ value: value.toString('latin1'), status: r.status }).toEqual({ value: value.toString('latin1'), status: 200 });
    }
  });

  test('a body sent in chunks is checked whole: a character split between chunks is read, a broken one refused', async () => {
    const chunked = async (chunks: Buffer[]) => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          for (const c of chunks) controller.enqueue(new Uint8Array(c));
          controller.close();
        },
      });
      const res = await fetch(`${issuer}/token`, { method: 'POST', headers: { authorization: auth, 'content-type': FORM_TYPES[0]! }, body, duplex: 'half' } as RequestInit);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const start = Buffer.from(`grant_type=client_credentials&resource=${encodeURIComponent(RESOURCE)}&scope=read&x=`);
    expect((await chunked([Buffer.concat([start, Buffer.from([0xc3])]), Buffer.from([0xa9])])).status).toBe(200);
    expect(await chunked([Buffer.concat([start, Buffer.from([0xc3])]), Buffer.from('A')])).toEqual({ status: 400, body: REFUSED });
    expect(await chunked([Buffer.concat([start, Buffer.from('%C')]), Buffer.from('3')])).toEqual({ status: 400, body: REFUSED });
  });

  test('a revocation whose body is not UTF-8 revokes nothing; the same request in UTF-8 revokes', async () => {
    const token = await accessToken();
    expect((await post('/token/revocation', form(`token=${token}&token_type_hint=`, Buffer.from('%FF')))).status).toBe(400);
    expect(await active(token)).toBe(true);
    expect((await post('/token/revocation', Buffer.from(`token=${token}`))).status).toBe(200);
    expect(await active(token)).toBe(false);
  });

  test('none of it made the server log an error', () => {
    expect(server.output()).not.toMatch(/"level":"error"/);
    expect(server.output()).not.toContain('server_error');
  });
});
