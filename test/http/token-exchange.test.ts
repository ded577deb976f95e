import { hash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import * as oidc from 'openid-client';

import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import { sealCredentialIds } from '../../adapters/sealed-credential-ids.js';
import type { Storage } from '../../adapters/types.js';
import { insecure, register } from '../support/agent-server.js';
import { allAuditRecords } from '../support/audit.js';
import { mongoUri } from '../support/storages.js';
import { startConfigured, uniqueDbName } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const SKILL_A = 'https://skill-a.example.com';
const SKILL_B = 'https://skill-b.example.com'; // opaque tokens
const SKILL_C = 'https://skill-c.example.com';
const SHORT = 'https://short.example.com'; // one-second tokens
const RS = { id: 'resource-server', secret: 'resource-server-secret-0123456789abcdefgh' };
const secretOf = (id: string) => `${id}-secret-0123456789abcdefghijklmnop`;
const staticClient = (id: string, grants: string[]) => ({ client_id: id, client_secret: secretOf(id), grant_types: grants, tier: 'bound' });

const CONFIG = {
  resourceServers: [
    { identifier: SKILL_A, scopes: ['read', 'write'] },
    { identifier: SKILL_B, scopes: ['read', 'write'], accessTokenFormat: 'opaque' },
    { identifier: SKILL_C, scopes: ['read', 'write'] },
    { identifier: SHORT, scopes: ['read'], accessTokenTTL: 1 },
  ],
  clients: [
    { client_id: RS.id, client_secret: RS.secret, grant_types: ['client_credentials'] },
    staticClient('agent', ['client_credentials', EXCHANGE]),
    staticClient('skill-a', [EXCHANGE]),
    staticClient('skill-b', [EXCHANGE]),
    staticClient('skill-c', [EXCHANGE]),
    staticClient('rogue', [EXCHANGE]),
    { ...staticClient('skill-n', [EXCHANGE]), scope: 'read' },
    // Allowed skill A → skill B and → skill C by its rule; its own metadata narrows that to skill C.
    { ...staticClient('skill-x', [EXCHANGE]), token_exchange_resources: [SKILL_C] },
    // Takes part in chains of one actor only (itself), below the server's maxDepth of 2.
    { ...staticClient('skill-d', [EXCHANGE]), token_exchange_max_depth: 1 },
    // Registered for the grant, but no rule names it.
    staticClient('norule', [EXCHANGE]),
    // A public client (no authentication): anyone can send its client_id.
    { client_id: 'skill-pub', token_endpoint_auth_method: 'none', grant_types: [EXCHANGE], tier: 'bound' },
  ],
  tokenExchange: {
    maxDepth: 2,
    // So that the tests of registration metadata (token_exchange_resources, ...) can register clients for the grant
    // through open registration; the refusal of anonymous registrations without it has a server of its own below.
    allowAnonymous: true,
    rules: [
      { clients: ['skill-a'], from: [SKILL_A, SHORT], to: [SKILL_B], nextActor: 'skill-b' },
      { clients: ['skill-b'], from: [SKILL_B], to: [SKILL_C], scopes: ['read'] },
      { clients: ['skill-c'], from: [SKILL_C], to: [SKILL_A] },
      { clients: ['rogue'], from: [SKILL_B], to: [SKILL_C] },
      { clients: ['agent'], from: [SKILL_A], to: [SKILL_B] },
      { clients: ['skill-n'], from: [SKILL_A], to: [SKILL_B] },
      { clients: ['skill-x'], from: [SKILL_A], to: [SKILL_B, SKILL_C] },
      { clients: ['skill-d'], from: [SKILL_B], to: [SKILL_C] },
      { clients: ['skill-pub'], from: [SKILL_A], to: [SKILL_C] },
    ],
  },
};

type Env = Record<string, string>;
const backends: Array<[string, () => Env, (env: Env) => Storage]> = [
  ['SQLite', () => ({}), (env) => new SqliteStorage({ dataDir: env.AGENTAUTH_DATA_DIR! })],
  ['MongoDB (FerretDB)', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('exchange') }), (env) => new MongoStorage({ uri: env.MONGODB_URI!, dbName: env.MONGODB_DB! })],
];

describe.each(backends)('RFC 8693 token exchange on %s', (_name, storeEnv, openStorage) => {
  let env: Env;
  let server: RunningServer;
  let issuer: string;
  let meta: oidc.ServerMetadata;
  const clients = new Map<string, { config: oidc.Configuration; dpop: oidc.DPoPHandle; jkt: string }>();

  async function client(id: string, secret = secretOf(id)) {
    const config = new oidc.Configuration(meta, id, secret, oidc.ClientSecretBasic(secret));
    oidc.allowInsecureRequests(config);
    const keys = await oidc.randomDPoPKeyPair('ES256', { extractable: true });
    const jkt = await calculateJwkThumbprint(await exportJWK(keys.publicKey));
    return { config, dpop: oidc.getDPoPHandle(config, keys), jkt };
  }

  beforeAll(async () => {
    ({ env, server } = await startConfigured(CONFIG, storeEnv()));
    issuer = server.url;
    meta = (await oidc.discovery(new URL(issuer), RS.id, undefined, oidc.ClientSecretBasic(RS.secret), insecure)).serverMetadata();
    for (const id of ['agent', 'skill-a', 'skill-b', 'skill-c', 'rogue', 'skill-n', 'skill-x', 'skill-d', 'norule']) clients.set(id, await client(id));
  });

  afterAll(async () => {
    await server?.stop();
  });

  const c = (id: string) => clients.get(id)!;

  async function agentToken(resource = SKILL_A, scope = 'read write'): Promise<string> {
    const agent = c('agent');
    return (await oidc.clientCredentialsGrant(agent.config, { resource, scope }, { DPoP: agent.dpop })).access_token;
  }

  async function exchange(id: string, subjectToken: string, params: Record<string, string>, dpop: oidc.DPoPHandle | undefined = c(id).dpop) {
    return oidc.genericGrantRequest(c(id).config, EXCHANGE, { subject_token: subjectToken, subject_token_type: AT_TYPE, ...params }, dpop ? { DPoP: dpop } : {});
  }

  async function refusal(promise: Promise<unknown>): Promise<{ status?: number; error?: string; error_description?: string }> {
    try {
      await promise;
    } catch (err) {
      const e = err as { status?: number; error?: string; error_description?: string };
      return { status: e.status, error: e.error, error_description: e.error_description };
    }
    throw new Error('the exchange was expected to be refused but succeeded');
  }

  async function introspect(token: string): Promise<Record<string, unknown>> {
    const rs = new oidc.Configuration(meta, RS.id, RS.secret, oidc.ClientSecretBasic(RS.secret));
    oidc.allowInsecureRequests(rs);
    return (await oidc.tokenIntrospection(rs, token)) as unknown as Record<string, unknown>;
  }

  test('discovery advertises the token-exchange grant', () => {
    expect(meta.grant_types_supported).toContain(EXCHANGE);
  });

  test('agent → skill A → skill B: each hop narrows, binds to its own key, and nests act; introspection shows the chain', async () => {
    const t0 = await agentToken();
    // Hop 1: skill A received t0 (audience skill A) and exchanges it for a token for skill B (opaque).
    const hop1 = await exchange('skill-a', t0, { resource: SKILL_B, scope: 'read write' });
    expect(hop1.token_type).toBe('dpop');
    expect(hop1.issued_token_type).toBe(AT_TYPE);
    expect(hop1.scope).toBe('read write');
    const i1 = await introspect(hop1.access_token);
    expect(i1).toMatchObject({ active: true, sub: 'agent', client_id: 'skill-a', aud: SKILL_B, scope: 'read write', act: { client_id: 'skill-a' } });
    expect((i1.cnf as { jkt: string }).jkt).toBe(c('skill-a').jkt);
    expect((i1.act as Record<string, unknown>).act).toBeUndefined();

    // Hop 2: skill B exchanges the opaque token for a JWT for skill C; its rule allows read only.
    const hop2 = await exchange('skill-b', hop1.access_token, { audience: SKILL_C });
    expect(hop2.scope).toBe('read');
    const claims = decodeJwt(hop2.access_token);
    expect(claims).toMatchObject({ sub: 'agent', client_id: 'skill-b', aud: SKILL_C, scope: 'read', act: { client_id: 'skill-b', act: { client_id: 'skill-a' } } });
    expect((claims.cnf as { jkt: string }).jkt).toBe(c('skill-b').jkt);
    // The parent link for cascade revocation: the SHA-256 of the parent token's jti (an opaque token's value is its jti).
    expect(claims.agentauth_parent).toBe(hash('sha256', hop1.access_token, 'hex'));
    expect(claims.exp! - claims.iat!).toBeLessThanOrEqual(900);
    const i2 = await introspect(hop2.access_token);
    expect(i2).toMatchObject({ active: true, sub: 'agent', client_id: 'skill-b', act: { client_id: 'skill-b', act: { client_id: 'skill-a' } } });

    // A third hop would make the chain three actors deep; this server allows two.
    const tooDeep = await refusal(exchange('skill-c', hop2.access_token, { resource: SKILL_A, scope: 'read' }));
    expect(tooDeep).toMatchObject({ status: 400, error: 'invalid_request', error_description: expect.stringMatching(/3 actors deep.*at most 2/) });
  });

  test('refusals: wider scope, audience not allowed, may_act, another key, revoked, expired, unknown token type', async () => {
    const t0 = await agentToken(SKILL_A, 'read');
    // Wider than the subject token (read only).
    expect(await refusal(exchange('skill-a', t0, { resource: SKILL_B, scope: 'read write' }))).toMatchObject({
      status: 400, error: 'invalid_scope', error_description: expect.stringMatching(/write is wider/),
    });
    const hop1 = await exchange('skill-a', await agentToken(), { resource: SKILL_B });
    // Wider than the hop's rule (skill B may pass on read only).
    expect(await refusal(exchange('skill-b', hop1.access_token, { resource: SKILL_C, scope: 'read write' }))).toMatchObject({ status: 400, error: 'invalid_scope' });
    // An audience no rule allows for this client.
    expect(await refusal(exchange('skill-a', t0, { resource: SKILL_C }))).toMatchObject({
      status: 400, error: 'invalid_target', error_description: expect.stringMatching(/may not exchange a token for https:\/\/skill-a\.example\.com into one for https:\/\/skill-c\.example\.com/),
    });
    // hop1 carries may_act { client_id: skill-b }: the rogue client is allowed that hop by policy but not named.
    expect((await introspect(hop1.access_token)).may_act).toEqual({ client_id: 'skill-b' });
    expect(await refusal(exchange('rogue', hop1.access_token, { resource: SKILL_C }))).toMatchObject({
      status: 400, error: 'invalid_request', error_description: expect.stringMatching(/may_act does not name client rogue/),
    });
    // The holder of a DPoP-bound token may not move it to another key by exchanging it.
    const other = await client('agent');
    expect(await refusal(exchange('agent', await agentToken(), { resource: SKILL_B }, other.dpop))).toMatchObject({
      status: 400, error: 'invalid_request', error_description: expect.stringMatching(/bound to another key/),
    });
    // ...with its own key it may (its rule allows skill A → skill B).
    expect((await exchange('agent', await agentToken(), { resource: SKILL_B })).issued_token_type).toBe(AT_TYPE);
    // A revoked subject token (JWT through the denylist).
    const revoked = await agentToken();
    await oidc.tokenRevocation(c('agent').config, revoked);
    expect(await refusal(exchange('skill-a', revoked, { resource: SKILL_B }))).toMatchObject({
      status: 400, error: 'invalid_request', error_description: expect.stringMatching(/not an active access token/),
    });
    // A revoked opaque subject token.
    const opaque = await exchange('skill-a', await agentToken(), { resource: SKILL_B });
    await oidc.tokenRevocation(c('skill-a').config, opaque.access_token);
    expect(await refusal(exchange('skill-b', opaque.access_token, { resource: SKILL_C }))).toMatchObject({ status: 400, error: 'invalid_request' });
    // An expired subject token (the SHORT resource's tokens live one second).
    const short = await agentToken(SHORT, 'read');
    await sleep(2100);
    expect(await refusal(exchange('skill-a', short, { resource: SKILL_B }))).toMatchObject({
      status: 400, error: 'invalid_request', error_description: expect.stringMatching(/expired, revoked, or not one/),
    });
    // Only access tokens are issued.
    expect(await refusal(exchange('skill-a', t0, { resource: SKILL_B, requested_token_type: 'urn:ietf:params:oauth:token-type:id_token' }))).toMatchObject({ status: 400, error: 'invalid_request' });
  });

  test('an actor_token must be an active access token of the exchanging client; any other is invalid_request (RFC 8693 §2.2.2)', async () => {
    // skill A's own token (what it got from an earlier exchange) may stand for it as the actor.
    const own = await exchange('skill-a', await agentToken(), { resource: SKILL_B });
    const withActor = { resource: SKILL_B, actor_token: own.access_token, actor_token_type: AT_TYPE };
    expect((await exchange('skill-a', await agentToken(), withActor)).issued_token_type).toBe(AT_TYPE);
    // Another client's token, an unknown one, and a revoked one of its own are refused.
    for (const actor of [await agentToken(SKILL_B, 'read'), 'not-a-token']) {
      expect(await refusal(exchange('skill-a', await agentToken(), { ...withActor, actor_token: actor }))).toMatchObject({
        status: 400, error: 'invalid_request', error_description: 'actor_token is not an active access token issued to the exchanging client',
      });
    }
    await oidc.tokenRevocation(c('skill-a').config, own.access_token);
    expect(await refusal(exchange('skill-a', await agentToken(), withActor))).toMatchObject({ status: 400, error: 'invalid_request' });
  });

  test('each exchange is audited as token.exchanged, linking the new token and its parent by hash', async () => {
    const t0 = await agentToken();
    const hop1 = await exchange('skill-a', t0, { resource: SKILL_B });
    const storage = openStorage(env);
    await storage.init();
    try {
      const records = await allAuditRecords(storage.audit);
      const exchanged = records.find((r) => r.type === 'token.exchanged' && (r.details as Record<string, unknown>).sha256 === hash('sha256', hop1.access_token, 'hex'));
      expect(exchanged).toMatchObject({
        client_id: 'skill-a',
        sub: 'agent',
        details: { parent_jti_sha256: hash('sha256', decodeJwt(t0).jti!, 'hex'), parent_client_id: 'agent', from: SKILL_A, to: SKILL_B, depth: 1 },
      });
      // Never the token itself.
      expect(JSON.stringify(records)).not.toContain(hop1.access_token);
    } finally {
      await storage.close();
    }
  });

  test('a replayed DPoP proof is refused before anything is stored: no grant is left behind by the refused exchanges', async () => {
    const keys = await generateKeyPair('ES256');
    const jwk = await exportJWK(keys.publicKey);
    const proof = await new SignJWT({ htm: 'POST', htu: `${issuer}/token`, jti: randomUUID() })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk })
      .setIssuedAt()
      .sign(keys.privateKey);
    const subject = await agentToken();
    const exchangeWith = () =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`skill-a:${secretOf('skill-a')}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded', dpop: proof },
        body: new URLSearchParams({ grant_type: EXCHANGE, subject_token: subject, subject_token_type: AT_TYPE, resource: SKILL_B, scope: 'read' }),
      });
    const storage = openStorage(env);
    await storage.init();
    try {
      const grants = async () => (await storage.model('Grant').list(undefined, 100_000)).length;
      expect((await exchangeWith()).status).toBe(200);
      const after = await grants();
      for (let i = 0; i < 3; i += 1) {
        const replay = await exchangeWith();
        expect(replay.status).toBe(400);
        expect(await replay.json()).toEqual({ error: 'invalid_dpop_proof', error_description: 'DPoP proof JWT replay detected: each proof (its jti) may be used once' });
      }
      expect(await grants()).toBe(after);
    } finally {
      await storage.close();
    }
  });

  test('a public exchanger must prove the subject token\'s key: a copied token cannot be re-bound to the copier\'s key through it (RFC 8693 §2.1)', async () => {
    const pub = new oidc.Configuration(meta, 'skill-pub', undefined, oidc.None());
    oidc.allowInsecureRequests(pub);
    const agentKeys = await oidc.randomDPoPKeyPair('ES256');
    const agentConfig = c('agent').config;
    const t0 = (await oidc.clientCredentialsGrant(agentConfig, { resource: SKILL_A, scope: 'read' }, { DPoP: oidc.getDPoPHandle(agentConfig, agentKeys) })).access_token;
    const send = (subject: string, keys: oidc.CryptoKeyPair) =>
      oidc.genericGrantRequest(pub, EXCHANGE, { subject_token: subject, subject_token_type: AT_TYPE, resource: SKILL_C }, { DPoP: oidc.getDPoPHandle(pub, keys) });
    // Whoever copied t0 sends it under the public client's name with a key of their own: refused.
    const copier = await oidc.randomDPoPKeyPair('ES256', { extractable: true });
    expect(await refusal(send(t0, copier))).toEqual({
      status: 400,
      error: 'invalid_request',
      error_description: 'the subject token is DPoP-bound to another key: send the exchange request with a DPoP proof of the key the subject token is bound to',
    });
    // A bearer subject token proves nothing about who sends it: refused too.
    const rs = new oidc.Configuration(meta, RS.id, RS.secret, oidc.ClientSecretBasic(RS.secret));
    oidc.allowInsecureRequests(rs);
    const bearer = (await oidc.clientCredentialsGrant(rs, { resource: SKILL_A, scope: 'read' })).access_token;
    expect(await refusal(send(bearer, copier))).toMatchObject({ status: 400, error: 'invalid_request', error_description: expect.stringMatching(/^a public client may exchange only a DPoP-bound subject token, proving its key/) });
    // The holder of t0's key may: the new token is bound to that key.
    const issued = await send(t0, agentKeys);
    const jkt = await calculateJwkThumbprint(await exportJWK(agentKeys.publicKey));
    expect(decodeJwt(issued.access_token)).toMatchObject({ aud: SKILL_C, act: { client_id: 'skill-pub' }, cnf: { jkt } });
  });

  test('a client registering anonymously may not register the token-exchange grant (tokenExchange.allowAnonymous is off), neither at registration nor by an RFC 7592 update', async () => {
    const strict = await startConfigured({ ...CONFIG, tokenExchange: { ...CONFIG.tokenExchange, allowAnonymous: false } }, storeEnv());
    try {
      await anonymousExchangeRegistrationRefused(strict.server.url);
    } finally {
      await strict.server.stop();
    }
  });

  async function anonymousExchangeRegistrationRefused(issuer: string): Promise<void> {
    // It was registered (201) and then refused at every exchange with unauthorized_client.
    const reg = await register(issuer, { grant_types: [EXCHANGE], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none' });
    expect(reg).toMatchObject({ status: 400, body: { error: 'invalid_client_metadata', error_description: expect.stringContaining(`${EXCHANGE} is not available to clients registered without an initial access token on this server (the operator enables it with tokenExchange.allowAnonymous)`) } });
    // An anonymous client adding it later is refused the same way, and keeps what it had.
    const plain = await register(issuer, { grant_types: ['authorization_code'], redirect_uris: ['http://127.0.0.1:8765/callback'], token_endpoint_auth_method: 'none' });
    expect(plain.status).toBe(201);
    const update = await fetch(plain.body.registration_client_uri as string, {
      method: 'PUT',
      headers: { authorization: `Bearer ${plain.body.registration_access_token as string}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: plain.body.client_id, grant_types: ['authorization_code', EXCHANGE], redirect_uris: ['http://127.0.0.1:8765/callback'], token_endpoint_auth_method: 'none' }),
    });
    expect([update.status, ((await update.json()) as { error: string }).error]).toEqual([400, 'invalid_client_metadata']);
  }

  test('a client that may not exchange learns nothing about the token it presents: the same refusal for a live one and garbage', async () => {
    const live = await agentToken();
    const opaque = await agentToken(SKILL_B, 'read');
    const answers = [];
    for (const token of [live, opaque, 'not-a-token', `${live.slice(0, -4)}AAAA`]) answers.push(await refusal(exchange('norule', token, { resource: SKILL_B })));
    for (const a of answers) {
      expect(a).toEqual({ status: 400, error: 'unauthorized_client', error_description: 'no tokenExchange rule of this server names client norule (by its id or its tier): it may not exchange tokens' });
    }
  });

  test('several resources or audiences are invalid_target (RFC 8693 §2.2.2), whichever way they are spelled', async () => {
    const subject = await agentToken();
    const send = (pairs: Array<[string, string]>) =>
      oidc.genericGrantRequest(c('skill-x').config, EXCHANGE, new URLSearchParams([['subject_token', subject], ['subject_token_type', AT_TYPE], ...pairs]), { DPoP: c('skill-x').dpop });
    for (const pairs of [
      [['resource', SKILL_B], ['resource', SKILL_C]],
      [['resource', SKILL_C], ['resource', SKILL_C]],
      [['audience', SKILL_B], ['audience', SKILL_C]],
      [['resource', SKILL_C], ['audience', SKILL_B]],
      [['resource', SKILL_C], ['audience', SKILL_C], ['audience', SKILL_B]],
    ] as Array<Array<[string, string]>>) {
      const r = await refusal(send(pairs));
      expect({ pairs, status: r.status, error: r.error }).toEqual({ pairs, status: 400, error: 'invalid_target' });
      expect(r.error_description).toMatch(/^name exactly one (resource|audience)|resource and audience name different targets/);
    }
    // One of each naming the same resource is one resource.
    expect((await send([['resource', SKILL_C], ['audience', SKILL_C]])).issued_token_type).toBe(AT_TYPE);
    // A malformed audience is named as the audience (it was "resource indicator must ...", a parameter not sent).
    for (const [audience, says] of [['nope', 'audience: the audience must be an absolute URI'], [`${SKILL_C}#part`, 'audience: the audience must not contain a fragment component']] as const) {
      const r = await refusal(send([['audience', audience]]));
      expect({ audience, status: r.status, error: r.error, says: r.error_description }).toEqual({ audience, status: 400, error: 'invalid_target', says });
    }
  });

  test('an exchanged token\'s grant lives as long as the token, not a refresh lifetime', async () => {
    const hop1 = await exchange('skill-a', await agentToken(), { resource: SKILL_B });
    const introspected = await introspect(hop1.access_token);
    expect(introspected.active).toBe(true);
    const storage = openStorage(env);
    await storage.init();
    try {
      // Opaque tokens are stored under a keyed hash of their value: looked up through the same KEK as the server's.
      const opaque = await sealCredentialIds(storage, Buffer.from(env.AGENTAUTH_KEK!, 'base64'), { acceptUnsealed: true }).model('AccessToken').find(hop1.access_token);
      const grant = await storage.model('Grant').find(String(opaque?.grantId));
      const tokenExp = Number(introspected.exp);
      expect(typeof grant?.exp).toBe('number');
      // A few seconds after the token (it is dated once more when saved), never the tier's 30 days.
      expect(Number(grant!.exp) - tokenExp).toBeGreaterThanOrEqual(0);
      expect(Number(grant!.exp) - tokenExp).toBeLessThanOrEqual(6);
    } finally {
      await storage.close();
    }
  });

  test('an update of a registration narrows its token_exchange_resources and token_exchange_max_depth, never widens or drops them', async () => {
    const body = { grant_types: [EXCHANGE], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none' };
    const reg = await register(issuer, { ...body, token_exchange_resources: [SKILL_B, SKILL_C], token_exchange_max_depth: 2 });
    expect(reg.status).toBe(201);
    let rat = reg.body.registration_access_token as string;
    const update = async (fields: Record<string, unknown>) => {
      const r = await fetch(reg.body.registration_client_uri as string, {
        method: 'PUT',
        headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' },
        body: JSON.stringify({ client_id: reg.body.client_id, ...body, ...fields }),
      });
      const answer = { status: r.status, body: (await r.json()) as Record<string, unknown> };
      if (typeof answer.body.registration_access_token === 'string') rat = answer.body.registration_access_token;
      return answer;
    };
    const refusals: Array<[Record<string, unknown>, RegExp]> = [
      [{ token_exchange_max_depth: 2 }, /^token_exchange_resources cannot be removed by an update/],
      [{ token_exchange_resources: [SKILL_B, SKILL_C, SKILL_A], token_exchange_max_depth: 2 }, /^token_exchange_resources can only be narrowed by an update: \['https:\/\/skill-a\.example\.com'\] is not in/],
      [{ token_exchange_resources: [SKILL_A], token_exchange_max_depth: 2 }, /^token_exchange_resources can only be narrowed/],
      [{ token_exchange_resources: [SKILL_B] }, /^token_exchange_max_depth cannot be removed by an update/],
      [{ token_exchange_resources: [SKILL_B], token_exchange_max_depth: 3 }, /^token_exchange_max_depth can only be lowered by an update \(from 2, not raised to 3\)/],
    ];
    for (const [fields, message] of refusals) {
      const r = await update(fields);
      expect({ fields, status: r.status, error: r.body.error }).toEqual({ fields, status: 400, error: 'invalid_client_metadata' });
      expect(r.body.error_description).toMatch(message);
    }
    // Narrowing is an update like any other; what was narrowed stays narrowed.
    const narrowed = await update({ token_exchange_resources: [SKILL_C], token_exchange_max_depth: 1 });
    expect(narrowed.status).toBe(200);
    expect(narrowed.body).toMatchObject({ token_exchange_resources: [SKILL_C], token_exchange_max_depth: 1 });
    expect((await update({ token_exchange_resources: [SKILL_B, SKILL_C], token_exchange_max_depth: 1 })).status).toBe(400);
    // A registration that declared nothing may add a narrowing later.
    const open = await register(issuer, body);
    rat = open.body.registration_access_token as string;
    const added = await fetch(open.body.registration_client_uri as string, {
      method: 'PUT',
      headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: open.body.client_id, ...body, token_exchange_resources: [SKILL_B] }),
    });
    expect(added.status).toBe(200);
  });

  test('the jwt token type is for JWTs only; a scope named twice is one scope', async () => {
    const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
    const opaque = await agentToken(SKILL_B, 'read');
    expect(await refusal(exchange('skill-b', opaque, { resource: SKILL_C, subject_token_type: JWT_TYPE }))).toMatchObject({
      status: 400, error: 'invalid_request', error_description: expect.stringMatching(/^subject_token_type urn:ietf:params:oauth:token-type:jwt names a JWT, and subject_token is not one/),
    });
    // The same opaque token with the access_token type, and a JWT with either type, are exchanged.
    expect((await exchange('skill-b', opaque, { resource: SKILL_C })).issued_token_type).toBe(AT_TYPE);
    expect((await exchange('skill-a', await agentToken(), { resource: SKILL_B, subject_token_type: JWT_TYPE })).issued_token_type).toBe(AT_TYPE);
    const twice = await exchange('skill-a', await agentToken(), { resource: SKILL_B, scope: 'read read' });
    expect(twice.scope).toBe('read');
  });

  test("the exchanging client's registered scope caps the new token too", async () => {
    expect((await exchange('skill-n', await agentToken(), { resource: SKILL_B })).scope).toBe('read');
    expect(await refusal(exchange('skill-n', await agentToken(), { resource: SKILL_B, scope: 'read write' }))).toMatchObject({ status: 400, error: 'invalid_scope' });
  });

  test("a client's token_exchange_resources (configuration file or registration metadata) narrow what its rules allow", async () => {
    expect((await exchange('skill-x', await agentToken(), { resource: SKILL_C })).issued_token_type).toBe(AT_TYPE);
    expect(await refusal(exchange('skill-x', await agentToken(), { resource: SKILL_B }))).toMatchObject({
      status: 400, error: 'invalid_target', error_description: expect.stringMatching(/only into ones for https:\/\/skill-c\.example\.com \(its token_exchange_resources\)/),
    });
    // At registration: only resource servers of this server, echoed back as registered.
    const ok = await register(issuer, { grant_types: [EXCHANGE], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', token_exchange_resources: [SKILL_B] });
    expect(ok.status).toBe(201);
    expect(ok.body.token_exchange_resources).toEqual([SKILL_B]);
    for (const bad of [['https://elsewhere.example.com'], [], 'https://skill-b.example.com', [SKILL_B, SKILL_B], [{ $gt: '' }]]) {
      const refused = await register(issuer, { grant_types: [EXCHANGE], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', token_exchange_resources: bad });
      expect(refused.status).toBe(400);
      expect(refused.body).toMatchObject({ error: 'invalid_client_metadata', error_description: expect.stringMatching(/^token_exchange_resources /) });
    }
  });

  test("a client's token_exchange_max_depth lowers the chain depth it takes part in", async () => {
    // The agent's own token for skill B: skill D's hop is the first actor.
    expect((await exchange('skill-d', await agentToken(SKILL_B, 'read'), { resource: SKILL_C })).issued_token_type).toBe(AT_TYPE);
    // A token the agent exchanged for skill B already has one actor: skill D's hop would be the second.
    const hop1 = await exchange('agent', await agentToken(), { resource: SKILL_B });
    expect(await refusal(exchange('skill-d', hop1.access_token, { resource: SKILL_C }))).toMatchObject({
      status: 400, error: 'invalid_request', error_description: expect.stringMatching(/2 actors deep; client skill-d takes part in chains of at most 1/),
    });
    const ok = await register(issuer, { grant_types: [EXCHANGE], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', token_exchange_max_depth: 2 });
    expect(ok.status).toBe(201);
    expect(ok.body.token_exchange_max_depth).toBe(2);
    for (const bad of [0, 11, 1.5, '2']) {
      const refused = await register(issuer, { grant_types: [EXCHANGE], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', token_exchange_max_depth: bad });
      expect(refused.status).toBe(400);
      expect(refused.body).toMatchObject({ error: 'invalid_client_metadata', error_description: expect.stringMatching(/^token_exchange_max_depth must be an integer from 1 to 10/) });
    }
  });

  test('an opaque client credentials token is a subject too, and its act chain starts with the exchanging client', async () => {
    const opaque = await agentToken(SKILL_B, 'read');
    expect(opaque.split('.')).toHaveLength(1);
    const next = await exchange('skill-b', opaque, { resource: SKILL_C });
    expect(decodeJwt(next.access_token)).toMatchObject({ sub: 'agent', client_id: 'skill-b', scope: 'read', act: { client_id: 'skill-b' }, agentauth_parent: hash('sha256', opaque, 'hex') });
  });
});
