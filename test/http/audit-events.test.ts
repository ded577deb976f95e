import { createHash } from 'node:crypto';
import { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { MongoStorage } from '../../adapters/mongodb.js';
import type { AuditRecord } from '../../adapters/types.js';
import { scopeResource } from '../../interactions/siwe/binding.js';
import { buildSiweMessage } from '../../interactions/siwe/message.js';
import { verifyLog } from '../../server/audit/chain.js';
import { baseConfig, STRICT_REFRESH_TIERS, insecure, register, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { runCli } from '../support/server.js';
import { allAuditRecords } from '../support/audit.js';
import { mongoUri } from '../support/storages.js';
import { fetchNonce } from '../support/wallet.js';
import { authorizeWithWallet } from '../support/user-agent.js';
import { REDIRECT } from '../support/agent-server.js';

const GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const wallet = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

describe('the audit trail records who got which token, and never a token', () => {
  let as: AgentServer;
  let storage: MongoStorage;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig({ tiers: STRICT_REFRESH_TIERS }));
    storage = new MongoStorage({ uri: mongoUri(), dbName: as.dbName });
    await storage.init();
  });
  afterAll(async () => {
    await as?.server.stop();
    await storage?.close();
  });

  /** Every chain's records: the server's and the CLI's (keys commands). */
  const all = (): Promise<AuditRecord[]> => allAuditRecords(storage.audit);

  test('registration, issuance, rotation, reuse, revocation, logins and keys are recorded in chains that verify', async () => {
    const issuer = as.server.url;
    // A public client that signs in with a wallet (headless grant) and refreshes with DPoP.
    const config = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { grant_types: [GRANT, 'refresh_token'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
    const clientId = config.clientMetadata().client_id;
    const dpop = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const signIn = async (signer: Wallet = wallet) => {
      const nonce = await fetchNonce(issuer, clientId);
      const message = buildSiweMessage({ domain: new URL(issuer).host, address: wallet.address, uri: issuer, chainId: 1, nonce, issuedAt: new Date(), resources: [RESOURCE, scopeResource('read')] });
      return { message, signature: await signer.signMessage(message) };
    };
    const tokens = await oidc.genericGrantRequest(config, GRANT, { ...(await signIn()), resource: RESOURCE, scope: 'read' }, { DPoP: dpop });
    await expect(oidc.genericGrantRequest(config, GRANT, { ...(await signIn(new Wallet(Wallet.createRandom().privateKey))), resource: RESOURCE, scope: 'read' })).rejects.toMatchObject({ error: 'invalid_grant' });
    const rotated = await oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop });
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).rejects.toMatchObject({ error: 'invalid_grant' });
    const second = await oidc.genericGrantRequest(config, GRANT, { ...(await signIn()), resource: RESOURCE, scope: 'read' }, { DPoP: dpop });
    await oidc.tokenRevocation(config, second.access_token);

    const confidential = await register(issuer, { redirect_uris: ['https://client.example.com/cb'], token_endpoint_auth_method: 'client_secret_basic' });
    await fetch(confidential.body.registration_client_uri as string, { method: 'DELETE', headers: { authorization: `Bearer ${confidential.body.registration_access_token}` } });

    const records = await all();
    const types = records.map((r) => r.type);
    expect(types).toEqual(expect.arrayContaining([
      'key.generated', 'client.registered', 'login.succeeded', 'login.failed', 'token.issued', 'refresh.rotated',
      'refresh.reuse_detected', 'grant.revoked', 'token.revoked', 'client.deleted',
    ]));

    const issued = records.filter((r) => r.type === 'token.issued' && r.details.token_type_issued === 'access_token');
    const first = issued.find((r) => r.details.sha256 === sha256(tokens.access_token))!;
    expect(first).toMatchObject({ client_id: clientId, sub: `did:pkh:eip155:1:${wallet.address}` });
    expect(first.details).toMatchObject({ aud: RESOURCE, scope: 'read', format: 'jwt', grant_type: GRANT });
    expect(typeof first.details.jti).toBe('string');
    expect(typeof first.details.kid).toBe('string');
    expect(typeof first.details.jkt).toBe('string');
    expect(records.find((r) => r.type === 'login.failed')?.details).toMatchObject({ rule: 'signature', via: 'grant' });
    expect(records.find((r) => r.type === 'token.revoked')?.details).toMatchObject({ jti: expect.any(String), format: 'jwt' });
    expect(records.find((r) => r.type === 'client.deleted')?.client_id).toBe(confidential.body.client_id);

    // Never a token or a secret, in any record.
    const text = JSON.stringify(records);
    for (const secret of [tokens.access_token, tokens.refresh_token!, rotated.access_token, rotated.refresh_token!, second.access_token, confidential.body.client_secret as string]) {
      expect(text).not.toContain(secret);
    }

    expect(verifyLog(records)).toMatchObject({ ok: true });
    const cli = await runCli(['audit', 'verify'], as.env);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/audit log OK/);
  });

  test('an ID token is recorded like the access and refresh tokens beside it: who signed in, to which client, under which key', async () => {
    const issuer = as.server.url;
    const created = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'openid read' });
    expect(created.status).toBe(201);
    const clientId = created.body.client_id as string;
    const verifier = oidc.randomPKCECodeVerifier();
    const url = new URL(`${issuer}/auth`);
    const params = { client_id: clientId, response_type: 'code', redirect_uri: REDIRECT, scope: 'openid read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet });
    const redeem = async (body: Record<string, string>) => {
      const res = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ client_id: clientId, resource: RESOURCE, ...body }) });
      expect(res.status).toBe(200);
      return (await res.json()) as { id_token?: string; access_token: string; refresh_token?: string };
    };
    const tokens = await redeem({ grant_type: 'authorization_code', code: callback.searchParams.get('code')!, code_verifier: verifier, redirect_uri: REDIRECT });
    expect(typeof tokens.id_token).toBe('string');
    const refreshed = await redeem({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token! });

    const records = await all();
    const idTokens = records.filter((r) => r.type === 'token.issued' && r.details.token_type_issued === 'id_token' && r.client_id === clientId);
    const [header, claims] = tokens.id_token!.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>);
    expect(idTokens.find((r) => r.details.sha256 === sha256(tokens.id_token!))).toMatchObject({
      sub: `did:pkh:eip155:1:${wallet.address}`,
      details: { format: 'jwt', aud: clientId, exp: claims!.exp, kid: header!.kid, grant_type: 'authorization_code' },
    });
    if (refreshed.id_token) expect(idTokens.map((r) => r.details.sha256)).toContain(sha256(refreshed.id_token));
    expect(JSON.stringify(records)).not.toContain(tokens.id_token!);
  });
});
