import type { DatabaseSync } from 'node:sqlite';

import { Wallet } from 'ethers';
import { MongoClient } from 'mongodb';
import * as oidc from 'openid-client';

import { buildSiweMessage } from '../../interactions/siwe/message.js';
import { baseConfig, insecure, REDIRECT, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import type { RunningServer } from '../support/server.js';
import { refuseModelWrites, startWithStoreFile, whileRefusing as refusing } from '../support/store-file.js';
import type { ServerWithStoreFile } from '../support/store-file.js';
import { mongoUri } from '../support/storages.js';
import { openLoginPage } from '../support/user-agent.js';
import type { UserAgent } from '../support/user-agent.js';

/**
 * The consent form approves one authorization request once: a second approval (a double click, a second tab, a
 * replayed form, several at the same moment) stores no grant of its own, which nothing would ever use, and is sent on
 * to the request's resume. The code the request ends with still redeems.
 */
const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');

/** Signs in on a fresh request's login page and follows it to its consent form: the form's action and the agent. */
async function consentForm(client: oidc.Configuration, verifier: string): Promise<{ agent: UserAgent; confirm: URL }> {
  const url = oidc.buildAuthorizationUrl(client, {
    redirect_uri: REDIRECT,
    scope: 'read',
    resource: RESOURCE,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  });
  const { agent, data, pageUrl } = await openLoginPage(url);
  const { nonce } = (await (await agent.fetch(new URL(data.nonceUrl, pageUrl), { method: 'POST' })).json()) as { nonce: string };
  const message = buildSiweMessage({ domain: data.domain, address: wallet.address, uri: data.uri, chainId: 1, nonce, issuedAt: new Date(), requestId: data.uid, resources: data.resources });
  let res = await agent.fetch(new URL(data.loginUrl, pageUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ message, signature: await wallet.signMessage(message) }).toString(),
  });
  let at = new URL(data.loginUrl, pageUrl);
  while (res.status >= 300 && res.status < 400) {
    at = new URL(res.headers.get('location')!, at);
    res = await agent.fetch(at);
  }
  const action = /action="([^"]+\/confirm)"/.exec(await res.text());
  if (!action) throw new Error('no consent form after sign-in');
  return { agent, confirm: new URL(action[1]!, at) };
}

/** Follows redirects from `location` to the client's redirect_uri: the callback URL. */
async function toCallback(agent: UserAgent, location: URL): Promise<URL> {
  let at = location;
  for (let hop = 0; hop < 10; hop += 1) {
    if (at.href.startsWith(REDIRECT)) return at;
    const res = await agent.fetch(at);
    if (res.status < 300 || res.status >= 400) throw new Error(`no redirect at ${at.pathname}: ${res.status}`);
    at = new URL(res.headers.get('location')!, at);
  }
  throw new Error('too many redirects');
}

describe('consent is given once per authorization request', () => {
  let as: AgentServer;
  let issuer: string;
  let client: oidc.Configuration;
  let mongo: MongoClient;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    issuer = as.server.url;
    client = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
    mongo = await MongoClient.connect(mongoUri());
  });
  afterAll(async () => {
    await as?.server.stop();
    await mongo?.close();
  });

  const grants = () => mongo.db(as.dbName).collection('oidc_Grant').countDocuments();

  test('five approvals at once, then one more: one grant stored, every answer a redirect, and the code redeems', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const { agent, confirm } = await consentForm(client, verifier);
    const before = await grants();
    const answers = await Promise.all(Array.from({ length: 5 }, () => agent.fetch(confirm, { method: 'POST' })));
    const again = await agent.fetch(confirm, { method: 'POST' });
    for (const res of [...answers, again]) expect(res.status).toBe(303);
    expect(await grants()).toBe(before + 1);
    // The approval that took effect leads to the code; the request's resume is where every answer points.
    const locations = new Set([...answers, again].map((r) => new URL(r.headers.get('location')!, confirm).pathname));
    expect([...locations].every((p) => p.startsWith('/auth/'))).toBe(true);
    const callback = await toCallback(agent, new URL(answers[0]!.headers.get('location')!, confirm));
    const tokens = await oidc.authorizationCodeGrant(client, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE });
    expect(tokens.access_token).toEqual(expect.any(String));
    expect(await grants()).toBe(before + 1);
  });

  test('one decision per request: a Deny after an Approve is refused and the approval stands; an Approve after a Deny stores nothing', async () => {
    // Approve, then Deny before the browser follows the approval: the approval (its grant saved) is what happened.
    const approvedFirst = await consentForm(client, oidc.randomPKCECodeVerifier());
    const approve = await approvedFirst.agent.fetch(approvedFirst.confirm, { method: 'POST' });
    expect(approve.status).toBe(303);
    const lateDeny = await approvedFirst.agent.fetch(new URL(approvedFirst.confirm.href.replace(/\/confirm$/, '/abort')), { method: 'POST', headers: { accept: 'application/json' } });
    expect(lateDeny.status).toBe(409);
    expect(await lateDeny.json()).toEqual({ error: 'invalid_request', error_description: 'this request was already approved, and the approval stands; to withdraw access, sign out of the application here' });
    const callback = await toCallback(approvedFirst.agent, new URL(approve.headers.get('location')!, approvedFirst.confirm));
    expect(callback.searchParams.get('code')).toEqual(expect.any(String));

    // Deny, then Approve: the approval stores no grant and the client gets access_denied.
    const deniedFirst = await consentForm(client, oidc.randomPKCECodeVerifier());
    const before = await grants();
    const deny = await deniedFirst.agent.fetch(new URL(deniedFirst.confirm.href.replace(/\/confirm$/, '/abort')), { method: 'POST' });
    expect(deny.status).toBe(303);
    const lateApprove = await deniedFirst.agent.fetch(deniedFirst.confirm, { method: 'POST' });
    expect(lateApprove.status).toBeGreaterThanOrEqual(300);
    expect(await grants()).toBe(before);
    const denied = await toCallback(deniedFirst.agent, new URL(deny.headers.get('location')!, deniedFirst.confirm));
    expect(denied.searchParams.get('error')).toBe('access_denied');
  });

  test('Approve and Deny sent together: whichever decides, the other answer says so at once (a Deny that lost to an approval still being saved gets 409, an Approve that lost to a Deny gets 400 access_denied)', async () => {
    const outcomes: string[] = [];
    for (let round = 0; round < 12; round += 1) {
      const { agent, confirm } = await consentForm(client, oidc.randomPKCECodeVerifier());
      const abort = new URL(confirm.href.replace(/\/confirm$/, '/abort'));
      const [approve, deny] = await Promise.all([
        agent.fetch(confirm, { method: 'POST' }),
        // Staggered from 0 to 11 ms: the Deny lands before, during or after the approval's writes.
        new Promise<void>((r) => setTimeout(r, round)).then(() => agent.fetch(abort, { method: 'POST' })),
      ]);
      if (deny.status === 409) {
        // The approval decided: it leads to a code.
        expect({ round, approve: approve.status }).toEqual({ round, approve: 303 });
        const callback = await toCallback(agent, new URL(approve.headers.get('location')!, confirm));
        expect({ round, code: callback.searchParams.has('code') }).toEqual({ round, code: true });
        outcomes.push('approved');
      } else {
        // The denial decided: the approval is refused, and the denial leads to access_denied.
        expect({ round, deny: deny.status, approve: approve.status }).toEqual({ round, deny: 303, approve: 400 });
        const callback = await toCallback(agent, new URL(deny.headers.get('location')!, abort));
        expect({ round, error: callback.searchParams.get('error'), code: callback.searchParams.get('code') }).toEqual({ round, error: 'access_denied', code: null });
        outcomes.push('denied');
      }
    }
    console.log(`approve and deny together: ${outcomes.join(' ')}`);
  });

  test('Deny sent twice, one after the other and five at once: every answer leads the browser on, and the client gets access_denied', async () => {
    const before = await grants();
    for (const concurrent of [1, 5]) {
      const { agent, confirm } = await consentForm(client, oidc.randomPKCECodeVerifier());
      const abort = new URL(confirm.href.replace(/\/confirm$/, '/abort'));
      const first = await Promise.all(Array.from({ length: concurrent }, () => agent.fetch(abort, { method: 'POST' })));
      const again = await agent.fetch(abort, { method: 'POST' });
      // Every answer sends the browser to the request's resume (no "already approved" error); it follows the last.
      const answers = [...first, again];
      expect(answers.map((r) => r.status)).toEqual(answers.map(() => 303));
      const locations = new Set(answers.map((r) => new URL(r.headers.get('location')!, abort).pathname));
      expect(locations.size).toBe(1);
      const callback = await toCallback(agent, new URL(again.headers.get('location')!, abort));
      expect(callback.searchParams.get('error')).toBe('access_denied');
      expect(callback.searchParams.get('code')).toBeNull();
    }
    expect(await grants()).toBe(before);
  });

  test('a post from another origin (another site, or another port of this host) is refused and decides nothing', async () => {
    const { agent, confirm } = await consentForm(client, oidc.randomPKCECodeVerifier());
    const before = await grants();
    const abort = new URL(confirm.href.replace(/\/confirm$/, '/abort'));
    for (const [target, headers] of [
      [confirm, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' }],
      [confirm, { origin: `http://127.0.0.1:${Number(new URL(issuer).port) + 1}` }],
      [confirm, { 'sec-fetch-site': 'same-site' }],
      [abort, { origin: 'null' }],
      [abort, { origin: 'null', 'sec-fetch-site': 'cross-site' }],
      [confirm, { origin: 'https://evil.example', 'sec-fetch-site': 'same-origin' }],
    ] as const) {
      const res = await agent.fetch(target, { method: 'POST', headers: { ...headers, accept: 'application/json' } });
      expect({ headers, status: res.status }).toEqual({ headers, status: 403 });
      expect(((await res.json()) as { error_description: string }).error_description).toMatch(/only accepts submissions from its own pages/);
    }
    expect(await grants()).toBe(before);
    // The page's own post, as a browser sends it, still approves.
    const own = await agent.fetch(confirm, { method: 'POST', headers: { origin: new URL(issuer).origin, 'sec-fetch-site': 'same-origin' } });
    expect(own.status).toBe(303);
    expect(await grants()).toBe(before + 1);
  });
});

/**
 * A decision that could not be carried out is withdrawn: the person's next Approve or Deny is taken afresh. Before,
 * the failed one kept its claim, so every later Approve was sent to a resume that found no decision and asked again.
 * The store's writes of one model are refused by a SQLite trigger the test adds to the server's own file (the
 * embedded store), and removed again to stand for the store's recovery.
 */
describe('a consent decision whose writes fail is withdrawn, and the next one takes effect', () => {
  let running: ServerWithStoreFile;
  let server: RunningServer;
  let db: DatabaseSync;
  let client: oidc.Configuration;

  beforeAll(async () => {
    running = await startWithStoreFile(baseConfig());
    ({ server, db } = running);
    client = await oidc.dynamicClientRegistration(
      new URL(server.url),
      { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
  });
  afterAll(() => running?.close());

  /** Runs `fn` while the store refuses every write of records of `model` (as a store failing mid-request would). */
  const whileRefusing = <T>(model: string, fn: () => Promise<T>) => refusing({ server, db }, refuseModelWrites(model), fn);
  const grants = () => (db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'Grant'").get() as { n: number }).n;
  const claims = () => (db.prepare("SELECT count(*) AS n FROM nonces WHERE nonce LIKE 'consent:%'").get() as { n: number }).n;

  test('an Approve whose grant cannot be saved is answered 503 and stores nothing; the next Approve stores the grant and the code redeems', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const { agent, confirm } = await consentForm(client, verifier);
    const [grantsBefore, claimsBefore] = [grants(), claims()];
    const failed = await whileRefusing('Grant', () => agent.fetch(confirm, { method: 'POST', headers: { accept: 'application/json' } }));
    expect(failed.status).toBe(503);
    expect(await failed.json()).toMatchObject({ error: 'temporarily_unavailable' });
    // Nothing decided: no grant, and the claim the approval took was withdrawn.
    expect([grants(), claims()]).toEqual([grantsBefore, claimsBefore]);

    const again = await agent.fetch(confirm, { method: 'POST' });
    expect(again.status).toBe(303);
    expect(grants()).toBe(grantsBefore + 1);
    const callback = await toCallback(agent, new URL(again.headers.get('location')!, confirm));
    const tokens = await oidc.authorizationCodeGrant(client, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE });
    expect(tokens.access_token).toEqual(expect.any(String));
  });

  test('a Deny whose result cannot be saved is answered 503; the next Deny takes effect and the client gets access_denied', async () => {
    const { agent, confirm } = await consentForm(client, oidc.randomPKCECodeVerifier());
    const abort = new URL(confirm.href.replace(/\/confirm$/, '/abort'));
    const claimsBefore = claims();
    const failed = await whileRefusing('Interaction', () => agent.fetch(abort, { method: 'POST', headers: { accept: 'application/json' } }));
    expect(failed.status).toBe(503);
    expect(claims()).toBe(claimsBefore);

    const again = await agent.fetch(abort, { method: 'POST' });
    expect(again.status).toBe(303);
    const callback = await toCallback(agent, new URL(again.headers.get('location')!, abort));
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(callback.searchParams.get('code')).toBeNull();
  });

  test('a claim is withdrawn only by the decision that holds it: a lost claim withdraws nothing', async () => {
    // The first Approve decides; a Deny after it (409) must not free the request for a second decision.
    const { agent, confirm } = await consentForm(client, oidc.randomPKCECodeVerifier());
    const abort = new URL(confirm.href.replace(/\/confirm$/, '/abort'));
    expect((await agent.fetch(confirm, { method: 'POST' })).status).toBe(303);
    const claimsAfterApproval = claims();
    expect((await agent.fetch(abort, { method: 'POST', headers: { accept: 'application/json' } })).status).toBe(409);
    expect(claims()).toBe(claimsAfterApproval);
    expect((await agent.fetch(abort, { method: 'POST', headers: { accept: 'application/json' } })).status).toBe(409);
  });
});
