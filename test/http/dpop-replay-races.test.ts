import { randomUUID } from 'node:crypto';

import { Wallet } from 'ethers';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import * as oidc from 'openid-client';

import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { Storage } from '../../adapters/types.js';
import { allAuditRecords } from '../support/audit.js';
import { baseConfig, insecure, OPAQUE_RESOURCE, REDIRECT, RESOURCE, RS_CLIENT, STRICT_REFRESH_TIERS } from '../support/agent-server.js';
import { replayId } from '../../server/dpop-replay.js';
import { all, basic, form, statuses } from '../support/races.js';
import { startConfigured, uniqueDbName } from '../support/server.js';
import { sealCredentialIds, storedKeyOf } from '../../adapters/sealed-credential-ids.js';
import type { RunningServer } from '../support/server.js';
import { mongoUri } from '../support/storages.js';
import { authorizeWithWallet } from '../support/user-agent.js';

/**
 * Design invariants 2 and 5 for DPoP proofs at the token endpoint, in one server process, on both stores (the
 * embedded store's race across processes is in multi-process.test.ts, MongoDB's across instances in dpop.test.ts): a
 * proof sent 50 times at once gives one token and 49 `invalid_dpop_proof`, and the refused requests leave nothing
 * behind: no token.issued record, no stored opaque token, no refresh token used up.
 */
const CONCURRENCY = 50;
const ROUNDS = 3;
const wallet = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const REPLAY = /^DPoP proof JWT replay detected: each proof \(its jti\) may be used once$/;

type SigningKey = Parameters<SignJWT['sign']>[0];

async function dpopKey() {
  const pair = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(pair.publicKey);
  return { pair, privateKey: pair.privateKey as SigningKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
}
type DpopKey = Awaited<ReturnType<typeof dpopKey>>;

/** One proof for POST `${issuer}/token`, to be sent as many times as a test likes. */
const proofFor = (key: DpopKey, issuer: string) =>
  new SignJWT({ htm: 'POST', htu: `${issuer}/token`, iat: Math.floor(Date.now() / 1000), jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk })
    .sign(key.privateKey);

const backends = [
  ['embedded (SQLite)', (): { env: Record<string, string>; open(dataDir: string, env: Record<string, string>): Storage } => ({
    env: {},
    open: (dataDir) => new SqliteStorage({ dataDir }),
  })],
  ['MongoDB wire (FerretDB)', (): { env: Record<string, string>; open(dataDir: string, env: Record<string, string>): Storage } => ({
    env: { MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('replay-races') },
    open: (_dataDir, env) => new MongoStorage({ uri: env.MONGODB_URI!, dbName: env.MONGODB_DB! }),
  })],
] as const;

describe.each(backends)('DPoP proof replay at the token endpoint, %s', (_name, backend) => {
  let server: RunningServer;
  let issuer: string;
  let storage: Storage;

  beforeAll(async () => {
    const b = backend();
    const started = await startConfigured(baseConfig({ tiers: STRICT_REFRESH_TIERS, registration: { quota: { max: 1000 } } }), b.env);
    server = started.server;
    issuer = server.url;
    // Opened as the server opens it: credential records under keyed hashes of their values (same KEK).
    storage = sealCredentialIds(b.open(started.env.AGENTAUTH_DATA_DIR!, started.env), Buffer.from(started.env.AGENTAUTH_KEK!, 'base64'), { acceptUnsealed: true });
    await storage.init();
  });
  afterAll(async () => {
    await server?.stop();
    await storage?.close();
  });

  const clientCredentials = (proof: string, resource = RESOURCE, scope = 'read') =>
    fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded', dpop: proof },
      body: form({ grant_type: 'client_credentials', resource, scope }),
    });
  const issuedTo = async (jkt: string) =>
    (await allAuditRecords(storage.audit)).filter((r) => r.type === 'token.issued' && (r.details as { jkt?: string }).jkt === jkt);

  test.each(Array.from({ length: ROUNDS }, (_, i) => [i + 1]))('JWT access token, round %i: one proof sent 50 times at once gives one token and one token.issued record', async () => {
    const key = await dpopKey();
    const proof = await proofFor(key, issuer);
    const results = await all(CONCURRENCY, () => clientCredentials(proof));
    expect(statuses(results)).toBe([...Array(CONCURRENCY - 1).fill('400'), '200'].sort().join(','));
    for (const r of results.filter((x) => x.status === 400)) {
      expect(r.body).toEqual({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(REPLAY) });
    }
    const won = results.find((r) => r.status === 200)!.body as { access_token: string; token_type: string };
    expect(won.token_type).toBe('DPoP');
    // The 49 refused requests were refused before any token was built: none is recorded.
    const issued = await issuedTo(key.jkt);
    expect(issued).toHaveLength(1);
    expect(issued[0]!.details.jti).toBe(JSON.parse(Buffer.from(won.access_token.split('.')[1]!, 'base64url').toString()).jti);
  });

  test('opaque access token: of 50 requests with one proof, one token is stored and it is the one handed out', async () => {
    const key = await dpopKey();
    const proof = await proofFor(key, issuer);
    const results = await all(CONCURRENCY, () => clientCredentials(proof, OPAQUE_RESOURCE, 'files'));
    expect(statuses(results)).toBe([...Array(CONCURRENCY - 1).fill('400'), '200'].sort().join(','));
    expect(results.filter((r) => r.status === 400).every((r) => r.body.error === 'invalid_dpop_proof')).toBe(true);
    const won = results.find((r) => r.status === 200)!.body as { access_token: string };
    const tokens = storage.model('ClientCredentials');
    const stored = (await tokens.list(undefined, 100_000)).filter((r) => r.payload.jkt === key.jkt);
    expect(stored.map((r) => r.id)).toEqual([storedKeyOf(tokens, won.access_token)]);
    expect((await tokens.find(won.access_token))?.jkt).toBe(key.jkt);
  });

  test('a proof used once is refused the second time, and the refused request records nothing', async () => {
    const key = await dpopKey();
    const proof = await proofFor(key, issuer);
    expect((await clientCredentials(proof)).status).toBe(200);
    const again = await clientCredentials(proof);
    expect(again.status).toBe(400);
    expect(await again.json()).toEqual({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(REPLAY) });
    expect(await issuedTo(key.jkt)).toHaveLength(1);
    // The same key goes on working with fresh proofs.
    expect((await clientCredentials(await proofFor(key, issuer))).status).toBe(200);
  });

  test('a proof replayed on a refresh request changes nothing: the refresh token it came with is not used up', async () => {
    const key = await dpopKey();
    const config = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'openid read' },
      oidc.None(),
      insecure,
    );
    const handle = oidc.getDPoPHandle(config, key.pair);
    // Two grants of one public client, both bound to the same DPoP key (no refresh grace: a second use revokes).
    const grant = async () => {
      const verifier = oidc.randomPKCECodeVerifier();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      });
      const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet });
      return oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE }, { DPoP: handle });
    };
    const [a, b] = [await grant(), await grant()];
    const refresh = (token: string, proof: string) =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: proof },
        body: form({ grant_type: 'refresh_token', refresh_token: token, client_id: config.clientMetadata().client_id, resource: RESOURCE }),
      });
    const proof = await proofFor(key, issuer);
    expect((await refresh(a.refresh_token!, proof)).status).toBe(200);
    const replayed = await refresh(b.refresh_token!, proof);
    expect(replayed.status).toBe(400);
    expect(await replayed.json()).toEqual({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(REPLAY) });
    // b's refresh token was not consumed by the refused request: with a fresh proof it rotates normally (had it been
    // used, this would be a reuse, answered invalid_grant, and b's grant revoked).
    const fresh = await refresh(b.refresh_token!, await proofFor(key, issuer));
    expect(fresh.status).toBe(200);
    expect(((await fresh.json()) as { refresh_token?: string }).refresh_token).toEqual(expect.any(String));
  });
});

/**
 * RFC 9449 §11.1: a proof is refused again for as long as it would be accepted. oidc-provider takes a proof without a
 * nonce while its `iat` is within 300 s of now either way, and used to keep its replay record for 300 s after the use:
 * a proof dated 290 s ahead was accepted again once its record expired. The record now lasts until `iat` + 301 s,
 * also for a proof whose nonce is empty (which oidc-provider takes as none; it was accepted again 300 s after its use).
 */
describe('DPoP replay record: kept while the proof would be accepted (embedded store)', () => {
  let server: RunningServer;
  let storage: SqliteStorage;

  beforeAll(async () => {
    const started = await startConfigured(baseConfig());
    server = started.server;
    storage = new SqliteStorage({ dataDir: started.env.AGENTAUTH_DATA_DIR! });
    await storage.init();
  });
  afterAll(async () => {
    await server?.stop();
    await storage?.close();
  });

  /** The replay record's expiry (epoch ms) for a proof's jti used by RS_CLIENT. */
  const recordExpiry = (jti: string): number => {
    const row = storage.db.prepare("SELECT expires_at FROM oidc_records WHERE model = 'ReplayDetection' AND id = ?").get(replayId(RS_CLIENT.id, jti)) as { expires_at: number } | undefined;
    expect(row).toBeDefined();
    return row!.expires_at;
  };

  // An empty nonce is no nonce to oidc-provider (`if (!payload.nonce)`): such a proof is accepted on its iat alone, as
  // one without the member, and its record must last as long.
  test.each([
    ['dated now', 0, {}],
    ['dated 290 s ahead', 290, {}],
    ['dated 250 s ago', -250, {}],
    ['dated 290 s ahead, with an empty nonce', 290, { nonce: '' }],
    ['dated 250 s ago, with an empty nonce', -250, { nonce: '' }],
  ])('a proof %s: its record lasts while the proof is accepted, until iat + 301 s and at least use + 300 s', async (_label, offset, claims) => {
    const key = await dpopKey();
    const jti = randomUUID();
    const iat = Math.floor(Date.now() / 1000) + offset;
    const proof = await new SignJWT({ htm: 'POST', htu: `${server.url}/token`, iat, jti, ...claims }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk }).sign(key.privateKey);
    const send = () =>
      fetch(`${server.url}/token`, {
        method: 'POST',
        headers: { authorization: basic(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded', dpop: proof },
        body: form({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
      });
    const usedAt = Math.floor(Date.now() / 1000);
    expect((await send()).status).toBe(200);
    const expiry = recordExpiry(jti);
    // Never before the proof stops being accepted: oidc-provider compares whole seconds (|floor(now) - iat| <= 300),
    // so it takes the proof until the second iat + 301 begins (the record used to end up to a second earlier, and the
    // proof was accepted again in between). Nor before use + 300, as before; at most a few seconds more.
    expect(expiry).toBeGreaterThanOrEqual((iat + 301) * 1000);
    expect(expiry).toBeGreaterThanOrEqual((usedAt + 300) * 1000);
    expect(expiry).toBeLessThanOrEqual((Math.max(iat, usedAt) + 301 + 15) * 1000);
    expect((await send()).status).toBe(400);
  });
});
