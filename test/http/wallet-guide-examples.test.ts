import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Wallet } from 'ethers';
import * as jose from 'jose';
import * as oidc from 'openid-client';

import { buildSiweMessage, parseSiweMessage } from '../../interactions/siwe/message.js';
import { ConfigError, loadConfig } from '../../server/config.js';
import { baseConfig, insecure, REDIRECT, RESOURCE } from '../support/agent-server.js';
import { guideFencedBlock, replaceExactly } from '../support/guide.js';
import { startConfigured, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { openFreshLoginPage } from '../support/user-agent.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';

/**
 * docs/wallet-sign-in.md's examples other than its complete script (wallet-guide.test.ts runs that one), taken from
 * the page as written: the configuration and its table of defaults and ranges, the nonce request and answer, the
 * EIP-4361 message, the registration body, the token request and its response, and the two refusals it quotes. Only
 * what a reader fills in is replaced, each exactly where the page has it: the example host (auth.example.com), nonce
 * and client id, the message, signature and DPoP proof.
 */

const DOC = 'wallet-sign-in.md';
const GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');

/** A plain ``` block (no language) after `marker`. */
const plainBlock = (marker: string) => guideFencedBlock(DOC, marker, ['']);

/** An HTTP message as the guide writes one: start line, headers, a blank line, the body. */
function httpMessage(block: string): { start: string; headers: Array<[string, string]>; body: string } {
  const [head, ...rest] = block.replace(/\n$/, '').split('\n\n');
  const [start, ...lines] = head!.split('\n');
  const headers = lines.map((line): [string, string] => {
    const colon = line.indexOf(':');
    return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
  });
  return { start: start!, headers, body: rest.join('\n\n') };
}

const configFile = (content: unknown): string => writeConfig(tempDir('wallet-guide-config'), content);

describe('docs/wallet-sign-in.md: the configuration', () => {
  const example = JSON.parse(guideFencedBlock(DOC, '## Configuration', ['json'])) as { wallet: Record<string, unknown> };

  test('the example loads as written and is what the server runs with', () => {
    const file = join(tempDir('wallet-guide-config'), 'agentauth.json');
    writeFileSync(file, guideFencedBlock(DOC, '## Configuration', ['json']));
    expect(loadConfig({ AGENTAUTH_CONFIG: file }).wallet).toEqual(example.wallet);
  });

  test('without a wallet section, the defaults are the table\'s', () => {
    expect(loadConfig({}).wallet).toEqual({
      chains: { '1': {} },
      domains: [],
      origins: [],
      issuedAtWindowSeconds: 300,
      clockSkewSeconds: 60,
      nonceTTL: 300,
      rpcTimeoutMs: 5000,
    });
  });

  test.each([
    ['issuedAtWindowSeconds', 10, 3600],
    ['clockSkewSeconds', 0, 300],
    ['nonceTTL', 30, 3600],
    ['rpcTimeoutMs', 100, 30_000],
  ])('%s: the table\'s range %d to %d is accepted, one past either end refused with the setting named', (name, low, high) => {
    for (const value of [low, high]) {
      expect(loadConfig({ AGENTAUTH_CONFIG: configFile({ wallet: { [name]: value } }) }).wallet).toMatchObject({ [name]: value });
    }
    for (const value of [low - 1, high + 1]) {
      expect(() => loadConfig({ AGENTAUTH_CONFIG: configFile({ wallet: { [name]: value } }) })).toThrow(ConfigError);
      expect(() => loadConfig({ AGENTAUTH_CONFIG: configFile({ wallet: { [name]: value } }) })).toThrow(new RegExp(`wallet\\.${name}`));
    }
  });

  test('an origin with a path is refused: entries are origins such as https://app.example.com', () => {
    expect(loadConfig({ AGENTAUTH_CONFIG: configFile({ wallet: { origins: ['https://app.example.com'] } }) }).wallet.origins).toEqual(['https://app.example.com']);
    expect(() => loadConfig({ AGENTAUTH_CONFIG: configFile({ wallet: { origins: ['https://app.example.com/login'] } }) })).toThrow(/wallet\.origins/);
  });
});

describe('docs/wallet-sign-in.md: the message', () => {
  const example = plainBlock("agentauth accepts EIP-4361 text exactly as the EIP's grammar defines it:").replace(/\n$/, '');

  test('the example parses to the fields the table describes, and is exactly the text those fields make', () => {
    const parsed = parseSiweMessage(example);
    expect(parsed).toEqual({
      domain: 'auth.example.com',
      address: '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
      statement: 'Allow Example agent to access https://api.example.com with scope read.',
      uri: 'https://auth.example.com',
      version: '1',
      chainId: 1,
      nonce: 'J0qp5TJTosWARGsFwwsUD4FC',
      issuedAt: new Date('2026-01-01T12:00:00.000Z'),
      expirationTime: new Date('2026-01-01T12:02:00.000Z'),
      requestId: '39F6S558fZeXKcK-uYWp8O0PzKlG7VjsdWhVrqncvZg',
      resources: ['https://api.example.com'],
    });
    // Lines end in LF, the optional fields in the order shown, no trailing newline.
    const { version: _version, ...fields } = parsed;
    expect(buildSiweMessage(fields)).toBe(example);
  });

  test('without a statement both blank lines stay (three line feeds after the address); a lowercase address does not parse', () => {
    const withoutStatement = replaceExactly(example, '\nAllow Example agent to access https://api.example.com with scope read.\n', '\n', 'the message');
    expect(withoutStatement).toContain('0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n\n\nURI:');
    expect(parseSiweMessage(withoutStatement).statement).toBeUndefined();
    const lowercase = replaceExactly(example, '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266', '0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266', 'the message');
    expect(() => parseSiweMessage(lowercase)).toThrow(expect.objectContaining({ rule: 'message-format' }));
  });
});

describe('docs/wallet-sign-in.md against a live agentauth', () => {
  let server: RunningServer;
  let issuer: string;
  let host: string;

  beforeAll(async () => {
    ({ server } = await startConfigured(baseConfig()));
    issuer = server.url;
    host = new URL(issuer).host;
  });

  afterAll(async () => {
    await server?.stop();
  });

  /** The guide's registration body for a headless wallet agent, registered as written. */
  async function registerGuideClient(): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: guideFencedBlock(DOC, '### Registering the client', ['json']),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  test('the registration body registers a client with what it asks for', async () => {
    const asked = JSON.parse(guideFencedBlock(DOC, '### Registering the client', ['json'])) as Record<string, unknown>;
    const { status, body } = await registerGuideClient();
    expect(status).toBe(201);
    expect(body).toMatchObject(asked);
    expect(body.client_id).toEqual(expect.any(String));
  });

  test('POST /wallet/nonce as the guide sends it gets the answer it shows', async () => {
    const { body: client } = await registerGuideClient();
    const request = httpMessage(plainBlock('## The nonce endpoints'));
    expect(request.start).toBe('POST /wallet/nonce HTTP/1.1');
    const headers = new Headers(request.headers.filter(([name]) => name !== 'host'));
    const res = await fetch(`${issuer}/wallet/nonce`, {
      method: 'POST',
      headers,
      body: replaceExactly(request.body, '<client id>', encodeURIComponent(String(client.client_id)), 'the nonce request'),
    });

    const shown = httpMessage(guideFencedBlock(DOC, '\nclient_id=<client id>\n```', ['']));
    expect(`HTTP/1.1 ${res.status} ${res.statusText}`).toBe(shown.start);
    for (const [name, value] of shown.headers) expect([name, res.headers.get(name)]).toEqual([name, value]);
    const answer = (await res.json()) as Record<string, unknown>;
    const example = JSON.parse(shown.body) as Record<string, unknown>;
    expect(Object.keys(answer).sort()).toEqual(Object.keys(example).sort());
    // 24 letters and digits, like the example's; expires_in is nonceTTL (300 by default, as in the example).
    expect(answer.nonce).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(String(example.nonce)).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(answer.expires_in).toBe(example.expires_in);
  });

  test('the nonce endpoint\'s refusals are the ones listed: no client_id, an unknown client, a client without the grant, another method, another body type, a malformed body', async () => {
    const post = (body: string) =>
      fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
    const refused = async (res: Response) => ({ status: res.status, error: ((await res.json()) as { error?: string }).error });
    await expect(post('').then(refused)).resolves.toEqual({ status: 400, error: 'invalid_request' });
    await expect(post('client_id=nobody-registered-this').then(refused)).resolves.toEqual({ status: 400, error: 'invalid_client' });
    const web = await fetch(`${issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none' }),
    });
    const webId = String(((await web.json()) as { client_id: string }).client_id);
    await expect(post(`client_id=${encodeURIComponent(webId)}`).then(refused)).resolves.toEqual({ status: 400, error: 'unauthorized_client' });
    const get = await fetch(`${issuer}/wallet/nonce`);
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
    const typed = await fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'client_id=x' });
    await expect(refused(typed)).resolves.toEqual({ status: 415, error: 'invalid_request' });
    const broken = await fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' });
    await expect(refused(broken)).resolves.toEqual({ status: 400, error: 'invalid_request' });
    // A JSON body works as well as a form.
    const { body: client } = await registerGuideClient();
    const json = await fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_id: client.client_id }) });
    expect(json.status).toBe(200);
  });

  test('a nonce redeemed by another client is refused with the answer the guide quotes', async () => {
    const { body: owner } = await registerGuideClient();
    const { body: other } = await registerGuideClient();
    const nonce = await fetchNonce(issuer, String(owner.client_id));
    const signed = await signedSiwe(issuer, wallet, { address: wallet.address, nonce });
    const res = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: GRANT, client_id: String(other.client_id), ...signed, resource: RESOURCE, scope: 'read' }),
    });

    const shown = httpMessage(guideFencedBlock(DOC, 'A refused wallet check looks like this:', ['']));
    expect(`HTTP/1.1 ${res.status} ${res.statusText}`).toBe(shown.start);
    for (const [name, value] of shown.headers) expect([name, res.headers.get(name)]).toEqual([name, value]);
    let expected = replaceExactly(shown.body, 'J0qp5TJTosWARGsFwwsUD4FC', nonce, 'the refused wallet check');
    expected = replaceExactly(expected, '7mWx0Jq4Hq6K4GvBzaXSN', String(other.client_id), 'the refused wallet check');
    expect(await res.json()).toEqual(JSON.parse(expected));
    // Refused before the wallet check consumed it: the nonce still works for the client it was issued to.
    const owned = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: GRANT, client_id: String(owner.client_id), ...signed, resource: RESOURCE, scope: 'read' }),
    });
    expect(owned.status).toBe(200);
  });

  test('the token request as the guide writes it, with a DPoP proof, gets the response the guide lists', async () => {
    const { body: client } = await registerGuideClient();
    const clientId = String(client.client_id);
    const nonce = await fetchNonce(issuer, clientId);
    const { message, signature } = await signedSiwe(issuer, wallet, { address: wallet.address, nonce });
    const { publicKey, privateKey } = await jose.generateKeyPair('ES256');
    const jwk = await jose.exportJWK(publicKey);
    const proof = await new jose.SignJWT({ htm: 'POST', htu: `${issuer}/token`, iat: Math.floor(Date.now() / 1000), jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .sign(privateKey);

    const request = httpMessage(plainBlock('### The token request'));
    expect(request.start).toBe('POST /token HTTP/1.1');
    const headers = new Headers(
      request.headers.filter(([name]) => name !== 'host').map(([name, value]): [string, string] => [name, name === 'dpop' ? replaceExactly(value, '<proof>', proof, 'the DPoP header') : value]),
    );
    // The body as written: one parameter a line, each after the first continuing with "&".
    let body = request.body.split('\n').join('');
    body = replaceExactly(body, '<client id>', encodeURIComponent(clientId), 'the token request');
    body = replaceExactly(body, '<the EIP-4361 text, form-encoded>', encodeURIComponent(message), 'the token request');
    body = replaceExactly(body, '0x<hex>', signature, 'the token request');
    const res = await fetch(`${issuer}/token`, { method: 'POST', headers, body });
    const answer = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(200);

    // "token_type is DPoP (with cnf.jkt in the token) when the request carried a proof"
    expect(answer.token_type).toBe('DPoP');
    const claims = jose.decodeJwt(String(answer.access_token));
    expect(claims).toMatchObject({
      sub: `did:pkh:eip155:1:${wallet.address}`,
      aud: RESOURCE,
      client_id: clientId,
      scope: 'read',
      cnf: { jkt: await jose.calculateJwkThumbprint(jwk) },
    });
    expect(claims.jti).toEqual(expect.any(String));
    expect(claims.grant_id).toEqual(expect.any(String));
    expect(answer.expires_in).toEqual(expect.any(Number));
    // "public clients (none) get [a refresh token] only when the request carried a DPoP proof"
    expect(answer.refresh_token).toEqual(expect.any(String));
  });

  test('without a proof, the same request gets a Bearer token of at most 300 s and, for a public client, no refresh token', async () => {
    const { body: client } = await registerGuideClient();
    const clientId = String(client.client_id);
    const { message, signature } = await signedSiwe(issuer, wallet, { address: wallet.address, nonce: await fetchNonce(issuer, clientId) });
    const res = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: GRANT, client_id: clientId, message, signature, resource: RESOURCE, scope: 'read' }),
    });
    const answer = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(200);
    expect(answer.token_type).toBe('Bearer');
    expect(Number(answer.expires_in)).toBeLessThanOrEqual(300);
    expect(jose.decodeJwt(String(answer.access_token)).cnf).toBeUndefined();
    expect(answer).not.toHaveProperty('refresh_token');
  });

  test('the login page refuses a message for another domain with the JSON the guide shows', async () => {
    const web = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { client_name: 'Web agent', redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
    const { agent, data } = await openFreshLoginPage(web, REDIRECT, RESOURCE);
    const nonceRes = await agent.fetch(new URL(data.nonceUrl, issuer), { method: 'POST', headers: { accept: 'application/json' } });
    const { nonce } = (await nonceRes.json()) as { nonce: string };
    const message = buildSiweMessage({ domain: 'evil.example', address: wallet.address, uri: data.uri, chainId: 1, nonce, issuedAt: new Date(), requestId: data.uid, resources: data.resources });
    const res = await agent.fetch(new URL(data.loginUrl, issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ message, signature: await wallet.signMessage(message) }),
    });
    expect(res.status).toBe(400);
    const shown = guideFencedBlock(DOC, 'The page script posts JSON with', ['json']);
    // The block is indented under its list item; the example issuer's host becomes this server's.
    const expected = replaceExactly(shown, 'auth.example.com', host, 'the login page refusal');
    expect(await res.json()).toEqual(JSON.parse(expected));
  });
});
