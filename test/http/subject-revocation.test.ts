import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';

import { Wallet } from 'ethers';
import { decodeJwt } from 'jose';
import * as oidc from 'openid-client';

import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AuditRecord, Storage } from '../../adapters/types.js';
import { subjectMark } from '../../server/revocation-lineage.js';
import { insecure } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { mongoUri } from '../support/storages.js';
import { runCli, startConfigured, uniqueDbName } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { UserAgent, authorizeWithWallet } from '../support/user-agent.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';

/**
 * `agentauth subjects revoke <sub>`: everything one person granted, across every client, goes at once (each grant with
 * every token and code issued from it, and the person's sign-in sessions), and nothing of anyone else's.
 */

const API = 'https://api.example.com';
const REDIRECT = 'http://127.0.0.1:65000/callback';
const RS = { id: 'resource-server', secret: 'resource-server-secret-0123456789abcdefgh' };
const alice = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
const bob = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const carol = new Wallet('0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6');
const dave = new Wallet('0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a');
const subOf = (w: Wallet) => `did:pkh:eip155:1:${w.address}`;
const ADMIN_TOKEN = randomBytes(32).toString('base64url');
const WALLET_GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';

const CONFIG = {
  resourceServers: [{ identifier: API, scopes: ['read', 'write'] }],
  clients: [{ client_id: RS.id, client_secret: RS.secret, grant_types: ['client_credentials'] }],
  registration: { mode: 'token' },
};

type Env = Record<string, string>;
const backends: Array<[string, () => Env]> = [
  ['SQLite', () => ({})],
  ['MongoDB (FerretDB)', () => ({ MONGODB_URI: mongoUri(), MONGODB_DB: uniqueDbName('subjects') })],
];

describe.each(backends)('agentauth subjects revoke <sub> on %s', (_name, storeEnv) => {
  let env: Env;
  let server: RunningServer;
  let meta: oidc.ServerMetadata;
  let adminUrl: string;
  const apps: oidc.Configuration[] = [];

  beforeAll(async () => {
    const adminPort = await freePort();
    adminUrl = `http://127.0.0.1:${adminPort}`;
    ({ env, server } = await startConfigured({ ...CONFIG, admin: { port: adminPort } }, { ...storeEnv(), AGENTAUTH_ADMIN_TOKEN: ADMIN_TOKEN }));
    meta = (await oidc.discovery(new URL(server.url), RS.id, undefined, oidc.ClientSecretBasic(RS.secret), insecure)).serverMetadata();
    for (let i = 0; i < 2; i += 1) {
      const iat = await runCli(['clients', 'iat', 'create'], env);
      expect(iat.code).toBe(0);
      apps.push(
        await oidc.dynamicClientRegistration(
          new URL(server.url),
          { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read write' },
          oidc.None(),
          { ...insecure, initialAccessToken: iat.stdout.trim() },
        ),
      );
    }
  });

  afterAll(async () => {
    await server?.stop();
  });

  /**
   * Waits out the slot after a revocation's last mark: an approval given within it is refused as one in flight
   * during the revocation would be (docs/operations.md, "Revoking a person's access").
   */
  const pastRevocationSlot = () => new Promise((resolve) => setTimeout(resolve, 250));

  /** The server's store, opened beside it (as a second server on it would). */
  async function openStore(): Promise<Storage> {
    const storage = env.MONGODB_URI ? new MongoStorage({ uri: env.MONGODB_URI, dbName: env.MONGODB_DB! }) : new SqliteStorage({ dataDir: env.AGENTAUTH_DATA_DIR! });
    await storage.init();
    return storage;
  }

  /** A person signs in with `wallet` in their browser (`agent`) and approves `app`: its tokens, and the pages seen. */
  async function signIn(app: oidc.Configuration, wallet: Wallet, agent = new UserAgent()) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(app, {
      redirect_uri: REDIRECT, scope: 'read write', resource: API, state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const outcome = await authorizeWithWallet(url, REDIRECT, { wallet, agent });
    const tokens = await oidc.authorizationCodeGrant(app, outcome.callback, { pkceCodeVerifier: verifier, expectedState: state }, { resource: API });
    return { tokens, agent, pages: outcome.pages };
  }

  async function active(token: string): Promise<boolean> {
    const rs = new oidc.Configuration(meta, RS.id, RS.secret, oidc.ClientSecretBasic(RS.secret));
    oidc.allowInsecureRequests(rs);
    return (await oidc.tokenIntrospection(rs, token)).active;
  }

  async function refreshes(app: oidc.Configuration, refreshToken: string): Promise<boolean> {
    try {
      await oidc.refreshTokenGrant(app, refreshToken, { resource: API });
      return true;
    } catch (err) {
      if (err instanceof oidc.ResponseBodyError && err.error === 'invalid_grant') return false;
      throw err;
    }
  }

  async function revocationEvents(): Promise<AuditRecord[]> {
    const r = await runCli(['audit', 'export'], env);
    expect(r.code).toBe(0);
    return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AuditRecord).filter((x) => x.type === 'subject.revoked');
  }

  test("every grant of the person across both clients goes, with its tokens and their browser sessions; the other person's stay", async () => {
    const a1 = await signIn(apps[0]!, alice);
    const a2 = await signIn(apps[1]!, alice);
    const b = await signIn(apps[0]!, bob);
    expect(decodeJwt(a1.tokens.access_token).sub).toBe(subOf(alice));
    for (const t of [a1, a2, b]) expect(await active(t.tokens.access_token)).toBe(true);

    const r = await runCli(['subjects', 'revoke', subOf(alice)], env);
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: `revoked 2 grants of ${subOf(alice)} (with every token and code issued from them) and ended 2 sessions\n` });

    // Alice's access tokens (JWTs, checked through their grant's revocation mark) and refresh tokens no longer work.
    expect(await active(a1.tokens.access_token)).toBe(false);
    expect(await active(a2.tokens.access_token)).toBe(false);
    expect(await refreshes(apps[0]!, a1.tokens.refresh_token!)).toBe(false);
    expect(await refreshes(apps[1]!, a2.tokens.refresh_token!)).toBe(false);
    // Bob's do.
    expect(await active(b.tokens.access_token)).toBe(true);
    expect(await refreshes(apps[0]!, b.tokens.refresh_token!)).toBe(true);

    // Alice's browser session ended: her next authorization request asks her to sign in again (the login page first).
    await pastRevocationSlot();
    const again = await signIn(apps[0]!, alice, a1.agent);
    expect(again.pages[0]).toContain('id="login-data"');
    expect(await active(again.tokens.access_token)).toBe(true);

    const events = await revocationEvents();
    expect(events.map((e) => ({ sub: e.sub, details: e.details }))).toEqual([{ sub: subOf(alice), details: { grants: 2, sessions: 2, actor: 'cli' } }]);
  });

  test('agentauth verify reports a revoked person\'s token as revoked from the audit log, after the revocation marks have expired; a token of a later sign-in is not', async () => {
    const person = new Wallet(Wallet.createRandom().privateKey);
    const before = await signIn(apps[0]!, person);
    expect((await runCli(['subjects', 'revoke', subOf(person)], env)).code).toBe(0);
    const verify = async (token: string) => JSON.parse((await runCli(['verify', token, '--json'], env)).stdout) as { revoked: boolean; revocation: string[] };
    expect((await verify(before.tokens.access_token)).revoked).toBe(true);
    // The marks live 70 minutes (server/revocation-lineage.ts); here they are made to have expired.
    if (env.MONGODB_URI) {
      const { MongoClient } = await import('mongodb');
      const client = new MongoClient(env.MONGODB_URI);
      try {
        await client.db(env.MONGODB_DB).collection('revoked_tokens').updateMany({}, { $set: { expiresAt: new Date(1000) } });
      } finally {
        await client.close();
      }
    } else {
      const { DatabaseSync } = await import('node:sqlite');
      const db = new DatabaseSync(`${env.AGENTAUTH_DATA_DIR!}/agentauth.sqlite`);
      db.exec('UPDATE revoked_tokens SET expires_at = 1');
      db.close();
    }
    const after = await verify(before.tokens.access_token);
    expect(after.revoked).toBe(true);
    expect(after.revocation).toEqual([expect.stringMatching(new RegExp(`^the access of ${subOf(person)} was revoked at \\S+, after this token was issued \\(audit chain \\S+ seq \\d+\\)$`))]);
    // A sign-in after the revocation (in a later second than the record's) is the person's new access: not revoked.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const later = await signIn(apps[0]!, person);
    expect(await verify(later.tokens.access_token)).toMatchObject({ revoked: false, revocation: [] });
  });

  test.each([1, 2, 3])('a revocation racing wallet-signature grants leaves none of their tokens standing, those answered before it included (round %i)', async () => {
    const person = new Wallet(Wallet.createRandom().privateKey);
    const iat = await runCli(['clients', 'iat', 'create'], env);
    const reg = await fetch(`${server.url}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${iat.stdout.trim()}` },
      body: JSON.stringify({ grant_types: [WALLET_GRANT, 'refresh_token'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' }),
    });
    expect(reg.status).toBe(201);
    const client = (await reg.json()) as { client_id: string; client_secret: string };
    const basic = `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`;
    const token = (params: Record<string, string>) =>
      fetch(`${server.url}/token`, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params) })
        .then(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, string>, at: Date.now() }));
    const walletGrant = async (signed: { message: string; signature: string }) => token({ grant_type: WALLET_GRANT, ...signed, resource: API, scope: 'read' });
    const sign = async () => signedSiwe(server.url, person, { address: person.address, nonce: await fetchNonce(server.url, client.client_id) });
    // One grant before, so that the revocation has something to find; then eight grants in flight while it runs.
    expect((await walletGrant(await sign())).status).toBe(200);
    const messages = await Promise.all(Array.from({ length: 8 }, sign));
    let answeredAt = 0;
    const revocation = (async () => {
      await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 30)));
      const res = await fetch(`${adminUrl}/admin/subjects/${encodeURIComponent(subOf(person))}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      answeredAt = Date.now();
      return res.status;
    })();
    const answers = await Promise.all(messages.map(walletGrant));
    expect(await revocation).toBe(200);
    const standing: string[] = [];
    for (const a of answers) {
      if (a.status !== 200) {
        expect(a.body).toMatchObject({ error: 'invalid_grant' });
        continue;
      }
      const stillActive = await active(a.body.access_token!);
      const refreshed = (await token({ grant_type: 'refresh_token', refresh_token: a.body.refresh_token!, resource: API })).status;
      // Answered before the revocation answered: revoked. After it: a grant of its own, which may stand.
      if (a.at <= answeredAt && (stillActive || refreshed === 200)) standing.push(`answered ${answeredAt - a.at} ms before the revocation: active ${stillActive}, refresh ${refreshed}`);
    }
    expect(standing).toEqual([]);
  }, 60_000);

  test('an approval in flight while the person is revoked, stored after the revocation\'s last look at the grants, is refused: the application gets access_denied, and no grant is left', async () => {
    const person = new Wallet(Wallet.createRandom().privateKey);
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(apps[1]!, {
      redirect_uri: REDIRECT, scope: 'read', resource: API, state: 'st',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    // The interleaving, made to happen: the approval has passed its session check when a revocation writes its mark
    // for this moment (server/subject-revocation.ts writes one before each listing), and that revocation's last
    // listing runs before the approval stores its grant, so it neither finds the grant nor (in this simulation, where
    // only the mark is written) ends the session the approval already read.
    const storage = await openStore();
    const outcome = await authorizeWithWallet(url, REDIRECT, {
      wallet: person,
      // Marks for the next 3 s of slots: the approval and the resume that follows both come within them, however
      // slow the machine (a real revocation's marks end with it; here they stand for one still running).
      beforeConsent: async () => {
        const first = Math.floor(Date.now() / 100);
        for (let slot = first; slot < first + 30; slot += 1) await storage.revokedTokens.revoke(subjectMark(subOf(person), slot), Math.floor(Date.now() / 1000) + 600);
      },
    }).finally(() => storage.close());
    expect(Object.fromEntries(outcome.callback.searchParams)).toMatchObject({
      error: 'access_denied',
      error_description: "the account's access was revoked by the operator while this request was approved: the person must sign in again",
    });
    expect(outcome.callback.searchParams.has('code')).toBe(false);
    // The approval's grant went, and the session the request's resume wrote back too: nothing of the person is left.
    const r = await runCli(['subjects', 'revoke', subOf(person), '--json'], env);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ sub: subOf(person), grants: [], sessions: 0 });

    // The same approval without a revocation mark stands (a code, and tokens from it).
    const other = new Wallet(Wallet.createRandom().privateKey);
    const approved = await signIn(apps[1]!, other);
    expect(decodeJwt(approved.tokens.access_token).sub).toBe(subOf(other));
  });

  test('a sign-in session written back by a request in flight during a real revocation (its body trickling in) is deleted: the next authorization request asks them to sign in', async () => {
    const person = new Wallet(Wallet.createRandom().privateKey);
    const first = await signIn(apps[0]!, person);
    // Signed in: another authorization request goes straight to the consent page, without the login page.
    const approvedAgain = await signIn(apps[1]!, person, first.agent);
    expect(approvedAgain.pages.some((p) => p.includes('id="login-data"'))).toBe(false);
    // A request that reads the session before its body (oidc-provider's logout confirmation does) and stores it at
    // its end: its head and the first bytes of its body are sent, then the person is revoked, then the rest follows.
    const cookie = [...first.agent.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const body = 'logout=yes&xsrf=0123456789abcdef';
    const inFlight = httpRequest(`${server.url}/session/end/confirm`, { method: 'POST', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(body.length) } });
    const answered = new Promise<number>((resolve, reject) => {
      inFlight.on('response', (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      inFlight.on('error', reject);
    });
    inFlight.write(body.slice(0, 5));
    await new Promise((resolve) => setTimeout(resolve, 300));
    const revoked = await fetch(`${adminUrl}/admin/subjects/${encodeURIComponent(subOf(person))}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(revoked.status).toBe(200);
    expect(await revoked.json()).toMatchObject({ sessions: 1 });
    // Well after the revocation (more than its slot), the body ends and the request stores the session it read.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    inFlight.end(body.slice(5));
    expect(await answered).toBeLessThan(500);
    // It was not stored back: the person's next authorization request shows the login page, and nothing of theirs is
    // left to revoke but what that new sign-in made.
    await pastRevocationSlot();
    const after = await signIn(apps[0]!, person, first.agent);
    expect(after.pages[0]).toContain('id="login-data"');
    expect(decodeJwt(after.tokens.access_token).sub).toBe(subOf(person));
  });

  test('the admin API does the same: POST /admin/subjects/<sub>/revoke (admin token), 404 when nothing is found, 400 for a malformed subject', async () => {
    const c = await signIn(apps[1]!, carol);
    const b = await signIn(apps[1]!, bob);
    const post = (sub: string, token = ADMIN_TOKEN) =>
      fetch(`${adminUrl}/admin/subjects/${encodeURIComponent(sub)}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect((await post(subOf(carol), 'wrong-token')).status).toBe(401);
    expect(await active(c.tokens.access_token)).toBe(true);
    const res = await post(subOf(carol));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { sub: string; grants: string[]; sessions: number };
    expect({ sub: body.sub, grants: body.grants.length, sessions: body.sessions }).toEqual({ sub: subOf(carol), grants: 1, sessions: 1 });
    expect(await active(c.tokens.access_token)).toBe(false);
    expect(await active(b.tokens.access_token)).toBe(true);
    const event = (await revocationEvents()).find((e) => e.sub === subOf(carol));
    expect(event?.details).toMatchObject({ grants: 1, sessions: 1, actor: 'admin_api', remote_address: expect.any(String) });

    // Six at once for one person: one revokes and is recorded, the others find nothing.
    await pastRevocationSlot();
    await signIn(apps[1]!, carol);
    const recordedBefore = (await revocationEvents()).filter((e) => e.sub === subOf(carol)).length;
    const racing = await Promise.all(Array.from({ length: 6 }, () => post(subOf(carol))));
    expect(racing.map((r) => r.status).sort()).toEqual([200, 404, 404, 404, 404, 404]);
    expect((await revocationEvents()).filter((e) => e.sub === subOf(carol))).toHaveLength(recordedBefore + 1);

    const none = await post(subOf(carol));
    expect(none.status).toBe(404);
    expect(await none.json()).toEqual({ error: 'not_found', error_description: `no grant or session of ${JSON.stringify(subOf(carol))}` });
    const bad = await post('a\u0001b');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toBe('invalid_request');
  });

  test('a subject with nothing to revoke is a negative answer (exit 1) and records nothing; a malformed one is a usage error (exit 2)', async () => {
    const before = (await revocationEvents()).length;
    const none = await runCli(['subjects', 'revoke', 'did:pkh:eip155:1:0x0000000000000000000000000000000000000001', '--json'], env);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('agentauth: subjects revoke: no grant or session of "did:pkh:eip155:1:0x0000000000000000000000000000000000000001"');
    expect(JSON.parse(none.stdout)).toMatchObject({ sub: 'did:pkh:eip155:1:0x0000000000000000000000000000000000000001', grants: [], sessions: 0 });
    expect((await revocationEvents()).length).toBe(before);
    const bad = await runCli(['subjects', 'revoke', 'a\nb'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('without control characters');
  });

  test("a wallet subject's address may be given in lower or upper case (the same account); a wrong mixed case is refused as a likely typo", async () => {
    const d = await signIn(apps[0]!, dave);
    expect(dave.address).not.toBe(dave.address.toLowerCase());
    // A mixed case that is not the EIP-55 checksum: one letter's case flipped. Nothing is revoked or recorded.
    const before = (await revocationEvents()).length;
    const i = [...dave.address].findIndex((ch, at) => at > 1 && /[a-f]/i.test(ch));
    const flipped = dave.address.slice(0, i) + (dave.address[i] === dave.address[i]!.toLowerCase() ? dave.address[i]!.toUpperCase() : dave.address[i]!.toLowerCase()) + dave.address.slice(i + 1);
    const typo = await runCli(['subjects', 'revoke', `did:pkh:eip155:1:${flipped}`], env);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain(`the address ${flipped} has a mixed case that is not its EIP-55 checksum (${dave.address})`);
    const apiTypo = await fetch(`${adminUrl}/admin/subjects/${encodeURIComponent(`did:pkh:eip155:1:${flipped}`)}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(apiTypo.status).toBe(400);
    expect((await revocationEvents()).length).toBe(before);
    expect(await active(d.tokens.access_token)).toBe(true);

    // In lower case, as many tools print it: the person's grant goes, and the answer and the record name the subject
    // as the tokens do.
    const lower = await runCli(['subjects', 'revoke', `did:pkh:eip155:1:${dave.address.toLowerCase()}`, '--json'], env);
    expect(lower.code).toBe(0);
    expect(JSON.parse(lower.stdout)).toMatchObject({ sub: subOf(dave), grants: [expect.any(String)], sessions: 1 });
    expect(await active(d.tokens.access_token)).toBe(false);
    expect((await revocationEvents()).filter((e) => e.sub === subOf(dave)).map((e) => e.details)).toEqual([{ grants: 1, sessions: 1, actor: 'cli' }]);

    // In upper case through the admin API, after a new sign-in: the same.
    await pastRevocationSlot();
    const again = await signIn(apps[0]!, dave);
    const upper = `did:pkh:eip155:1:0x${dave.address.slice(2).toUpperCase()}`;
    const res = await fetch(`${adminUrl}/admin/subjects/${encodeURIComponent(upper)}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ sub: subOf(dave), sessions: 1 });
    expect(await active(again.tokens.access_token)).toBe(false);
  });
});
