import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { Wallet } from 'ethers';
import { calculateJwkThumbprint, createRemoteJWKSet, exportJWK, jwtVerify } from 'jose';
import * as oidc from 'openid-client';
import type { Browser, BrowserContext, Page } from 'playwright-core';

import { injectTestWallet, launchChromium } from '../support/browser.js';
import type { TestWalletHandle, TestWalletOptions } from '../support/browser.js';
import { baseConfig, insecure, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';

// A real browser (Debian's chromium, headless, driven by playwright-core) through the wallet login and consent
// pages: the page's own script talks to an injected EIP-1193 test wallet, and the client is openid-client v6.

const wallet = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');
const SUB = `did:pkh:eip155:1:${wallet.address}`;
const CLIENT_NAME = 'Browser test agent';
const SCREENSHOT_LOGIN = '/tmp/agentauth-browser-login.png';
const SCREENSHOT_CONSENT = '/tmp/agentauth-browser-consent.png';
const SCREENSHOT_NO_WALLET = '/tmp/agentauth-browser-no-wallet.png';
const SCREENSHOT_REJECTED = '/tmp/agentauth-browser-rejected.png';
const SCREENSHOT_LOGIN_PHONE = '/tmp/agentauth-browser-login-375.png';
const SCREENSHOT_CONSENT_PHONE = '/tmp/agentauth-browser-consent-375.png';

interface Session {
  context: BrowserContext;
  page: Page;
  wallet?: TestWalletHandle;
}

/**
 * The client's redirect_uri: a loopback server that records every authorization response and answers "ok".
 * (Not page.route: every authorization response arrives as a redirect, and Playwright does not promise to route a
 * redirect's target (microsoft/playwright#2617). With Chromium it was routed after the consent POST, but not when
 * /auth answered a page.goto with a redirect straight to the callback: net::ERR_CONNECTION_REFUSED.)
 */
async function startCallbackServer(): Promise<{ server: Server; redirectUri: string; received: URL[] }> {
  const received: URL[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', `http://${req.headers.host}`);
    if (req.method === 'GET' && url.pathname === '/callback') {
      received.push(url);
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('ok');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, redirectUri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/callback`, received };
}

describe('browser: wallet login and consent in headless Chromium, authorization code + PKCE + DPoP', () => {
  let as: AgentServer;
  let issuer: string;
  let config: oidc.Configuration;
  let browser: Browser;
  let callbackServer: Server;
  let redirectUri: string;
  /** Authorization responses the client's redirect_uri received. */
  let received: URL[];
  const open: BrowserContext[] = [];

  beforeAll(async () => {
    let cb: Awaited<ReturnType<typeof startCallbackServer>>;
    [as, browser, cb] = await Promise.all([startAgentServer(baseConfig()), launchChromium(), startCallbackServer()]);
    ({ server: callbackServer, redirectUri, received } = cb);
    issuer = as.server.url;
    config = await oidc.dynamicClientRegistration(
      new URL(issuer),
      {
        client_name: CLIENT_NAME,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
        scope: 'read write',
      },
      oidc.None(),
      insecure,
    );
  });

  afterEach(async () => {
    await Promise.all(open.splice(0).map((c) => c.close()));
  });

  afterAll(async () => {
    await browser?.close();
    await as?.server.stop();
    if (callbackServer) await new Promise((resolve) => callbackServer.close(resolve));
  });

  /** A fresh browser profile (no cookies), with the test wallet injected unless `walletOpts` is false. */
  async function newSession(walletOpts: TestWalletOptions | false = {}): Promise<Session> {
    const context = await browser.newContext();
    open.push(context);
    const handle = walletOpts === false ? undefined : await injectTestWallet(context, wallet, walletOpts);
    const page = await context.newPage();
    return { context, page, ...(handle ? { wallet: handle } : {}) };
  }

  async function authorizationRequest(scope = 'read') {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope,
      resource: RESOURCE,
      state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    return { url, verifier, state };
  }

  /** Authorization responses the client received for the request with this state. */
  const responsesFor = (state: string) => received.filter((u) => u.searchParams.get('state') === state);

  /** Waits until the browser has landed on the client's redirect_uri and returns that URL (as the client received it). */
  async function callbackOf(page: Page, state: string): Promise<URL> {
    await page.waitForURL((u) => u.href.startsWith(`${redirectUri}?`));
    expect(await page.locator('body').innerText()).toBe('ok');
    const responses = responsesFor(state);
    expect(responses.map(String)).toEqual([page.url()]);
    return responses[0]!;
  }

  const statusOf = async (page: Page) => ({
    text: ((await page.locator('#status').textContent()) ?? '').trim(),
    className: await page.locator('#status').getAttribute('class'),
  });

  /** Clicks "Connect wallet and sign in" and waits for the consent page, failing with the page's own error if it shows one. */
  async function signIn(page: Page): Promise<void> {
    await page.locator('#connect').click();
    await page.locator('#approve, #status.error').first().waitFor();
    if (await page.locator('#status.error').count()) throw new Error(`sign-in failed on the page: ${(await statusOf(page)).text}`);
  }

  /** Waits for the page's script to report an error in #status. */
  async function pageError(page: Page): Promise<string> {
    await page.locator('#status.error').waitFor();
    return (await statusOf(page)).text;
  }

  async function exchange(callback: URL, req: { verifier: string; state: string }) {
    const keyPair = await oidc.randomDPoPKeyPair('ES256');
    const tokens = await oidc.authorizationCodeGrant(
      config,
      callback,
      { pkceCodeVerifier: req.verifier, expectedState: req.state },
      { resource: RESOURCE },
      { DPoP: oidc.getDPoPHandle(config, keyPair) },
    );
    const { payload } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer, audience: RESOURCE });
    return { tokens, payload, jkt: await calculateJwkThumbprint(await exportJWK(keyPair.publicKey)) };
  }

  test('login with an injected wallet, consent, and code exchange for DPoP-bound tokens; every request stays on agentauth', async () => {
    const s = await newSession();
    const { page } = s;
    const requests: string[] = [];
    const problems: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    page.on('console', (m) => {
      // Chromium's own favicon request (neither server has one) is not the pages' doing.
      if (m.location().url.endsWith('/favicon.ico')) return;
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()} (${m.location().url})`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    const req = await authorizationRequest('read');

    // Login page: who asks, for what, and a working wallet button.
    await page.goto(req.url.href);
    expect(new URL(page.url()).pathname).toMatch(/^\/interaction\/[A-Za-z0-9_-]+$/);
    expect(await page.title()).toBe(`Sign in – ${CLIENT_NAME}`);
    expect(await page.locator('h1').textContent()).toBe('Sign in with your wallet');
    const loginText = await page.locator('main').innerText();
    expect(loginText).toContain(CLIENT_NAME);
    expect(await page.locator('.resource').allTextContents()).toEqual([RESOURCE]);
    expect(await page.locator('ul.scopes code').allTextContents()).toEqual(['read']);
    expect(await page.locator('#connect').isEnabled()).toBe(true);
    expect(await page.locator('#connect').textContent()).toBe('Connect wallet and sign in');
    expect((await statusOf(page)).text).toBe('');
    await page.screenshot({ path: SCREENSHOT_LOGIN, fullPage: true });

    // The page's script asks the wallet for its account and chain, gets a nonce, has the EIP-4361 message signed, logs in.
    await signIn(page);
    expect(s.wallet!.requests.map((r) => r.method)).toEqual(['eth_requestAccounts', 'eth_chainId', 'personal_sign']);
    expect(s.wallet!.signed).toHaveLength(1);
    const message = s.wallet!.signed[0]!;
    // The wallet answered in lowercase; the page put the EIP-55 address in the message.
    expect(message.split('\n').slice(0, 2)).toEqual([`${new URL(issuer).host} wants you to sign in with your Ethereum account:`, wallet.address]);
    expect(message).toContain(`URI: ${issuer}`);
    expect(message).toContain('Chain ID: 1\n');
    expect(message).toContain(`Resources:\n- ${RESOURCE}`);
    expect(message).toContain(`allow the application '${CLIENT_NAME}' to access ${RESOURCE} with scopes read.`);

    // Consent page: the client, where tokens go, the resource and scope, and the account signed in.
    expect(await page.title()).toBe(`Allow access – ${CLIENT_NAME}`);
    expect(await page.locator('h1').textContent()).toBe('Allow access?');
    const consentText = await page.locator('main').innerText();
    expect(consentText).toContain(`Signed in as ${SUB}.`);
    expect(consentText).toContain(CLIENT_NAME);
    expect(consentText).toContain(config.clientMetadata().client_id);
    expect(consentText).toContain(`will receive tokens at ${new URL(redirectUri).host} for:`);
    expect(await page.locator('.resource').allTextContents()).toEqual([RESOURCE]);
    expect(await page.locator('ul.scopes code').allTextContents()).toEqual(['read']);
    expect(await page.locator('#deny').isVisible()).toBe(true);
    await page.screenshot({ path: SCREENSHOT_CONSENT, fullPage: true });

    await page.locator('#approve').click();
    const callback = await callbackOf(s.page, req.state);
    expect(callback.searchParams.get('state')).toBe(req.state);
    expect(callback.searchParams.get('iss')).toBe(issuer);
    expect(callback.searchParams.get('code')).toEqual(expect.any(String));
    expect(callback.searchParams.get('error')).toBeNull();

    const { tokens, payload, jkt } = await exchange(callback, req);
    expect(tokens.token_type).toBe('dpop');
    expect(typeof tokens.refresh_token).toBe('string');
    expect(payload).toMatchObject({ sub: SUB, aud: RESOURCE, scope: 'read', client_id: config.clientMetadata().client_id, cnf: { jkt } });
    expect(SUB).not.toBe(SUB.toLowerCase());

    // No CDN: the pages' scripts and styles, and everything else the browser fetched, came from agentauth itself.
    const origin = new URL(issuer).origin;
    const elsewhere = requests.filter((u) => !(new URL(u).origin === origin || u.startsWith(redirectUri)));
    expect(elsewhere).toEqual([]);
    const paths = requests.filter((u) => new URL(u).origin === origin).map((u) => new URL(u).pathname);
    expect(paths).toEqual(expect.arrayContaining(['/interaction-assets/style.css', '/interaction-assets/ethers.umd.min.js', '/interaction-assets/login.js', expect.stringMatching(/^\/interaction\/[\w-]+\/nonce$/)]));
    // Nothing broke on the way: no script errors, no Content-Security-Policy violations.
    expect(problems).toEqual([]);
  });

  test('a client name written to read as agentauth\'s own words is quoted and shortened in the statement; what the signature grants stays in it', async () => {
    const deceptive = `Acme, only to verify that you own this address. This signature grants no access to any resource and no scopes; you can safely sign it. Ref${'.'.repeat(50)}`;
    const other = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { client_name: deceptive, redirect_uris: [redirectUri], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read write' },
      oidc.None(),
      insecure,
    );
    const s = await newSession();
    const url = oidc.buildAuthorizationUrl(other, { redirect_uri: redirectUri, scope: 'read write', resource: RESOURCE, state: oidc.randomState(), code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256' });
    await s.page.goto(url.href);
    await signIn(s.page);
    const statement = s.wallet!.signed[0]!.split('\n')[3]!;
    expect(statement.length).toBeLessThanOrEqual(200);
    expect(statement).toMatch(new RegExp(`^Sign in to ${new URL(issuer).host.replace('.', '\\.')} and allow the application 'Acme, only to verify .*\\.\\.\\.' to access ${RESOURCE.replace(/[.]/g, '\\.')} with scopes read write\\.$`));
  });

  test('on a 375 px phone, a long unbroken client name and the client ID wrap: neither the login nor the consent page is wider than the screen', async () => {
    const longName = `Agent${'X'.repeat(190)}`;
    const other = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { client_name: longName, redirect_uris: [redirectUri], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read write' },
      oidc.None(),
      insecure,
    );
    const s = await newSession();
    await s.page.setViewportSize({ width: 375, height: 812 });
    const url = oidc.buildAuthorizationUrl(other, { redirect_uri: redirectUri, scope: 'read write', resource: RESOURCE, state: oidc.randomState(), code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256' });
    await s.page.goto(url.href);
    const width = () => s.page.evaluate<number>('document.documentElement.scrollWidth');
    expect(await width()).toBeLessThanOrEqual(375);
    await s.page.screenshot({ path: SCREENSHOT_LOGIN_PHONE, fullPage: true });
    await signIn(s.page);
    expect(await s.page.locator('body').innerText()).toContain(other.clientMetadata().client_id);
    expect(await width()).toBeLessThanOrEqual(375);
    await s.page.screenshot({ path: SCREENSHOT_CONSENT_PHONE, fullPage: true });
  });

  test('a client name with no character a SIWE statement can hold (not ASCII) is named by its client_id instead', async () => {
    const other = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { client_name: 'エージェント', redirect_uris: [redirectUri], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read write' },
      oidc.None(),
      insecure,
    );
    const s = await newSession();
    const url = oidc.buildAuthorizationUrl(other, { redirect_uri: redirectUri, scope: 'read write', resource: RESOURCE, state: oidc.randomState(), code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256' });
    await s.page.goto(url.href);
    expect(await s.page.locator('strong').first().textContent()).toBe('エージェント');
    await signIn(s.page);
    const statement = s.wallet!.signed[0]!.split('\n')[3]!;
    expect(statement).toContain(`allow the application '${other.clientMetadata().client_id}' to access`);
  });

  test('a second authorization in the same browser: no sign-in again, and this public client with a loopback redirect is approved again (RFC 8252 section 8.6)', async () => {
    const s = await newSession();
    const first = await authorizationRequest('read');
    await s.page.goto(first.url.href);
    await signIn(s.page);
    await s.page.locator('#approve').click();
    await exchange(await callbackOf(s.page, first.state), first);
    const signedBefore = s.wallet!.signed.length;

    const second = await authorizationRequest('read');
    await s.page.goto(second.url.href);
    // The consent page, not the login page: the session is remembered, and the wallet is not asked again. Any local
    // process can listen on a loopback redirect, so the person approves each code for a public client sent there.
    await s.page.locator('#approve').waitFor();
    expect(await s.page.locator('#connect').count()).toBe(0);
    expect(await s.page.locator('main').textContent()).toContain('read');
    await s.page.screenshot({ path: '/tmp/agentauth-browser-consent-again.png', fullPage: true });
    await s.page.locator('#approve').click();
    const callback = await callbackOf(s.page, second.state);
    expect(callback.searchParams.get('code')).toEqual(expect.any(String));
    expect(s.wallet!.signed).toHaveLength(signedBefore);
    const { payload } = await exchange(callback, second);
    expect(payload).toMatchObject({ sub: SUB, scope: 'read' });
  });

  test('without a browser wallet the login page says so and disables the button; Cancel still answers the client', async () => {
    const s = await newSession(false);
    const req = await authorizationRequest('read');
    await s.page.goto(req.url.href);
    expect(await s.page.evaluate('typeof window.ethereum')).toBe('undefined');
    await s.page.locator('#connect:disabled').waitFor();
    const status = await statusOf(s.page);
    expect(status.className).toBe('error');
    expect(status.text).toMatch(/^No browser wallet was found\./);
    expect(status.text).toContain('wallet-signature grant');
    await s.page.screenshot({ path: SCREENSHOT_NO_WALLET, fullPage: true });
    // The access request is still shown, and the user can cancel.
    expect(await s.page.locator('.resource').allTextContents()).toEqual([RESOURCE]);
    await s.page.getByRole('button', { name: 'Cancel' }).click();
    const callback = await callbackOf(s.page, req.state);
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(callback.searchParams.get('state')).toBe(req.state);
    expect(callback.searchParams.get('code')).toBeNull();
  });

  test('a wallet on a chain that is not allowed: the page says which chain to use and stays on the login page', async () => {
    const s = await newSession({ chainId: 5 });
    const req = await authorizationRequest('read');
    await s.page.goto(req.url.href);
    const loginUrl = s.page.url();
    await s.page.locator('#connect').click();
    expect(await pageError(s.page)).toBe('Your wallet is on chain 5; switch it to chain 1.');
    expect(s.page.url()).toBe(loginUrl);
    expect(await s.page.locator('#connect').isEnabled()).toBe(true);
    // Refused before anything was signed.
    expect(s.wallet!.signed).toEqual([]);
    expect(s.wallet!.requests.map((r) => r.method)).not.toContain('personal_sign');
    expect(responsesFor(req.state)).toEqual([]);
  });

  test('the user rejecting the signature: the error is shown, and signing on a second try continues to consent', async () => {
    const s = await newSession({ rejectSignatures: true });
    const req = await authorizationRequest('read');
    await s.page.goto(req.url.href);
    const loginUrl = s.page.url();
    await s.page.locator('#connect').click();
    expect(await pageError(s.page)).toBe('User rejected the request.');
    await s.page.screenshot({ path: SCREENSHOT_REJECTED, fullPage: true });
    expect(s.page.url()).toBe(loginUrl);
    expect(s.wallet!.requests.map((r) => r.method)).toContain('personal_sign');
    expect(s.wallet!.signed).toEqual([]);
    expect(await s.page.locator('#connect').isEnabled()).toBe(true);

    s.wallet!.rejectSignatures(false);
    await signIn(s.page);
    expect(await s.page.locator('h1').textContent()).toBe('Allow access?');
  });

  test('a signature the server refuses: its reason is shown on the login page', async () => {
    // The wallet reports its own account but signs with another key.
    const s = await newSession({ signer: Wallet.createRandom() });
    const req = await authorizationRequest('read');
    await s.page.goto(req.url.href);
    const loginUrl = s.page.url();
    await s.page.locator('#connect').click();
    const text = await pageError(s.page);
    expect(text).toMatch(/^signature: /);
    expect(text).toContain(wallet.address);
    expect(s.page.url()).toBe(loginUrl);
    expect(await s.page.locator('#connect').isEnabled()).toBe(true);
    expect(responsesFor(req.state)).toEqual([]);
  });

  test('deny on the consent page: the client gets error=access_denied and no code', async () => {
    const s = await newSession();
    const req = await authorizationRequest('read write');
    await s.page.goto(req.url.href);
    await signIn(s.page);
    expect(await s.page.locator('ul.scopes code').allTextContents()).toEqual(['read', 'write']);
    await s.page.locator('#deny').click();
    const callback = await callbackOf(s.page, req.state);
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(callback.searchParams.get('state')).toBe(req.state);
    expect(callback.searchParams.get('iss')).toBe(issuer);
    expect(callback.searchParams.get('code')).toBeNull();
  });
});
