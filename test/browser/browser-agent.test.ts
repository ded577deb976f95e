import type { webcrypto } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { Wallet } from 'ethers';
import type { Browser, Page } from 'playwright-core';

import { baseConfig, register, RESOURCE } from '../support/agent-server.js';
import { launchChromium } from '../support/browser.js';
import { walletCode } from '../support/races.js';
import { startOnLoopback } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * An agent running in a web page (a public client whose redirect URI is on the page's origin) gets DPoP-bound tokens
 * from agentauth in headless Chromium, with its proofs made by WebCrypto: the browser's own CORS checks, not header
 * assertions, decide what the page may read. A page on another origin reads nothing and changes nothing, and the page
 * reads agentauth's refusals, the ones made before any route included, down to a storage failure's Retry-After.
 */

/** A static origin for pages: every path answers an empty HTML page. */
async function pageOrigin(): Promise<{ server: Server; origin: string }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>agent</title>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
  retryAfter: string | null;
}

/**
 * In the page: sends a form to `url` with a DPoP proof made by WebCrypto with the page's one key (made on first use), and
 * reads the answer as a page can; `{ failed }` when the browser refuses to let the page read it (a CORS failure).
 */
function postFromPage(page: Page, url: string, form: Record<string, string>, withProof = true): Promise<Answer | { failed: string }> {
  return page.evaluate(
    async ({ url, form, withProof }) => {
      const w = globalThis as unknown as { dpopKey?: webcrypto.CryptoKeyPair };
      const b64u = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      const json = (o: unknown) => b64u(new TextEncoder().encode(JSON.stringify(o)));
      w.dpopKey ??= await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
      const jwk = await crypto.subtle.exportKey('jwk', w.dpopKey.publicKey);
      const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
      if (withProof) {
        const htu = url.split('?')[0]!;
        const input = `${json({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } })}.${json({ htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() })}`;
        const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, w.dpopKey.privateKey, new TextEncoder().encode(input));
        headers.dpop = `${input}.${b64u(new Uint8Array(signature))}`;
      }
      try {
        const res = await fetch(url, { method: 'POST', headers, body: new URLSearchParams(form) });
        return { status: res.status, body: (await res.json()) as Record<string, unknown>, retryAfter: res.headers.get('retry-after') };
      } catch (err) {
        return { failed: String(err) };
      }
    },
    { url, form, withProof },
  );
}

describe('an agent in a web page (CORS, DPoP by WebCrypto)', () => {
  let server: RunningServer;
  let issuer: string;
  let dataDir: string;
  let browser: Browser;
  let spa: { server: Server; origin: string };
  let other: { server: Server; origin: string };

  beforeAll(async () => {
    const started = await startOnLoopback(baseConfig(), 'agentauth-browser-agent-');
    ({ server, url: issuer } = started);
    dataDir = started.env.AGENTAUTH_DATA_DIR!;
    spa = await pageOrigin();
    other = await pageOrigin();
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    spa?.server.close();
    other?.server.close();
  });

  test('the page exchanges its code and refreshes with DPoP; a page on another origin reads nothing and uses nothing up; refusals are readable, a storage failure with its Retry-After', async () => {
    const redirect = `${spa.origin}/cb`;
    const created = await register(issuer, { redirect_uris: [redirect], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'read' });
    expect(created.status).toBe(201);
    const clientId = created.body.client_id as string;
    const { code, verifier } = await walletCode(issuer, clientId, new Wallet(Wallet.createRandom().privateKey), 'read', redirect);

    const page = await browser.newPage();
    await page.goto(`${spa.origin}/app`);
    const token = `${issuer}/token`;

    // The metadata document is open to every origin.
    const metadata = await page.evaluate(async (url) => ((await (await fetch(url)).json()) as { token_endpoint: string }).token_endpoint, `${issuer}/.well-known/oauth-authorization-server`);
    expect(metadata).toBe(token);

    const redeemed = await postFromPage(page, token, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirect, resource: RESOURCE, client_id: clientId });
    expect(redeemed).toMatchObject({ status: 200, body: { token_type: 'DPoP' } });
    const first = (redeemed as Answer).body.refresh_token as string;

    // Another origin: the browser does not let it read the answer, and the refresh token is not used up.
    const elsewhere = await browser.newPage();
    await elsewhere.goto(`${other.origin}/`);
    for (const withProof of [true, false]) {
      expect(await postFromPage(elsewhere, token, { grant_type: 'refresh_token', refresh_token: first, resource: RESOURCE, client_id: clientId }, withProof)).toEqual({ failed: 'TypeError: Failed to fetch' });
    }

    const refreshed = await postFromPage(page, token, { grant_type: 'refresh_token', refresh_token: first, resource: RESOURCE, client_id: clientId });
    expect(refreshed).toMatchObject({ status: 200, body: { token_type: 'DPoP' } });

    // oidc-provider's refusal, and one made before any route (escapes in the query that are not UTF-8): both readable.
    const reused = await postFromPage(page, token, { grant_type: 'refresh_token', refresh_token: 'not-a-token', resource: RESOURCE, client_id: clientId });
    expect(reused).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    const malformed = await postFromPage(page, `${token}?x=%FF`, { grant_type: 'refresh_token', refresh_token: 'x', client_id: clientId });
    expect(malformed).toMatchObject({ status: 400, body: { error: 'invalid_request', error_description: expect.stringMatching(/^the query string holds percent-escapes that do not decode to UTF-8/) } });
    const tooLarge = await postFromPage(page, token, { grant_type: 'refresh_token', refresh_token: 'x'.repeat(3 * 1024 * 1024), client_id: clientId });
    expect(tooLarge).toMatchObject({ status: 413 });

    // The store's file removed under the server: storage fails (for good, on SQLite), and the page reads the 503 and
    // when to retry, its preflight (the DPoP header is not CORS-safelisted) answered without storage.
    rmSync(join(dataDir, 'agentauth.sqlite'));
    const until = Date.now() + 10_000;
    while ((await fetch(`${issuer}/readyz`)).status !== 503 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    const unavailable = await postFromPage(page, token, { grant_type: 'refresh_token', refresh_token: 'x', resource: RESOURCE, client_id: clientId });
    expect(unavailable).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' }, retryAfter: '5' });
  });
});
