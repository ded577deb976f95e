import type { Browser } from 'playwright-core';

import { launchChromium, watchedPage } from '../support/browser.js';
import type { FerretdbProcess } from '../support/ferretdb.js';
import { startOnOwnDatabase } from '../support/own-database.js';
import type { RunningServer } from '../support/server.js';

// A person who follows an application's sign-in link while agentauth cannot reach its store sees a page that says so
// (503, under the same Content-Security-Policy as every page, loading only its own stylesheet), not a JSON error body.
// The authorization endpoint cannot redirect `temporarily_unavailable` to the application then: the client's
// redirect URIs are in the store it cannot reach.

describe('the page a browser gets while storage is down', () => {
  let db: FerretdbProcess;
  let server: RunningServer;
  let browser: Browser;

  beforeAll(async () => {
    ({ db, server } = await startOnOwnDatabase('outage-page', 'outage-page-secret-0123456789abcdef0123', 1000));
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await db?.stop();
  });

  test('a sign-in link followed during an outage shows "Temporarily unavailable", and the same link works once the store is back', async () => {
    const reg = await fetch(`${server.url}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:65000/cb'], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], scope: 'read' }),
    });
    expect(reg.status).toBe(201);
    const clientId = ((await reg.json()) as { client_id: string }).client_id;
    const authorize = new URL(`${server.url}/auth`);
    for (const [k, v] of Object.entries({ client_id: clientId, response_type: 'code', redirect_uri: 'http://127.0.0.1:65000/cb', scope: 'read', resource: 'https://api.example.com', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })) authorize.searchParams.set(k, v);

    // Anything the page loads must load: only the page itself is answered 503.
    const { page, problems } = await watchedPage(browser, [authorize.href]);
    await db.pause();
    try {
      const res = await page.goto(authorize.href);
      expect(res?.status()).toBe(503);
      expect(res?.headers()['content-type']).toBe('text/html; charset=utf-8');
      expect(await page.locator('h1').textContent()).toBe('Temporarily unavailable');
      expect(await page.locator('p.error').textContent()).toContain('cannot reach its storage right now');
      // Styled by the page's own stylesheet, which the CSP lets load.
      expect(await page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth")).toBe('544px');
      await page.screenshot({ path: '/tmp/agentauth-browser-outage.png', fullPage: true });
    } finally {
      db.resume();
    }
    expect(problems).toEqual([]);

    // Once the store answers again, the same link leads to the sign-in page.
    const until = Date.now() + 15_000;
    for (;;) {
      const res = await page.goto(authorize.href);
      if (res?.status() === 200) break;
      if (Date.now() > until) throw new Error(`the sign-in link still answers ${res?.status()} 15 s after the store came back`);
      await page.waitForTimeout(200);
    }
    expect(await page.locator('#login-data').count()).toBe(1);
    await page.close();
  });
});
