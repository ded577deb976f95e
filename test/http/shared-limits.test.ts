import { freePort } from '../support/ferretdb.js';
import { baseConfig, register, RS_CLIENT } from '../support/agent-server.js';
import { newKek, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { mongoUri } from '../support/storages.js';
import { WALLET_GRANT_TYPE } from '../../server/config.js';
import { openLoginPage } from '../support/user-agent.js';

/**
 * Limits counted in the store (server/limits/): two `agentauth start` processes on one data directory share one
 * count, a restart keeps it, and a refusal is 429 with Retry-After and an RFC-shaped body. The same on FerretDB.
 */
const WEB_CLIENT = { client_id: 'web-agent', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: ['http://127.0.0.1:65000/callback'], scope: 'read' };
const WALLET_CLIENT = { client_id: 'wallet-agent', client_secret: 'wallet-agent-secret-0123456789abcdefghij', grant_types: [WALLET_GRANT_TYPE] };
const config = baseConfig({
  clients: [{ client_id: RS_CLIENT.id, client_secret: RS_CLIENT.secret, grant_types: ['client_credentials'] }, WALLET_CLIENT, WEB_CLIENT],
  registration: { quota: { max: 3, windowSeconds: 3600 } },
  limits: { tokenRequestsPerClient: { max: 2, windowSeconds: 3600 }, walletNoncesPerAddress: { max: 2, windowSeconds: 3600 }, signInAttemptsPerAddress: { max: 2, windowSeconds: 3600 } },
});
const client = { redirect_uris: ['http://127.0.0.1:65000/callback'], token_endpoint_auth_method: 'none' };
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;

async function tokenRequest(origin: string, authorization: string): Promise<{ status: number; retryAfter: string | null; body: Record<string, unknown> }> {
  const res = await fetch(`${origin}/token`, {
    method: 'POST',
    headers: { authorization, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: 'https://api.example.com', scope: 'read' }),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Record<string, unknown> };
}

async function nonceRequest(origin: string): Promise<{ status: number; retryAfter: string | null; body: Record<string, unknown> }> {
  const res = await fetch(`${origin}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `client_id=${WALLET_CLIENT.client_id}` });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Record<string, unknown> };
}

function expectRefused(r: { status: number; retryAfter: string | null; body: Record<string, unknown> }, error: string, windowSeconds: number): void {
  expect(r.status).toBe(429);
  expect(Number(r.retryAfter)).toBeGreaterThan(0);
  expect(Number(r.retryAfter)).toBeLessThanOrEqual(windowSeconds);
  expect(r.body.error).toBe(error);
  expect(String(r.body.error_description)).toMatch(/limit of \d+ per 3600 s reached.*retry after \d+ s/);
}

describe.each([
  ['SQLite: two processes on one data directory', () => ({ AGENTAUTH_DATA_DIR: tempDir('agentauth-limits-') })],
  ['FerretDB: two processes on one database', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('limits') })],
])('limits shared in the store: %s', (_name, storeEnv) => {
  let env: Record<string, string>;
  let a: RunningServer;
  let b: RunningServer;
  let issuer: string;
  let portB: number;
  // Requests to B carry the issuer's host, as behind a proxy (TRUST_PROXY): both processes serve one issuer.
  const viaB = () => `http://localhost:${portB}`;

  beforeAll(async () => {
    const portA = await freePort();
    portB = await freePort();
    issuer = `http://localhost:${portA}`;
    env = { ...storeEnv(), AGENTAUTH_KEK: newKek(), AGENTAUTH_CONFIG: writeConfig(tempDir(), config), ISSUER: issuer };
    [a, b] = await Promise.all([startServer(env, portA), startServer(env, portB)]);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  test('the registration quota is one count for both processes: the 4th registration of 3 is refused, wherever it lands', async () => {
    expect((await register(issuer, client)).status).toBe(201);
    expect((await register(viaB(), client)).status).toBe(201);
    expect((await register(issuer, client)).status).toBe(201);
    const refused = await register(viaB(), client);
    expectRefused({ status: refused.status, retryAfter: refused.headers.get('retry-after'), body: refused.body }, 'temporarily_unavailable', 3600);
    expect((await register(issuer, client)).status).toBe(429);
  });

  test('token requests per client: 2 across both processes, the 3rd is 429 slow_down; a wrong secret is not counted, other clients are not affected', async () => {
    const rs = basic(RS_CLIENT.id, RS_CLIENT.secret);
    const wrong = await tokenRequest(issuer, basic(RS_CLIENT.id, 'not-the-secret-0123456789abcdefghijklmn'));
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toBe('invalid_client');
    expect((await tokenRequest(issuer, rs)).status).not.toBe(429);
    expect((await tokenRequest(viaB(), rs)).status).not.toBe(429);
    expectRefused(await tokenRequest(viaB(), rs), 'slow_down', 3600);
    expectRefused(await tokenRequest(issuer, rs), 'slow_down', 3600);
    expect((await tokenRequest(issuer, basic(WALLET_CLIENT.client_id, WALLET_CLIENT.client_secret))).status).not.toBe(429);
  });

  test('wallet nonces per address: 2 across both processes, then 429 slow_down', async () => {
    expect((await nonceRequest(issuer)).status).toBe(200);
    expect((await nonceRequest(viaB())).status).toBe(200);
    expectRefused(await nonceRequest(viaB()), 'slow_down', 3600);
  });

  test('wallet sign-in attempts per address: 2 across login pages, the 3rd is 429 slow_down before the message is read', async () => {
    const authorize = () =>
      new URL(
        `/auth?${new URLSearchParams({ client_id: WEB_CLIENT.client_id, response_type: 'code', redirect_uri: WEB_CLIENT.redirect_uris[0]!, scope: 'read', resource: 'https://api.example.com', state: 's', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })}`,
        issuer,
      );
    const attempt = async () => {
      const { agent, data } = await openLoginPage(authorize());
      const res = await agent.fetch(new URL(data.loginUrl, issuer), { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify({ message: 'not a SIWE message', signature: '0x00' }) });
      return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Record<string, unknown> };
    };
    const first = await attempt();
    expect(first.status).toBe(400); // refused as a sign-in, but counted
    expect((await attempt()).status).toBe(400);
    expectRefused(await attempt(), 'slow_down', 3600);
  });

  test('after both processes restart, the counts are still there', async () => {
    await Promise.all([a.stop(), b.stop()]);
    a = await startServer(env, Number(new URL(issuer).port));
    b = await startServer(env, portB);
    expect((await register(issuer, client)).status).toBe(429);
    expectRefused(await tokenRequest(issuer, basic(RS_CLIENT.id, RS_CLIENT.secret)), 'slow_down', 3600);
    expect((await nonceRequest(viaB())).status).toBe(429);
  });
});

describe('token requests of a public client are counted per client and address', () => {
  let server: RunningServer;
  beforeAll(async () => {
    // Behind a proxy (TRUST_PROXY): X-Forwarded-For stands in for two people's addresses.
    server = await startServer({ AGENTAUTH_DATA_DIR: tempDir('agentauth-limits-'), AGENTAUTH_KEK: newKek(), AGENTAUTH_CONFIG: writeConfig(tempDir(), config), TRUST_PROXY: 'true' });
  });
  afterAll(async () => {
    await server?.stop();
  });

  /** A code redemption naming the public client, from `address`: all the authentication a public client has. */
  const redeem = async (address: string) => {
    const res = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': address },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: 'made-up', code_verifier: 'x'.repeat(43), redirect_uri: WEB_CLIENT.redirect_uris[0]!, client_id: WEB_CLIENT.client_id, resource: 'https://api.example.com' }),
    });
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Record<string, unknown> };
  };

  test('whoever names the client uses up only their own address\'s allowance: the client\'s users elsewhere are not locked out', async () => {
    // The attacker: made-up codes, each refused, each counted, then refused for the limit.
    expect((await redeem('203.0.113.9')).body.error).toBe('invalid_grant');
    expect((await redeem('203.0.113.9')).body.error).toBe('invalid_grant');
    const limited = await redeem('203.0.113.9');
    expectRefused(limited, 'slow_down', 3600);
    expect(limited.body.error_description).toMatch(/^token requests of public client web-agent from this address: limit of 2 per 3600 s reached/);
    // The person using the client from another address still gets to the grant (here: an unknown code).
    const elsewhere = await redeem('198.51.100.7');
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.body.error).toBe('invalid_grant');
  });
});
