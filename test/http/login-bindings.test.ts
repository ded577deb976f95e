import { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { buildSiweMessage } from '../../interactions/siwe/message.js';
import { baseConfig, insecure, REDIRECT, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { authorizeWithWallet, InteractionRefused, openLoginPage, UserAgent } from '../support/user-agent.js';
import type { LoginData } from '../support/user-agent.js';

const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');

/** The login route accepts a sign-in only for its own interaction, with its own nonce, at the login step. */
describe('login route bindings', () => {
  let as: AgentServer;
  let issuer: string;
  let config: oidc.Configuration;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    issuer = as.server.url;
    config = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { client_name: 'Web agent', redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  async function authorizationUrl(): Promise<{ url: URL; verifier: string; state: string }> {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT,
      scope: 'read',
      resource: RESOURCE,
      state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    return { url, verifier, state };
  }

  async function pageNonce(agent: UserAgent, data: LoginData): Promise<string> {
    const res = await agent.fetch(new URL(data.nonceUrl, issuer), { method: 'POST', headers: { accept: 'application/json' } });
    expect(res.status).toBe(200);
    return ((await res.json()) as { nonce: string }).nonce;
  }

  /** The wallet's signed EIP-4361 message for a login page, with `nonce`. */
  async function signedFor(data: LoginData, nonce: string): Promise<{ message: string; signature: string }> {
    const message = buildSiweMessage({ domain: data.domain, address: wallet.address, uri: data.uri, chainId: 1, nonce, issuedAt: new Date(), requestId: data.uid, resources: data.resources });
    return { message, signature: await wallet.signMessage(message) };
  }

  /** Posts a signed message to a login page as its script does (JSON). */
  async function postLogin(agent: UserAgent, data: LoginData, nonce: string): Promise<Response> {
    return agent.fetch(new URL(data.loginUrl, issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(await signedFor(data, nonce)),
    });
  }

  /** Runs the browser flow and returns the refusal it ends in. */
  async function refusedFlow(opts: Parameters<typeof authorizeWithWallet>[2]): Promise<InteractionRefused> {
    const { url } = await authorizationUrl();
    const err = await authorizeWithWallet(url, REDIRECT, opts).then(
      () => new Error('expected the sign-in to be refused'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(InteractionRefused);
    return err as InteractionRefused;
  }

  test('a tamper that keeps every binding (an Expiration Time added) signs in, and the code redeems', async () => {
    const { url, verifier, state } = await authorizationUrl();
    const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet, tamper: (f) => ({ ...f, expirationTime: new Date(Date.now() + 60_000) }) });
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state }, { resource: RESOURCE });
    expect(tokens.scope).toBe('read');
  });

  test('a Request ID naming another sign-in is refused (request-id), even with this page’s own nonce', async () => {
    const other = await openLoginPage((await authorizationUrl()).url);
    const err = await refusedFlow({ wallet, tamper: (f) => ({ ...f, requestId: other.data.uid }) });
    expect(err.status).toBe(400);
    expect(err.path).toMatch(/^\/interaction\/[\w-]+\/login$/);
    expect(err.body).toContain(`request-id: Request ID ${other.data.uid} names another sign-in request than this one`);
  });

  test('a nonce from another sign-in is refused (nonce-binding), even with this page’s Request ID', async () => {
    const other = await openLoginPage((await authorizationUrl()).url);
    const otherNonce = await pageNonce(other.agent, other.data);
    const err = await refusedFlow({ wallet, tamper: (f) => ({ ...f, nonce: otherNonce }) });
    expect(err.status).toBe(400);
    expect(err.body).toContain(`nonce-binding: nonce ${otherNonce} was issued for another sign-in request, not for this sign-in request`);
    // The other sign-in's nonce is untouched: its own page still signs in with it.
    const res = await postLogin(other.agent, other.data, otherNonce);
    expect(res.status).toBe(200);
  });

  test('consent before sign-in is refused and changes nothing: the sign-in then proceeds normally', async () => {
    const { url, verifier, state } = await authorizationUrl();
    const { agent, data } = await openLoginPage(url);
    const confirm = await agent.fetch(new URL(`/interaction/${data.uid}/confirm`, issuer), { method: 'POST', headers: { accept: 'application/json' } });
    expect(confirm.status).toBe(400);
    expect(await confirm.json()).toEqual({ error: 'invalid_request', error_description: 'this request is not waiting for consent' });
    // Same browser, same request: the login page is still there and completes.
    const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet, agent });
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state }, { resource: RESOURCE });
    expect(tokens.scope).toBe('read');
  });

  test('a mismatched interaction: a sign-in posted to a page that is not the browser’s current request is refused', async () => {
    const agent = new UserAgent();
    const first = await openLoginPage((await authorizationUrl()).url, agent);
    const nonce = await pageNonce(agent, first.data);
    // The same browser starts a second request: its interaction cookie now names the second one.
    const second = await openLoginPage((await authorizationUrl()).url, agent);
    expect(second.data.uid).not.toBe(first.data.uid);
    const { data } = first;
    const res = await postLogin(agent, data, nonce);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: 'invalid_request', error_description: 'This page does not belong to the current sign-in request.' });
    // A nonce for the first page cannot be had through the second page's cookie either.
    const nonceRes = await agent.fetch(new URL(data.nonceUrl, issuer), { method: 'POST', headers: { accept: 'application/json' } });
    expect(nonceRes.status).toBe(400);
  });

  /** Signs in on the login page and follows the redirects to the consent page: its uid and the agent that holds it. */
  async function toConsent(url: URL): Promise<{ agent: UserAgent; uid: string; html: string }> {
    const { agent, data } = await openLoginPage(url);
    const login = await postLogin(agent, data, await pageNonce(agent, data));
    expect(login.status).toBe(200);
    let next = new URL(((await login.json()) as { redirect_to: string }).redirect_to, issuer);
    for (let hop = 0; hop < 10; hop += 1) {
      const res = await agent.fetch(next);
      if (res.status >= 300 && res.status < 400) {
        next = new URL(res.headers.get('location')!, next);
        continue;
      }
      const html = await res.text();
      const uid = /action="\/interaction\/([\w-]+)\/confirm"/.exec(html)?.[1];
      if (!uid) throw new Error(`no consent page at ${next.pathname}: ${html.slice(0, 300)}`);
      return { agent, uid, html };
    }
    throw new Error('too many redirects');
  }

  test.each([
    ['prompt=login', { prompt: 'login' }],
    ['prompt=login consent', { prompt: 'login consent' }],
  ])('%s: one sign-in, one approval, then the code (the consent keeps the login it follows)', async (_label, extra) => {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...extra,
    });
    const { callback, pages } = await authorizeWithWallet(url, REDIRECT, { wallet });
    expect(callback.searchParams.get('error')).toBeNull();
    expect(pages.map((p) => (p.includes('id="login-data"') ? 'login' : 'consent'))).toEqual(['login', 'consent']);
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE });
    expect(tokens.scope).toBe('read');
  });

  test('a denial sticks: an approval sent after Deny (before the browser followed it) is refused, and the client gets access_denied', async () => {
    const { url } = await authorizationUrl();
    const { agent, uid } = await toConsent(url);
    const deny = await agent.fetch(new URL(`/interaction/${uid}/abort`, issuer), { method: 'POST' });
    expect(deny.status).toBe(303);
    const approve = await agent.fetch(new URL(`/interaction/${uid}/confirm`, issuer), { method: 'POST', headers: { accept: 'application/json' } });
    expect(approve.status).toBe(400);
    expect(await approve.json()).toEqual({ error: 'access_denied', error_description: 'this request was denied; go back to the application and start again' });
    // Following the denial's redirect: the client gets the error, no code.
    let next = new URL(deny.headers.get('location')!, issuer);
    for (let hop = 0; hop < 10 && !next.href.startsWith(REDIRECT); hop += 1) {
      const res = await agent.fetch(next);
      next = new URL(res.headers.get('location')!, next);
    }
    expect(next.searchParams.get('error')).toBe('access_denied');
    expect(next.searchParams.get('code')).toBeNull();
  });

  test('a method an interaction address does not take is 405 with Allow (a page for a browser, JSON otherwise), with or without the cookie', async () => {
    const { url } = await authorizationUrl();
    const { agent, data } = await openLoginPage(url);
    const stranger = globalThis.fetch;
    for (const action of ['login', 'confirm', 'nonce', 'abort']) {
      const path = new URL(`/interaction/${data.uid}/${action}`, issuer);
      for (const send of [(init: RequestInit) => agent.fetch(path, init), (init: RequestInit) => stranger(path, init)]) {
        const page = await send({ method: 'GET' });
        expect({ action, status: page.status, allow: page.headers.get('allow'), type: page.headers.get('content-type') }).toEqual({ action, status: 405, allow: 'POST', type: expect.stringMatching(/^text\/html/) });
        const json = await send({ method: 'PUT', headers: { accept: 'application/json' } });
        expect({ action, status: json.status, allow: json.headers.get('allow'), body: await json.json() }).toEqual({
          action, status: 405, allow: 'POST', body: { error: 'invalid_request', error_description: 'PUT is not accepted at this address: use POST (the page submits it)' },
        });
      }
    }
    const post = await agent.fetch(new URL(`/interaction/${data.uid}`, issuer), { method: 'POST', headers: { accept: 'application/json' } });
    expect({ status: post.status, allow: post.headers.get('allow') }).toEqual({ status: 405, allow: 'GET, HEAD' });
    // The page itself still opens.
    expect((await agent.fetch(new URL(`/interaction/${data.uid}`, issuer))).status).toBe(200);
  });

  test('HEAD answers as GET on the interaction page and its assets; a login body that is neither JSON nor a form is 415', async () => {
    const { url } = await authorizationUrl();
    const { agent, data } = await openLoginPage(url);
    for (const path of [`/interaction/${data.uid}`, '/interaction-assets/login.js']) {
      const [get, head] = [await agent.fetch(new URL(path, issuer)), await agent.fetch(new URL(path, issuer), { method: 'HEAD' })];
      expect({ path, head: head.status, type: head.headers.get('content-type') }).toEqual({ path, head: get.status, type: get.headers.get('content-type') });
      expect(get.status).toBe(200);
      expect(await head.text()).toBe('');
    }
    const body = new URLSearchParams(await signedFor(data, await pageNonce(agent, data))).toString();
    const plain = await agent.fetch(new URL(data.loginUrl, issuer), { method: 'POST', headers: { 'content-type': 'text/plain', accept: 'application/json' }, body });
    expect(plain.status).toBe(415);
    expect(((await plain.json()) as { error_description: string }).error_description).toMatch(/^send message and signature as application\/json or application\/x-www-form-urlencoded \(got 'text\/plain'\)/);
    // The nonce was not used: the same message as a form signs in.
    const form = await agent.fetch(new URL(data.loginUrl, issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' }, body });
    expect(form.status).toBe(200);
  });

  test('consent denied: the client gets access_denied and no code', async () => {
    const { url } = await authorizationUrl();
    const { callback, pages } = await authorizeWithWallet(url, REDIRECT, { wallet, consent: 'deny' });
    expect(pages).toHaveLength(2); // the login page, then the consent page
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(callback.searchParams.get('code')).toBeNull();
  });
});
