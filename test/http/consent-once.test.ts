import { Wallet } from 'ethers';
import { MongoClient } from 'mongodb';
import * as oidc from 'openid-client';

import { buildSiweMessage } from '../../interactions/siwe/message.js';
import { baseConfig, insecure, REDIRECT, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { mongoUri } from '../support/storages.js';
import { openLoginPage } from '../support/user-agent.js';
import type { UserAgent } from '../support/user-agent.js';

/**
 * The consent form approves one authorization request once: a second approval (a double click, a second tab, a
 * replayed form, several at the same moment) stores no grant of its own, which nothing would ever use, and is sent on
 * to the request's resume. The code the request ends with still redeems.
 */
const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');

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

  /** Signs in on a fresh request's login page and follows it to its consent form: the form's action and the agent. */
  async function consentForm(verifier: string): Promise<{ agent: UserAgent; confirm: URL }> {
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

  test('five approvals at once, then one more: one grant stored, every answer a redirect, and the code redeems', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const { agent, confirm } = await consentForm(verifier);
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
});
