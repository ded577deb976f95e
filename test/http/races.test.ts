import { Wallet } from 'ethers';

import { MongoStorage } from '../../adapters/mongodb.js';
import { allAuditRecords } from '../support/audit.js';
import { baseConfig, STRICT_REFRESH_TIERS, introspect, register, REDIRECT, RESOURCE, RS_CLIENT, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { all, basic, codeFor as signedInCode, form, oneDpopProof, redemption, refreshing, refusals, statuses } from '../support/races.js';
import type { CodeGrant } from '../support/races.js';
import { mongoUri } from '../support/storages.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';

/**
 * Design invariant 2 on the MongoDB wire protocol (FerretDB here, whose filtered updates are not atomic): for every
 * single-use item, 50 concurrent uses give exactly one success, five times over, and a concurrent reuse revokes what
 * a sequential one revokes. Each round fires all 50 requests at once over separate connections.
 */
const CONCURRENCY = 50;
const ROUNDS = 5;
const WALLET_GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const wallet = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');

describe(`single use under ${CONCURRENCY} concurrent requests, ${ROUNDS} rounds, on the MongoDB wire protocol`, () => {
  let as: AgentServer;
  let issuer: string;
  let storage: MongoStorage;

  beforeAll(async () => {
    // What is checked is who wins, not how fast: a storage call FerretDB answers late on a loaded CI machine (past the
    // default storage.timeoutMs, 2 s) is a 503 in place of a loser's refusal, the one other answer a loser can get.
    // Once in CI a registration access token read's losers were not all 401; each assertion now prints the refusals it
    // saw. Latency bounds are storage-faults.test.ts's.
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 1000 } }, tiers: STRICT_REFRESH_TIERS, storage: { timeoutMs: 10_000 } }));
    issuer = as.server.url;
    storage = new MongoStorage({ uri: mongoUri(), dbName: as.dbName });
    await storage.init();
  });
  afterAll(async () => {
    await as?.server.stop();
    await storage?.close();
  });

  const codeFor = () => signedInCode(issuer, wallet);

  const redeem = (c: CodeGrant) =>
    fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic(c.clientId, c.secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: redemption(c),
    });
  const refresh = (clientId: string, secret: string, token: string) =>
    fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic(clientId, secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: refreshing(token),
    });

  test.each(Array.from({ length: ROUNDS }, (_, i) => [i + 1]))('authorization code, round %i: one success, and the winner\'s tokens are revoked (RFC 6749 §4.1.2)', async () => {
    const c = await codeFor();
    const results = await all(CONCURRENCY, () => redeem(c));
    const winners = results.filter((r) => r.status === 200);
    expect(winners).toHaveLength(1);
    expect(results.filter((r) => r.status === 400).every((r) => r.body.error === 'invalid_grant')).toBe(true);
    expect(statuses(results)).toBe([...Array(CONCURRENCY - 1).fill('400'), '200'].sort().join(','));
    const won = winners[0]!.body as { access_token: string; refresh_token: string };
    expect(await introspect(issuer, won.access_token)).toEqual({ active: false });
    const again = await refresh(c.clientId, c.secret, won.refresh_token);
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: string }).error).toBe('invalid_grant');
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => [i + 1]))('refresh token, round %i: one success, and the whole family is revoked, the winner\'s new tokens too', async () => {
    const c = await codeFor();
    const first = (await (await redeem(c)).json()) as { access_token: string; refresh_token: string };
    expect((await introspect(issuer, first.access_token)).active).toBe(true);
    const results = await all(CONCURRENCY, () => refresh(c.clientId, c.secret, first.refresh_token));
    const winners = results.filter((r) => r.status === 200);
    expect(winners).toHaveLength(1);
    expect(refusals(results).filter((r) => r !== '400 invalid_grant')).toEqual([]);
    const won = winners[0]!.body as { access_token: string; refresh_token: string };
    expect(await introspect(issuer, first.access_token)).toEqual({ active: false });
    expect(await introspect(issuer, won.access_token)).toEqual({ active: false });
    const next = await refresh(c.clientId, c.secret, won.refresh_token);
    expect(next.status).toBe(400);
    expect(((await next.json()) as { error: string }).error).toBe('invalid_grant');
  });

  test('a concurrent reuse is audited like a sequential one', async () => {
    const records = await allAuditRecords(storage.audit);
    expect(records.filter((r) => r.type === 'grant.revoked').length).toBeGreaterThanOrEqual(2 * ROUNDS);
    expect(records.filter((r) => r.type === 'refresh.reuse_detected').length).toBeGreaterThanOrEqual(ROUNDS);
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => [i + 1]))('registration access token read, round %i: one success, one working successor', async () => {
    const created = await register(issuer, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
    const uri = created.body.registration_client_uri as string;
    const rat = created.body.registration_access_token as string;
    const results = await all(CONCURRENCY, () => fetch(uri, { headers: { authorization: `Bearer ${rat}` } }));
    const winners = results.filter((r) => r.status === 200);
    expect(winners).toHaveLength(1);
    expect(refusals(results).filter((r) => r !== '401 invalid_token')).toEqual([]);
    // A loser is told why: its token was used up by another request at the same moment, or is already gone (rotated).
    const said = new Set(results.filter((r) => r.status !== 200).map((r) => r.body.error_description));
    for (const description of said) expect(['registration access token already used: every read or update returns a new one', 'invalid token provided']).toContain(description);
    // The used token's record goes after the answer, once its audit record is durable (server/http/registration-steps.ts
    // rotateRegistrationAccessToken), so it may still be there a moment after the responses: wait for it, boundedly.
    const stored = () => storage.db.collection('oidc_RegistrationAccessToken').countDocuments({ clientId: created.body.client_id as string });
    for (const until = Date.now() + 3000; (await stored()) > 1 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
    expect(await stored()).toBe(1);
    const successor = winners[0]!.body.registration_access_token as string;
    expect((await fetch(uri, { headers: { authorization: `Bearer ${successor}` } })).status).toBe(200);
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => [i + 1]))('registration access token update, round %i: one success, one working successor', async () => {
    const body = { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] };
    const created = await register(issuer, body);
    const uri = created.body.registration_client_uri as string;
    const rat = created.body.registration_access_token as string;
    const results = await all(CONCURRENCY, (i) =>
      fetch(uri, { method: 'PUT', headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' }, body: JSON.stringify({ ...body, client_id: created.body.client_id, client_name: `update ${i}` }) }),
    );
    const winners = results.filter((r) => r.status === 200);
    expect(winners).toHaveLength(1);
    expect(refusals(results).filter((r) => r !== '401 invalid_token')).toEqual([]);
    // Only the winner's update was applied.
    const successor = winners[0]!.body.registration_access_token as string;
    const read = (await (await fetch(uri, { headers: { authorization: `Bearer ${successor}` } })).json()) as Record<string, unknown>;
    expect(read.client_name).toBe(winners[0]!.body.client_name);
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => [i + 1]))('wallet sign-in nonce, round %i: one signed message yields one token', async () => {
    const created = await register(issuer, { grant_types: [WALLET_GRANT], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    expect(created.status).toBe(201);
    const c = { id: created.body.client_id as string, secret: created.body.client_secret as string };
    const signed = await signedSiwe(issuer, wallet, { address: wallet.address, nonce: await fetchNonce(issuer, c.id) });
    const results = await all(CONCURRENCY, () =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: basic(c.id, c.secret), 'content-type': 'application/x-www-form-urlencoded' },
        body: form({ grant_type: WALLET_GRANT, ...signed, resource: RESOURCE, scope: 'read' }),
      }),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(refusals(results).filter((r) => r !== '400 invalid_grant')).toEqual([]);
  });

  test.each(Array.from({ length: ROUNDS }, (_, i) => [i + 1]))('DPoP proof jti, round %i: one token for one proof', async () => {
    const proof = await oneDpopProof(issuer, RS_CLIENT.id, RS_CLIENT.secret);
    const results = await all(CONCURRENCY, () =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: basic(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded', dpop: proof },
        body: form({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
      }),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(refusals(results).filter((r) => r !== '400 invalid_dpop_proof')).toEqual([]);
  });
});
