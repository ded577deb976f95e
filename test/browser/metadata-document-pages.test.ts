import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { Wallet } from 'ethers';
import type { Browser } from 'playwright-core';

import { baseConfig, RESOURCE } from '../support/agent-server.js';
import { injectTestWallet, launchChromium } from '../support/browser.js';
import { makeTestPki, startCimdServer, startDocumentServer, testSwitchFor } from '../support/metadata-documents.js';
import type { DocumentServer } from '../support/metadata-documents.js';
import type { RunningServer } from '../support/server.js';

// The login and consent pages for a client identified by a client ID metadata document, in headless Chromium:
// they name the host that published the document and warn when its redirects all go to localhost.

const wallet = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');
const SCREENSHOT_LOGIN = '/tmp/agentauth-cimd-login.png';
const SCREENSHOT_CONSENT = '/tmp/agentauth-cimd-consent.png';
const SCREENSHOT_WEB = '/tmp/agentauth-cimd-login-web.png';

describe('browser: pages for a client identified by a metadata document', () => {
  let browser: Browser;
  let docs: DocumentServer;
  let as: RunningServer;
  let callback: Server;
  let redirectUri: string;

  beforeAll(async () => {
    const pki = makeTestPki();
    callback = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'));
    await new Promise<void>((resolve) => callback.listen(0, '127.0.0.1', resolve));
    redirectUri = `http://127.0.0.1:${(callback.address() as AddressInfo).port}/callback`;
    [browser, docs] = await Promise.all([launchChromium(), startDocumentServer(pki)]);
    as = await startCimdServer(baseConfig(), testSwitchFor(pki), docs.port);
  });

  afterAll(async () => {
    await browser?.close();
    await as?.stop();
    await docs?.close();
    if (callback) await new Promise((resolve) => callback.close(resolve));
  });

  function authorizationUrl(clientId: string): string {
    const verifier = randomBytes(32).toString('base64url');
    const url = new URL(`${as.url}/auth`);
    for (const [k, v] of Object.entries({
      client_id: clientId, response_type: 'code', redirect_uri: redirectUri, scope: 'read', resource: RESOURCE, state: 's1',
      code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
    })) url.searchParams.set(k, v);
    return url.href;
  }

  test('a localhost-only document: host shown and a visible warning on login and consent', async () => {
    const path = '/cli/client.json';
    const clientId = docs.url('agent.test', path);
    docs.serveJson(path, { client_id: clientId, client_name: 'Example CLI agent', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'] });
    const context = await browser.newContext();
    await injectTestWallet(context, wallet);
    const page = await context.newPage();
    await page.goto(authorizationUrl(clientId));

    const host = `agent.test:${docs.port}`;
    expect(await page.locator('.client-host').textContent()).toBe(host);
    const warning = page.locator('#localhost-warning');
    expect(await warning.isVisible()).toBe(true);
    expect(await warning.innerText()).toMatch(/sends you back only to localhost/);
    // The warning is drawn as one (an amber box), not as plain text.
    expect(await warning.evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor)).toBe('rgb(255, 244, 229)');
    await page.screenshot({ path: SCREENSHOT_LOGIN, fullPage: true });

    await page.locator('#connect').click();
    await page.locator('#approve').waitFor();
    expect(await page.locator('.client-host').textContent()).toBe(host);
    expect(await page.locator('#localhost-warning').isVisible()).toBe(true);
    expect(await page.locator('main').innerText()).toContain(clientId);
    await page.screenshot({ path: SCREENSHOT_CONSENT, fullPage: true });

    await page.locator('#approve').click();
    await page.waitForURL((u) => u.href.startsWith(`${redirectUri}?`));
    expect(new URL(page.url()).searchParams.get('code')).toEqual(expect.any(String));
    await context.close();
  });

  test('a document with a redirect off this machine: host shown, no warning', async () => {
    const path = '/web/client.json';
    const clientId = docs.url('agent.test', path);
    docs.serveJson(path, { client_id: clientId, client_name: 'Example web agent', redirect_uris: ['https://app.agent.test/callback', redirectUri], token_endpoint_auth_method: 'none' });
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(authorizationUrl(clientId));
    expect(await page.locator('.client-host').textContent()).toBe(`agent.test:${docs.port}`);
    expect(await page.locator('#localhost-warning').count()).toBe(0);
    await page.screenshot({ path: SCREENSHOT_WEB, fullPage: true });
    await context.close();
  });
});
