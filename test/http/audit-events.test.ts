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
    await expect(oidc.genericGrantRequest(config, GRANT, { ...(await signIn(new Wallet(Wallet.createRandom().privateKey))), resource: RESOURCE })).rejects.toMatchObject({ error: 'invalid_grant' });
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
});
