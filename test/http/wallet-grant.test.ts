import { randomUUID } from 'node:crypto';

import { Wallet } from 'ethers';
import { createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { MongoClient } from 'mongodb';
import * as oidc from 'openid-client';

import { scopeResource } from '../../interactions/siwe/binding.js';
import type { SiweMessageFields } from '../../interactions/siwe/message.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';
import { baseConfig, insecure, introspect, REDIRECT, register, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { logLines } from '../support/server.js';
import { allAuditRecords } from '../support/audit.js';
import { mongoUri } from '../support/storages.js';
import { MongoStorage } from '../../adapters/mongodb.js';

const GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const agentKey = new Wallet('0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6');
const otherKey = new Wallet('0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a');

describe('headless wallet-signature grant, driven by openid-client', () => {
  let as: AgentServer;
  let issuer: string;
  let publicClient: oidc.Configuration;
  let otherClient: oidc.Configuration;
  let confidential: oidc.Configuration;
  const publicId = () => publicClient.clientMetadata().client_id;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    issuer = as.server.url;
    const publicMeta = { grant_types: [GRANT, 'refresh_token'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', scope: 'read write' };
    publicClient = await oidc.dynamicClientRegistration(new URL(issuer), publicMeta, oidc.None(), insecure);
    otherClient = await oidc.dynamicClientRegistration(new URL(issuer), publicMeta, oidc.None(), insecure);
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

  async function nonce(clientId: string = publicId()): Promise<string> {
    // An agent fetches the nonce without a browser, naming the client that will redeem it.
    const res = await fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `client_id=${encodeURIComponent(clientId)}` });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { nonce: string; expires_in: number };
    expect(body.nonce).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(body.expires_in).toBe(300);
    return body.nonce;
  }

  const signed = async (key: Wallet, change: Partial<SiweMessageFields> = {}, signer: Wallet = key, clientId: string = publicId()) =>
    signedSiwe(issuer, signer, { address: key.address, nonce: await nonce(clientId), ...change });

  /**
   * Sends one grant request and returns the error it got, with the login.failed records that this request (and no
   * earlier one) added to the server log, once they are there.
   */
  async function refusedOnce(client: oidc.Configuration, params: Record<string, string>): Promise<{ error: Record<string, unknown>; failed: Array<Record<string, unknown>> }> {
    const mark = as.server.output().length;
    const error = (await oidc.genericGrantRequest(client, GRANT, params).then(
      () => {
        throw new Error('expected the grant request to be refused');
      },
      (e: unknown) => e,
    )) as Record<string, unknown>;
    const deadline = Date.now() + 3000;
    let failed: Array<Record<string, unknown>> = [];
    while (Date.now() < deadline) {
      failed = logLines(as.server.output().slice(mark)).filter((l) => l.event === 'login.failed');
      if (failed.length > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    return { error, failed };
  }

  test('discovery advertises the grant type', async () => {
    expect(publicClient.serverMetadata().grant_types_supported).toContain(GRANT);
  });

  test('the nonce endpoint needs the client_id of a registered client allowed the grant', async () => {
    const post = (body: string, type = 'application/x-www-form-urlencoded') =>
      fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': type }, body }).then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, string> }));
    await expect(post('')).resolves.toEqual({
      status: 400,
      body: { error: 'invalid_request', error_description: expect.stringMatching(/^missing required parameter 'client_id'/) },
    });
    // Sent, but not a string: said as such (it was "missing required parameter").
    for (const [json, got] of [['{"client_id":5}', 'number'], ['{"client_id":["a"]}', 'array'], ['{"client_id":null}', 'null'], ['{"client_id":{}}', 'object']] as const) {
      await expect(post(json, 'application/json')).resolves.toEqual({ status: 400, body: { error: 'invalid_request', error_description: `client_id must be a string (got a JSON ${got})` } });
    }
    await expect(post('client_id=no-such-client')).resolves.toEqual({
      status: 400,
      body: { error: 'invalid_client', error_description: "client_id 'no-such-client' is not a registered client" },
    });
    const codeOnly = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none' });
    const codeClientId = codeOnly.body.client_id as string;
    await expect(post(`client_id=${codeClientId}`)).resolves.toEqual({
      status: 400,
      body: { error: 'unauthorized_client', error_description: `client ${codeClientId} is not registered for the wallet-signature grant (${GRANT})` },
    });
    // JSON works as well as a form.
    const json = await post(JSON.stringify({ client_id: publicId() }), 'application/json');
    expect(json.status).toBe(200);
    expect(json.body.nonce).toMatch(/^[A-Za-z0-9]{24}$/);
    expect((await fetch(`${issuer}/wallet/nonce`)).status).toBe(405);
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

  test('a replayed DPoP proof is refused before anything changes: the nonce stays usable, no grant is stored, no sign-in is logged or audited', async () => {
    const keys = await generateKeyPair('ES256');
    const jwk = await exportJWK(keys.publicKey);
    const proof = (jti: string) =>
      new SignJWT({ htm: 'POST', htu: `${issuer}/token`, jti }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk }).setIssuedAt().sign(keys.privateKey);
    const grantRequest = (signedMessage: { message: string; signature: string }, dpop: string) =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop },
        body: new URLSearchParams({ grant_type: GRANT, client_id: publicId(), ...signedMessage, resource: RESOURCE, scope: 'read' }),
      });
    const mongo = await MongoClient.connect(mongoUri());
    const grants = () => mongo.db(as.dbName).collection('oidc_Grant').countDocuments();
    const signIns = (from: number) => logLines(as.server.output().slice(from)).filter((l) => l.event === 'login.succeeded').length;
    const audited = async () => {
      const storage = new MongoStorage({ uri: mongoUri(), dbName: as.dbName });
      try {
        return (await allAuditRecords(storage.audit)).filter((r) => r.type === 'login.succeeded').length;
      } finally {
        await storage.close();
      }
    };
    try {
      // A request's audit records are durable before its answer leaves (server/audit/trail.ts): counts read after an
      // answer are complete.
      const start = await audited();
      const reused = await proof(randomUUID());
      expect((await grantRequest(await signed(agentKey), reused)).status).toBe(200);
      expect(await audited()).toBe(start + 1);
      const before = { grants: await grants(), log: as.server.output().length };
      const second = await signed(agentKey);
      const replay = await grantRequest(second, reused);
      expect(replay.status).toBe(400);
      expect(await replay.json()).toEqual({ error: 'invalid_dpop_proof', error_description: 'DPoP proof JWT replay detected: each proof (its jti) may be used once' });
      expect({ grants: await grants(), audited: await audited() }).toEqual({ grants: before.grants, audited: start + 1 });
      // The message's nonce was not used up by the refused request: with a fresh proof it signs in.
      expect((await grantRequest(second, await proof(randomUUID()))).status).toBe(200);
      expect(await audited()).toBe(start + 2);
      // Log lines reach this process a little after the answers, in the order written: once the last sign-in's line
      // is here, a line of the refused request would be too.
      const deadline = Date.now() + 5000;
      while (signIns(before.log) < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(signIns(before.log)).toBe(1);
    } finally {
      await mongo.close();
    }
  });

  test('a public client without DPoP gets a short bearer token and no refresh token', async () => {
    const tokens = await oidc.genericGrantRequest(publicClient, GRANT, { ...(await signed(agentKey)), resource: RESOURCE, scope: 'read' });
    expect(tokens.token_type).toBe('bearer');
    expect(tokens.expires_in).toBeLessThanOrEqual(300);
    expect(tokens.refresh_token).toBeUndefined();
  });

  test('a confidential client authenticates with its secret', async () => {
    const clientId = confidential.clientMetadata().client_id;
    const tokens = await oidc.genericGrantRequest(confidential, GRANT, { ...(await signed(agentKey, {}, agentKey, clientId)), resource: RESOURCE, scope: 'read' });
    expect((await introspect(issuer, tokens.access_token)).client_id).toBe(clientId);
  });

  const refused: Array<[string, () => Promise<Record<string, string>>, string]> = [
    [
      'a replayed nonce',
      async () => {
        const once = await signed(agentKey);
        await oidc.genericGrantRequest(publicClient, GRANT, { ...once, resource: RESOURCE, scope: 'read' });
        return once;
      },
      'nonce',
    ],
    ['a nonce agentauth never issued', () => signedSiwe(issuer, agentKey, { address: agentKey.address, nonce: 'NeverIssued0000000000000' }), 'nonce'],
    ['a wrong domain', () => signed(agentKey, { domain: 'evil.example.com' }), 'domain'],
    ['a URI on another origin', () => signed(agentKey, { uri: 'https://evil.example.com/' }), 'uri'],
    ['an expired message', () => signed(agentKey, { issuedAt: new Date(Date.now() - 120_000), expirationTime: new Date(Date.now() - 61_000) }), 'expiration-time'],
    ['a message issued too long ago', () => signed(agentKey, { issuedAt: new Date(Date.now() - 10 * 60_000) }), 'issued-at'],
    ['a message not valid yet', () => signed(agentKey, { notBefore: new Date(Date.now() + 10 * 60_000) }), 'not-before'],
    ['a resource missing from resources', () => signed(agentKey, { resources: ['https://other.example.com'] }), 'resources'],
    ['a signature by another key', () => signed(agentKey, {}, otherKey), 'signature'],
    ['a chain that is not allowed', () => signed(agentKey, { chainId: 5 }), 'chain-id'],
    ['a message that does not parse', async () => {
      const s = await signed(agentKey);
      return { ...s, message: s.message.replace('Chain ID: 1', 'Chain ID: one') };
    }, 'message-format'],
  ];

  test.each(refused)('refused: %s (invalid_grant naming the rule, invalid_request for a message that is not one, one login.failed record with that rule)', async (_label, make, rule) => {
    const params = { ...(await make()), resource: RESOURCE, scope: 'read' };
    const { error, failed } = await refusedOnce(publicClient, params);
    expect(error).toMatchObject({ error: rule === 'message-format' ? 'invalid_request' : 'invalid_grant', error_description: expect.stringMatching(new RegExp(`^${rule}: `)) });
    expect(failed).toEqual([expect.objectContaining({ event: 'login.failed', rule, client_id: publicId() })]);
  });

  test('a URI with a password in its userinfo: the client is told its URI, the log line gives it without the password', async () => {
    const params = { ...(await signed(agentKey, { uri: 'https://user:hunter2@evil.example.com/' })), resource: RESOURCE, scope: 'read' };
    const { error, failed } = await refusedOnce(publicClient, params);
    expect(error).toMatchObject({ error: 'invalid_grant', error_description: expect.stringContaining("URI 'https://user:hunter2@evil.example.com/'") });
    expect(failed).toEqual([expect.objectContaining({ event: 'login.failed', rule: 'uri', reason: expect.stringContaining("URI 'https://[redacted]@evil.example.com/'") })]);
    expect(JSON.stringify(failed)).not.toContain('hunter2');
  });

  test('cross-client: a message whose nonce was issued for client A is refused for client B (nonce-binding) and stays usable by A', async () => {
    const forA = await signed(agentKey, { resources: [RESOURCE, scopeResource('read'), scopeResource('write')] });
    const otherId = otherClient.clientMetadata().client_id;
    const { error, failed } = await refusedOnce(otherClient, { ...forA, resource: RESOURCE, scope: 'write' });
    expect(error).toMatchObject({
      error: 'invalid_grant',
      error_description: expect.stringMatching(new RegExp(`^nonce-binding: nonce \\w+ was issued for another client, not for client ${otherId}`)),
    });
    expect(failed).toEqual([expect.objectContaining({ rule: 'nonce-binding', client_id: otherId })]);
    // B's refusal took nothing from A: the nonce was neither consumed nor charged.
    const tokens = await oidc.genericGrantRequest(publicClient, GRANT, { ...forA, resource: RESOURCE, scope: 'read write' });
    expect(tokens.scope).toBe('read write');
  });

  test('scope escalation: a scope the message does not sign is refused with invalid_scope; the signed scopes are granted', async () => {
    const readOnly = await signed(agentKey); // signs urn:agentauth:scope:read only
    const { error, failed } = await refusedOnce(publicClient, { ...readOnly, resource: RESOURCE, scope: 'read write' });
    expect(error).toMatchObject({ error: 'invalid_scope', error_description: expect.stringMatching(/^scope: the message does not sign scope write: /) });
    expect(failed).toEqual([expect.objectContaining({ rule: 'scope' })]);
    // A request naming no scope gets no token: a token for a resource server carries one of its scopes. Refused before
    // the message is checked, so its nonce is still there for the request that names a scope it signs.
    const signsRead = await signed(agentKey);
    const none = await oidc.genericGrantRequest(publicClient, GRANT, { ...signsRead, resource: RESOURCE }).then(() => undefined, (e: unknown) => e as Record<string, unknown>);
    expect(none).toMatchObject({ error: 'invalid_scope', error_description: `request at least one scope of ${RESOURCE} (read write) that the message signs: a token for it carries at least one` });
    expect((await oidc.genericGrantRequest(publicClient, GRANT, { ...signsRead, resource: RESOURCE, scope: 'read' })).scope).toBe('read');
    // A message that signs no scope cannot give a token for a scope.
    const noScope = await signed(agentKey, { resources: [RESOURCE] });
    expect((await refusedOnce(publicClient, { ...noScope, resource: RESOURCE, scope: 'read' })).error).toMatchObject({ error: 'invalid_scope' });
  });

  test('too many failed attempts: after 5 attempts on one nonce it is used up, even for a valid message', async () => {
    const valid = await signed(agentKey);
    const malformed = { ...valid, message: valid.message.replace('Chain ID: 1', 'Chain ID: one') };
    for (let i = 0; i < 5; i += 1) {
      const { error } = await refusedOnce(publicClient, { ...malformed, resource: RESOURCE, scope: 'read' });
      expect(error).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/^message-format: /) });
    }
    const { error, failed } = await refusedOnce(publicClient, { ...valid, resource: RESOURCE, scope: 'read' });
    expect(error).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/^attempts: nonce \w+ has been tried 5 times and is now used up/) });
    expect(failed).toEqual([expect.objectContaining({ rule: 'attempts' })]);
  });

  test('missing parameters and unknown resources are refused with the RFC codes', async () => {
    await expect(oidc.genericGrantRequest(publicClient, GRANT, { resource: RESOURCE, signature: '0x00' })).rejects.toMatchObject({ error: 'invalid_request' });
    await expect(
      oidc.genericGrantRequest(publicClient, GRANT, { ...(await signed(agentKey)), resource: 'https://unknown.example.com' }),
    ).rejects.toMatchObject({ error: 'invalid_target' });
  });
});
