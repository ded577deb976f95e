import { Wallet } from 'ethers';
import type { Browser, BrowserContext, Page } from 'playwright-core';

import { launchChromium, watchedPage } from '../support/browser.js';
import { baseConfig, REDIRECT, register, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { walletCode } from '../support/races.js';

// The pages oidc-provider renders at /session/end, in a real browser under the Content-Security-Policy every response
// carries: they must work (the auto-submitting form's inline script is allowed by its hash, the confirmation buttons
// submit their form) and load nothing the policy refuses.

const user = new Wallet('0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e');

describe('logout and error pages in a browser, under the CSP', () => {
  let as: AgentServer;
  let issuer: string;
  let browser: Browser;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    issuer = as.server.url;
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await as?.server.stop();
  });

  /**
   * A client registered as `name`, a person signed in to it over HTTP, and a browser context holding that sign-in's
   * cookies.
   */
  async function signedIn(name: string): Promise<{ clientId: string; context: BrowserContext }> {
    const created = await register(issuer, { client_name: name, redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(created.status).toBe(201);
    const clientId = created.body.client_id as string;
    const { agent } = await walletCode(issuer, clientId, user);
    const context = await browser.newContext();
    await context.addCookies([...agent.cookies].map(([cookie, value]) => ({ name: cookie, value, url: issuer })));
    return { clientId, context };
  }

  /** The computed max-width of <main>: set only by agentauth's stylesheet, so it shows the stylesheet applied. */
  const mainMaxWidth = (page: Page) =>
    page.locator('main').evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { maxWidth: string } }).getComputedStyle(el).maxWidth);

  test('without a session, /SESSION/END/ auto-submits (its inline script allowed by hash) and lands on the success page', async () => {
    const context = await browser.newContext();
    try {
      const { page, problems } = await watchedPage(context);
      await page.goto(`${issuer}/SESSION/END/`);
      await page.waitForURL((u) => u.pathname === '/session/end/success');
      await expect(page.locator('h1').textContent()).resolves.toBe('Signed out');
      // The stylesheet is agentauth's own, and the policy lets it apply.
      await expect(mainMaxWidth(page)).resolves.toBe('544px');
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });

  test('signed in, the confirmation page signs out with its button, then shows the success page', async () => {
    const { clientId, context } = await signedIn('Browser logout agent');
    try {
      const { page, problems } = await watchedPage(context);
      await page.goto(`${issuer}/session/end?client_id=${encodeURIComponent(clientId)}`);
      await expect(page.locator('h1').textContent()).resolves.toBe('Sign out?');
      await expect(page.locator('main').textContent()).resolves.toContain('Browser logout agent');
      await page.screenshot({ path: '/tmp/agentauth-browser-logout-confirm.png', fullPage: true });
      await expect(page.getByRole('button', { name: 'Sign out of Browser logout agent only' }).count()).resolves.toBe(1);
      await page.getByRole('button', { name: 'Sign out everywhere' }).click();
      await page.waitForURL((u) => u.pathname === '/session/end/success');
      await expect(page.locator('h1').textContent()).resolves.toBe('Signed out');
      await page.screenshot({ path: '/tmp/agentauth-browser-logout-done.png', fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });

  test('"Sign out of <client> only" says so: the success page names the client, and the sign-in here stays', async () => {
    const { clientId, context } = await signedIn('Only this agent');
    try {
      const { page, problems } = await watchedPage(context);
      await page.goto(`${issuer}/session/end?client_id=${encodeURIComponent(clientId)}`);
      await expect(page.locator('main').textContent()).resolves.toContain('To stay signed in, close this page.');
      await page.getByRole('button', { name: 'Sign out of Only this agent only' }).click();
      await page.waitForURL((u) => u.pathname === '/session/end/success');
      await expect(page.locator('main p').textContent()).resolves.toBe('You are signed out of Only this agent, and its access is revoked. You are still signed in here for other applications. You can close this page.');
      await page.screenshot({ path: '/tmp/agentauth-browser-logout-client-only.png', fullPage: true });
      // Still signed in here: a logout without a client asks again (with one button: nothing to sign out of "only").
      await page.goto(`${issuer}/session/end`);
      await expect(page.locator('h1').textContent()).resolves.toBe('Sign out?');
      await expect(page.getByRole('button').allTextContents()).resolves.toEqual(['Sign out everywhere']);
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });

  test('a link to the success page naming a client does not say the person was signed out of it unless they were', async () => {
    const { clientId, context } = await signedIn('Still signed in agent');
    const stranger = await browser.newContext();
    try {
      const success = `${issuer}/session/end/success?client_id=${encodeURIComponent(clientId)}`;
      // Signed in to that client, nothing signed out: the page says so, and names no client.
      const { page, problems } = await watchedPage(context);
      await page.goto(success);
      await expect(page.locator('h1').textContent()).resolves.toBe('Still signed in');
      await expect(page.locator('main p').textContent()).resolves.toBe('You are still signed in here: nothing was signed out. To sign out, use the sign-out of the application you signed in to. You can close this page.');
      await page.screenshot({ path: '/tmp/agentauth-browser-logout-still-signed-in.png', fullPage: true });
      await page.goto(`${issuer}/session/end/success`);
      await expect(page.locator('h1').textContent()).resolves.toBe('Still signed in');
      // Not signed in here at all: the same.
      const { page: other, problems: otherProblems } = await watchedPage(stranger);
      await other.goto(success);
      await expect(other.locator('main p').textContent()).resolves.toBe('You are signed out. You can close this page.');
      await other.screenshot({ path: '/tmp/agentauth-browser-logout-spoofed.png', fullPage: true });
      // The sign-in is untouched: a logout for the client still asks.
      await page.goto(`${issuer}/session/end?client_id=${encodeURIComponent(clientId)}`);
      await expect(page.getByRole('button', { name: 'Sign out of Still signed in agent only' }).count()).resolves.toBe(1);
      expect([...problems, ...otherProblems]).toEqual([]);
    } finally {
      await Promise.all([context.close(), stranger.close()]);
    }
  });

  test('a link naming a client this browser never signed in to: the confirmation does not say that client asks, and the success page does not say it was signed out of', async () => {
    const { context } = await signedIn('Signed in agent');
    const other = await register(issuer, { client_name: 'Totally Trusted Bank', redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(other.status).toBe(201);
    const otherId = encodeURIComponent(other.body.client_id as string);
    try {
      const { page, problems } = await watchedPage(context);
      await page.goto(`${issuer}/session/end?client_id=${otherId}`);
      await expect(page.locator('main').textContent()).resolves.toContain('An application asks to sign you out.');
      await expect(page.locator('main').textContent()).resolves.not.toContain('Totally Trusted Bank');
      await expect(page.getByRole('button').allTextContents()).resolves.toEqual(['Sign out everywhere']);
      await page.screenshot({ path: '/tmp/agentauth-browser-logout-other-client.png', fullPage: true });
      await page.goto(`${issuer}/session/end/success?client_id=${otherId}`);
      await expect(page.locator('h1').textContent()).resolves.toBe('Still signed in');
      await expect(page.locator('main').textContent()).resolves.not.toContain('Totally Trusted Bank');
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  });

  test("oidc-provider's error page is agentauth's, styled, and says what went wrong", async () => {
    const context = await browser.newContext();
    try {
      const { page, problems } = await watchedPage(context);
      const res = await page.goto(`${issuer}/session/end?client_id=nobody`);
      expect(res?.status()).toBe(400);
      await expect(page.locator('h1').textContent()).resolves.toBe('Request refused');
      await expect(page.locator('p.error').textContent()).resolves.toMatch(/\(invalid_client\)\.$/);
      await expect(mainMaxWidth(page)).resolves.toBe('544px');
      await page.screenshot({ path: '/tmp/agentauth-browser-error.png', fullPage: true });
      // The page's own 400 is the only error: nothing was blocked.
      expect(problems).toEqual([`400: ${issuer}/session/end?client_id=nobody`]);
    } finally {
      await context.close();
    }
  });

  test('an error for a client that registered itself is a page with the way back (RFC 9700 section 4.11.2), not a redirect; the person follows it or not', async () => {
    const created = await register(issuer, { client_name: 'Self-registered agent', redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(created.status).toBe(201);
    const context = await browser.newContext();
    try {
      const { page, problems } = await watchedPage(context);
      const url = new URL(`${issuer}/auth`);
      // No PKCE: refused at once; before, the browser was sent to the redirect URI with the error.
      for (const [k, v] of Object.entries({ client_id: created.body.client_id as string, response_type: 'code', redirect_uri: REDIRECT, scope: 'read', resource: 'https://api.example.com', state: 'st' })) url.searchParams.set(k, v);
      const res = await page.goto(url.href);
      expect(res?.status()).toBe(400);
      expect(page.url()).toBe(url.href);
      await expect(page.locator('h1').textContent()).resolves.toBe('Request refused');
      await expect(page.locator('p.error').textContent()).resolves.toMatch(/requires PKCE.*\(invalid_request\)\.$/);
      await expect(page.locator('.client-host').textContent()).resolves.toBe('127.0.0.1:65000');
      const back = new URL((await page.locator('a.button').getAttribute('href'))!);
      expect(`${back.origin}${back.pathname}`).toBe(REDIRECT);
      expect(back.searchParams.get('error')).toBe('invalid_request');
      await expect(page.locator('a.button').textContent()).resolves.toBe('Return to 127.0.0.1:65000');
      await expect(mainMaxWidth(page)).resolves.toBe('544px');
      await page.screenshot({ path: '/tmp/agentauth-browser-refused-request.png', fullPage: true });
      expect(problems).toEqual([`400: ${url.href}`]);

      // response_mode=form_post: a form with a button, which the CSP lets the person submit (nothing submits it alone).
      url.searchParams.set('response_mode', 'form_post');
      const posted = await page.goto(url.href);
      expect(posted?.status()).toBe(400);
      await page.waitForTimeout(300);
      expect(page.url()).toBe(url.href);
      await expect(page.locator('form button[type=submit]').textContent()).resolves.toBe('Return to 127.0.0.1:65000');
      expect(problems).toEqual([`400: ${url.href.replace('&response_mode=form_post', '')}`, `400: ${url.href}`]);
    } finally {
      await context.close();
    }
  });
});
