import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * The per-address limits (registration quota, wallet nonces; docs/operations.md "Shared limits") count an IPv6
 * client by its /64 (`limits.ipv6PrefixLength`), an IPv4-mapped address as its IPv4 address, and every spelling of an
 * address as one. They took the address as spelled: one host, which commonly holds a whole /64 and may send from any
 * address in it, got a full allowance per address it picked. A reverse proxy is stood for by TRUST_PROXY=true and an
 * X-Forwarded-For it wrote (overwritten, as the docs require).
 */
describe('per-address limits and IPv6', () => {
  let server: RunningServer;
  let narrow: RunningServer;

  const config = (limits: Record<string, unknown>) => ({
    resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
    registration: { mode: 'open', quota: { max: 2, windowSeconds: 3600 } },
    limits: { walletNoncesPerAddress: { max: 2, windowSeconds: 3600 }, ...limits },
  });

  beforeAll(async () => {
    ({ server } = await startConfigured(config({}), { TRUST_PROXY: 'true' }));
    ({ server: narrow } = await startConfigured(config({ ipv6PrefixLength: 128 }), { TRUST_PROXY: 'true' }));
  });
  afterAll(async () => {
    await server?.stop();
    await narrow?.stop();
  });

  const register = (at: RunningServer, xff: string) =>
    fetch(`${at.url}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': xff },
      body: JSON.stringify({ redirect_uris: ['https://agent.example/cb'], token_endpoint_auth_method: 'none' }),
    }).then((r) => r.status);

  test('an IPv4 address gets quota.max registrations', async () => {
    expect([await register(server, '203.0.113.7'), await register(server, '203.0.113.7'), await register(server, '203.0.113.7')]).toEqual([201, 201, 429]);
  });

  test('the addresses of one /64 share one quota; another /64 has its own', async () => {
    const statuses: number[] = [];
    for (let i = 1; i <= 6; i += 1) statuses.push(await register(server, `2001:db8:1:2::${i.toString(16)}`));
    expect(statuses).toEqual([201, 201, 429, 429, 429, 429]);
    expect(await register(server, '2001:db8:1:3::1')).toBe(201);
  });

  test('spellings of one address share its quota (IPv4-mapped forms, case, zero compression, leading zeros)', async () => {
    const v4 = [await register(server, '198.51.100.9'), await register(server, '::ffff:198.51.100.9'), await register(server, '::FFFF:c633:6409')];
    expect(v4).toEqual([201, 201, 429]);
    const v6 = [await register(server, '2001:db8:9::1'), await register(server, '2001:DB8:9:0:0:0:0:1'), await register(server, '2001:0db8:0009::0001')];
    expect(v6).toEqual([201, 201, 429]);
  });

  test('with ipv6PrefixLength 128 each IPv6 address counts alone', async () => {
    expect([await register(narrow, '2001:db8:5:5::1'), await register(narrow, '2001:db8:5:5::1'), await register(narrow, '2001:db8:5:5::1')]).toEqual([201, 201, 429]);
    expect(await register(narrow, '2001:db8:5:5::2')).toBe(201);
  });

  test('wallet nonces: the addresses of one /64 share one allowance', async () => {
    const reg = await fetch(`${server.url}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': '192.0.2.200' },
      body: JSON.stringify({ grant_types: ['urn:agentauth:params:oauth:grant-type:wallet-signature'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none' }),
    });
    expect(reg.status).toBe(201);
    const { client_id } = (await reg.json()) as { client_id: string };
    const statuses: number[] = [];
    for (let i = 1; i <= 5; i += 1) {
      const res = await fetch(`${server.url}/wallet/nonce`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-for': `2001:db8:7:7::${i.toString(16)}` },
        body: new URLSearchParams({ client_id }),
      });
      statuses.push(res.status);
    }
    expect(statuses).toEqual([200, 200, 429, 429, 429]);
  });
});
