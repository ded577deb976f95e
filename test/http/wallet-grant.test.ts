import { Wallet } from 'ethers';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import * as oidc from 'openid-client';

import type { SiweMessageFields } from '../../interactions/siwe/message.js';
import { signedSiwe } from '../support/wallet.js';
import { baseConfig, insecure, introspect, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';

const GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const agentKey = new Wallet('0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6');
const otherKey = new Wallet('0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a');

describe('headless wallet-signature grant, driven by openid-client', () => {
  let as: AgentServer;
  let issuer: string;
  let publicClient: oidc.Configuration;
  let confidential: oidc.Configuration;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    issuer = as.server.url;
    publicClient = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { grant_types: [GRANT, 'refresh_token'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', scope: 'read write' },
      oidc.None(),
      insecure,
    );
    const reg = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { grant_types: [GRANT], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' },
      undefined,
      insecure,
    );
    const secret = reg.clientMetadata().client_secret as string;
    confidential = new oidc.Configuration(reg.serverMetadata(), reg.clientMetadata().client_id, secret, oidc.ClientSecretBasic(secret));
    oidc.allowInsecureRequests(confidential);
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  async function nonce(): Promise<string> {
    // An agent fetches the nonce without a browser.
    const res = await fetch(`${issuer}/wallet/nonce`, { method: 'POST' });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { nonce: string; expires_in: number };
    expect(body.nonce).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(body.expires_in).toBe(300);
    return body.nonce;
  }

  const signed = async (key: Wallet, change: Partial<SiweMessageFields> = {}, signer: Wallet = key) =>
    signedSiwe(issuer, signer, { address: key.address, nonce: await nonce(), ...change });

  test('discovery advertises the grant type', async () => {
    expect(publicClient.serverMetadata().grant_types_supported).toContain(GRANT);
  });

  test('a public client with DPoP gets a DPoP-bound token for the wallet account, and a refresh token that rotates', async () => {
    const dpop = oidc.getDPoPHandle(publicClient, await oidc.randomDPoPKeyPair('ES256'));
    const tokens = await oidc.genericGrantRequest(publicClient, GRANT, { ...(await signed(agentKey)), resource: RESOURCE, scope: 'read' }, { DPoP: dpop });
    expect(tokens.token_type).toBe('dpop');
    expect(tokens.scope).toBe('read');
    const { payload } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer, audience: RESOURCE, typ: 'at+jwt' });
    expect(payload.sub).toBe(`did:pkh:eip155:1:${agentKey.address}`);
    expect(payload.cnf).toBeDefined();
    expect(typeof tokens.refresh_token).toBe('string');
    const refreshed = await oidc.refreshTokenGrant(publicClient, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop });
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);
    expect((await introspect(issuer, refreshed.access_token)).sub).toBe(`did:pkh:eip155:1:${agentKey.address}`);
  });

  test('a public client without DPoP gets a short bearer token and no refresh token', async () => {
    const tokens = await oidc.genericGrantRequest(publicClient, GRANT, { ...(await signed(agentKey)), resource: RESOURCE, scope: 'read' });
    expect(tokens.token_type).toBe('bearer');
    expect(tokens.expires_in).toBeLessThanOrEqual(300);
    expect(tokens.refresh_token).toBeUndefined();
  });

  test('a confidential client authenticates with its secret', async () => {
    const tokens = await oidc.genericGrantRequest(confidential, GRANT, { ...(await signed(agentKey)), resource: RESOURCE, scope: 'read' });
    expect((await introspect(issuer, tokens.access_token)).client_id).toBe(confidential.clientMetadata().client_id);
  });

  const refused: Array<[string, () => Promise<Record<string, string>>, RegExp]> = [
    [
      'a replayed nonce',
      async () => {
        const once = await signed(agentKey);
        await oidc.genericGrantRequest(publicClient, GRANT, { ...once, resource: RESOURCE });
        return once;
      },
      /^nonce: /,
    ],
    ['a wrong domain', () => signed(agentKey, { domain: 'evil.example.com' }), /^domain: /],
    ['an expired message', () => signed(agentKey, { issuedAt: new Date(Date.now() - 120_000), expirationTime: new Date(Date.now() - 61_000) }), /^expiration-time: /],
    ['a message issued too long ago', () => signed(agentKey, { issuedAt: new Date(Date.now() - 10 * 60_000) }), /^issued-at: /],
    ['a resource missing from resources', () => signed(agentKey, { resources: ['https://other.example.com'] }), /^resources: /],
    ['a signature by another key', () => signed(agentKey, {}, otherKey), /^signature: /],
    ['a chain that is not allowed', () => signed(agentKey, { chainId: 5 }), /^chain-id: /],
  ];

  test.each(refused)('refused: %s (invalid_grant naming the rule)', async (_label, make, rule) => {
    const params = { ...(await make()), resource: RESOURCE };
    await expect(oidc.genericGrantRequest(publicClient, GRANT, params)).rejects.toMatchObject({
      error: 'invalid_grant',
      error_description: expect.stringMatching(rule),
    });
    expect(as.server.output()).toMatch(/"event":"login.failed"/);
  });

  test('missing parameters and unknown resources are refused with the RFC codes', async () => {
    await expect(oidc.genericGrantRequest(publicClient, GRANT, { resource: RESOURCE, signature: '0x00' })).rejects.toMatchObject({ error: 'invalid_request' });
    await expect(
      oidc.genericGrantRequest(publicClient, GRANT, { ...(await signed(agentKey)), resource: 'https://unknown.example.com' }),
    ).rejects.toMatchObject({ error: 'invalid_target' });
  });
});
