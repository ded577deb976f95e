import { connect } from 'node:net';

import { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { buildSiweMessage } from '../../interactions/siwe/message.js';
import { MAX_MESSAGE_LENGTH } from '../../interactions/siwe/outline.js';
import { baseConfig, insecure, REDIRECT, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { openFreshLoginPage } from '../support/user-agent.js';
import type { LoginData, UserAgent } from '../support/user-agent.js';
import { logLines } from '../support/server.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';

const GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');

/** Bad input to the wallet sign-in, one case per point: each gets a 400 naming the rule and changes nothing else. */
describe('bad input to the wallet sign-in', () => {
  let as: AgentServer;
  let issuer: string;
  let webClient: oidc.Configuration;
  let agentClient: oidc.Configuration;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig());
    issuer = as.server.url;
    webClient = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { client_name: 'Web agent', redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
    agentClient = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { grant_types: [GRANT], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  /** A login page of a fresh authorization request. */
  async function loginPage(): Promise<{ agent: UserAgent; data: LoginData }> {
    return openFreshLoginPage(webClient, REDIRECT, RESOURCE);
  }

  async function pageNonce(agent: UserAgent, data: LoginData): Promise<string> {
    const res = await agent.fetch(new URL(data.nonceUrl, issuer), { method: 'POST', headers: { accept: 'application/json' } });
    expect(res.status).toBe(200);
    return ((await res.json()) as { nonce: string }).nonce;
  }

  /** The message the login page's script would build, with `nonce`. */
  const pageMessage = (data: LoginData, nonce: string) =>
    buildSiweMessage({ domain: data.domain, address: wallet.address, uri: data.uri, chainId: 1, nonce, issuedAt: new Date(), requestId: data.uid, resources: data.resources });

  async function postLogin(agent: UserAgent, data: LoginData, message: string, signature?: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await agent.fetch(new URL(data.loginUrl, issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ message, signature: signature ?? (await wallet.signMessage(message)) }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  /** Raw bytes to the server on a connection of its own; resolves with what came back (or '' when it was closed). */
  function rawRequest(bytes: string, opts: { closeAfterWrite?: boolean } = {}): Promise<string> {
    return new Promise((resolve, reject) => {
      const url = new URL(issuer);
      const socket = connect(Number(url.port), url.hostname === 'localhost' ? '127.0.0.1' : url.hostname);
      let answer = '';
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => (answer += d));
      socket.on('error', reject);
      socket.on('close', () => resolve(answer));
      socket.write(bytes, () => {
        if (opts.closeAfterWrite) socket.destroy();
      });
      socket.setTimeout(10_000, () => socket.destroy());
    });
  }
  const errorLines = () => as.server.output().split('\n').filter((l) => l.includes('"level":"error"'));

  test('POST /wallet/nonce with a malformed or oversized body: 400 or 413 invalid_request as JSON, never a 500, and no error logged', async () => {
    const post = (contentType: string, body: string) =>
      fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': contentType }, body });
    const before = errorLines().length;
    const broken = await post('application/json', '{');
    expect(broken.status).toBe(400);
    expect(await broken.json()).toEqual({ error: 'invalid_request', error_description: 'the request body is not valid JSON' });
    const formAsJson = await post('application/json', `client_id=${agentClient.clientMetadata().client_id}`);
    expect(formAsJson.status).toBe(400);
    expect((await formAsJson.json()) as Record<string, unknown>).toMatchObject({ error: 'invalid_request' });
    const declaredTooLarge = await post('application/x-www-form-urlencoded', `client_id=x&pad=${'a'.repeat(70_000)}`);
    expect(declaredTooLarge.status).toBe(413);
    // Announced by Content-Length: the server-wide body limit (server/http/body-limit.ts) refuses it before the route.
    expect(await declaredTooLarge.json()).toEqual({ error: 'invalid_request', error_description: 'the request body (70016 bytes) exceeds the 65536 bytes any endpoint of this server accepts' });
    // Chunked, so no Content-Length announces the size: refused once the count passes the limit.
    const chunk = `client_id=x&pad=${'a'.repeat(70_000)}`;
    const chunked = await rawRequest(
      `POST /wallet/nonce HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
    );
    expect(chunked).toMatch(/^HTTP\/1\.1 413 /);
    expect(chunked).toContain('"error":"invalid_request"');
    // A body cut short by a client that goes away: nobody to answer, and nothing for the operator to look at. The
    // request's own log line is written after any error line of it, so once it is there the error lines are complete.
    const mark = as.server.output().length;
    await rawRequest(`POST /wallet/nonce HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nX-Request-Id: cut-short-body\r\n\r\nabc`, { closeAfterWrite: true });
    const deadline = Date.now() + 5000;
    while (!as.server.output().slice(mark).includes('cut-short-body') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const cut = logLines(as.server.output().slice(mark)).filter((l) => JSON.stringify(l).includes('cut-short-body'));
    expect(cut.length).toBeGreaterThan(0);
    expect(cut.filter((l) => l.level === 'error')).toEqual([]);
    expect(errorLines().slice(before)).toEqual([]);
    // Bodies a page on another origin can make a browser send without a preflight are not read as a form.
    for (const [type, body] of [['text/plain', `client_id=${agentClient.clientMetadata().client_id}`], ['multipart/form-data; boundary=x', `--x\r\nContent-Disposition: form-data; name="client_id"\r\n\r\n${agentClient.clientMetadata().client_id}\r\n--x--\r\n`]] as const) {
      const res = await post(type, body);
      expect(res.status).toBe(415);
      expect(await res.json()).toEqual({ error: 'invalid_request', error_description: `send client_id in an application/x-www-form-urlencoded or application/json body (got '${type}')` });
    }
    // No body at all is not a body of the wrong type: the answer says what is missing.
    const bare = await fetch(`${issuer}/wallet/nonce`, { method: 'POST' });
    expect(bare.status).toBe(400);
    expect(((await bare.json()) as { error_description: string }).error_description).toMatch(/^missing required parameter 'client_id'/);
    // A parameter given twice (RFC 6749 §3.1), even with the same value, is refused rather than one of them picked.
    const id = agentClient.clientMetadata().client_id;
    for (const body of [`client_id=${id}&client_id=${id}`, `client_id=someone-else&client_id=${id}`]) {
      const twice = await post('application/x-www-form-urlencoded', body);
      expect(twice.status).toBe(400);
      expect(await twice.json()).toEqual({ error: 'invalid_request', error_description: "parameter 'client_id' must not be provided twice" });
    }
    // The same in JSON (RFC 7493 §2.3): a member named twice, however spelled, is refused, not one of them picked.
    for (const body of [`{"client_id":"someone-else","client_id":"${id}"}`, `{"client_id":"someone-else","client\\u005fid":"${id}"}`]) {
      const twice = await post('application/json', body);
      expect({ body, status: twice.status }).toEqual({ body, status: 400 });
      expect(await twice.json()).toEqual({ error: 'invalid_request', error_description: "the request body names 'client_id' twice in one object" });
    }
    // Nesting deep enough to overflow a recursive parser (10 KB of brackets) is refused, not a 500; 16 levels are read.
    for (const body of ['['.repeat(5000) + ']'.repeat(5000), `{"client_id":${'{"a":'.repeat(3000)}1${'}'.repeat(3000)}}`, `{"client_id":"x","a":${'['.repeat(17)}${']'.repeat(17)}}`]) {
      const deep = await post('application/json', body);
      expect(deep.status).toBe(400);
      expect(await deep.json()).toEqual({ error: 'invalid_request', error_description: 'the request body nests deeper than 16 levels' });
    }
    const sixteen = await post('application/json', `{"client_id":"${id}","a":${'['.repeat(15)}${']'.repeat(15)}}`);
    expect(sixteen.status).toBe(200);
    // Bytes that are not UTF-8 are refused rather than read with replacement characters.
    const notUtf8 = await fetch(`${issuer}/wallet/nonce`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.concat([Buffer.from('{"client_id":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]) });
    expect(notUtf8.status).toBe(400);
    expect(await notUtf8.json()).toEqual({ error: 'invalid_request', error_description: 'the request body is not valid UTF-8' });
    // In a form, percent-escapes that decode to such bytes too (URLSearchParams read them as U+FFFD).
    for (const type of ['application/x-www-form-urlencoded', 'Application/X-WWW-Form-Urlencoded; charset=utf-8']) {
      const escaped = await post(type, `client_id=${id}%FF`);
      expect(escaped.status).toBe(400);
      expect(await escaped.json()).toEqual({ error: 'invalid_request', error_description: 'the request body is not valid UTF-8: a value decodes to U+FFFD, which replaces bytes that are not UTF-8 (send UTF-8, percent-encoding the bytes of each character: U+00E9 is %C3%A9)' });
    }
    // And the endpoint still serves a well-formed request, as a form and as JSON.
    expect((await post('application/x-www-form-urlencoded', `client_id=${agentClient.clientMetadata().client_id}`)).status).toBe(200);
    const ok = await post('application/json', JSON.stringify({ client_id: agentClient.clientMetadata().client_id }));
    expect(ok.status).toBe(200);
  });

  test('a login post nested deep enough to overflow a recursive parser is 400, not a 500, and the page still signs in', async () => {
    const before = errorLines().length;
    const { agent, data } = await loginPage();
    const res = await agent.fetch(new URL(data.loginUrl, issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: '['.repeat(5000) + ']'.repeat(5000),
    });
    expect({ status: res.status, body: await res.json() }).toEqual({ status: 400, body: { error: 'invalid_request', error_description: 'the request body nests deeper than 16 levels' } });
    expect(errorLines().slice(before)).toEqual([]);
    const ok = await postLogin(agent, data, pageMessage(data, await pageNonce(agent, data)));
    expect(ok.status).toBe(200);
  });

  test('an oversized message is refused as message-format before it is parsed, and the nonce stays usable', async () => {
    const { agent, data } = await loginPage();
    const nonce = await pageNonce(agent, data);
    const valid = pageMessage(data, nonce);
    const huge = valid.replace(`Request ID: ${data.uid}`, `Request ID: ${data.uid}${'a'.repeat(33_000)}`);
    expect(huge.length).toBeGreaterThan(32 * 1024);
    await expect(postLogin(agent, data, huge, '0x00')).resolves.toEqual({
      status: 400,
      body: {
        // Not an EIP-4361 message: a malformed parameter (RFC 6749 §5.2), not a refused sign-in.
        error: 'invalid_request',
        rule: 'message-format',
        error_description: `message-format: the message is ${huge.length} characters long; at most ${MAX_MESSAGE_LENGTH} are accepted`,
      },
    });
    // The same refusal at the grant, as invalid_request.
    await expect(oidc.genericGrantRequest(agentClient, GRANT, { message: huge, signature: '0x00', resource: RESOURCE, scope: 'read' })).rejects.toMatchObject({
      error: 'invalid_request',
      error_description: expect.stringMatching(/^message-format: the message is \d+ characters long; at most 4096 are accepted$/),
    });
    const ok = await postLogin(agent, data, valid);
    expect(ok.status).toBe(200);
    expect(ok.body.redirect_to).toEqual(expect.any(String));
  });

  test('a malformed message (CRLF line ends) is refused as message-format with what to fix, and the nonce stays usable', async () => {
    const { agent, data } = await loginPage();
    const valid = pageMessage(data, await pageNonce(agent, data));
    const crlf = valid.replaceAll('\n', '\r\n');
    await expect(postLogin(agent, data, crlf)).resolves.toEqual({
      status: 400,
      body: {
        error: 'invalid_request',
        rule: 'message-format',
        error_description: 'message-format: the message may contain only printable ASCII characters and LF line ends (no CR, tabs or non-ASCII text)',
      },
    });
    expect((await postLogin(agent, data, valid)).status).toBe(200);
  });

  test('exhausted attempts: after 5 attempts on one login page the sixth is refused (rule attempts), even with a valid message', async () => {
    const { agent, data } = await loginPage();
    const nonce = await pageNonce(agent, data);
    const wrongSigner = new Wallet(Wallet.createRandom().privateKey);
    for (let i = 0; i < 5; i += 1) {
      // Each failure burns its nonce; a careless page retries with fresh ones, all from this page.
      const message = pageMessage(data, await pageNonce(agent, data));
      const refused = await postLogin(agent, data, message, await wrongSigner.signMessage(message));
      expect(refused).toMatchObject({ status: 400, body: { rule: 'signature' } });
    }
    await expect(postLogin(agent, data, pageMessage(data, nonce))).resolves.toEqual({
      status: 400,
      body: {
        error: 'access_denied',
        rule: 'attempts',
        error_description: 'attempts: this sign-in request has had 5 sign-in attempts and accepts no more; go back to the application and start again',
      },
    });
    // The page stays refused; nothing was signed in.
    expect((await postLogin(agent, data, pageMessage(data, nonce))).body.rule).toBe('attempts');
  });

  describe('a signature that is not 0x-prefixed hex bytes is a malformed request, not a refused sign-in', () => {
    const FORM = "the signature must be 0x-prefixed hex bytes (65 bytes for an account key's EIP-191 signature, at most 16384 for a contract wallet's EIP-1271 signature); ";
    const malformed: Array<[string, string, string]> = [
      ['not hex at all', 'zz', 'it does not start with 0x'],
      ['65 bytes of hex without 0x', 'ab'.repeat(65), 'it does not start with 0x'],
      ['0x alone', '0x', 'it has no hex digits after 0x'],
      ['a character that is not a hex digit', `0x${'ab'.repeat(64)}zz`, 'it holds a character that is not a hex digit (0-9, a-f, A-F) after 0x'],
      ['an odd number of hex digits', '0xabc', 'it has an odd number of hex digits (3); each byte is two'],
      ['over 16 KiB', `0x${'ab'.repeat(16 * 1024 + 1)}`, 'it is 16385 bytes long'],
    ];
    const failedSignIns = (mark: number) => logLines(as.server.output().slice(mark)).filter((l) => l.event === 'login.failed');

    test('at the grant: 400 invalid_request saying what is wrong (it was invalid_grant), the nonce unused and no failed sign-in logged', async () => {
      const agentId = agentClient.clientMetadata().client_id;
      const signed = await signedSiwe(issuer, wallet, { address: wallet.address, nonce: await fetchNonce(issuer, agentId) });
      const mark = as.server.output().length;
      for (const [label, signature, why] of malformed) {
        const res = await fetch(`${issuer}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: GRANT, client_id: agentId, message: signed.message, signature, resource: RESOURCE, scope: 'read' }),
        });
        expect({ label, status: res.status, body: await res.json() }).toEqual({ label, status: 400, body: { error: 'invalid_request', error_description: `${FORM}${why}` } });
      }
      expect(failedSignIns(mark)).toEqual([]);
      // More refusals than a nonce has attempts, and the message signs in with its real signature.
      await expect(oidc.genericGrantRequest(agentClient, GRANT, { ...signed, resource: RESOURCE, scope: 'read' })).resolves.toMatchObject({ scope: 'read' });
    });

    test('at the grant, a well-formed signature that does not verify stays invalid_grant', async () => {
      const agentId = agentClient.clientMetadata().client_id;
      const other = new Wallet(Wallet.createRandom().privateKey);
      for (const signature of ['0x00', async (message: string) => other.signMessage(message)]) {
        const signed = await signedSiwe(issuer, wallet, { address: wallet.address, nonce: await fetchNonce(issuer, agentId) });
        const sent = typeof signature === 'string' ? signature : await signature(signed.message);
        await expect(oidc.genericGrantRequest(agentClient, GRANT, { message: signed.message, signature: sent, resource: RESOURCE, scope: 'read' })).rejects.toMatchObject({
          error: 'invalid_grant',
          error_description: expect.stringMatching(/^signature: the signature (was not made by|does not belong to) /),
        });
      }
      // The holder's own signature in its high-s form (s > n/2, as some KMS signers give it): it said "was not made by
      // <address>'s key", which is false; it says what is wrong and how to normalise it.
      const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
      const signed = await signedSiwe(issuer, wallet, { address: wallet.address, nonce: await fetchNonce(issuer, agentId) });
      const low = signed.signature;
      const highS = `${low.slice(0, 66)}${(N - BigInt(`0x${low.slice(66, 130)}`)).toString(16).padStart(64, '0')}${low.slice(130) === '1b' ? '1c' : '1b'}`;
      await expect(oidc.genericGrantRequest(agentClient, GRANT, { message: signed.message, signature: highS, resource: RESOURCE, scope: 'read' })).rejects.toMatchObject({
        error: 'invalid_grant',
        error_description: "signature: the signature's s is in the upper half of the secp256k1 curve order (s > n/2), which the low-s rule (EIP-2) refuses as malleable; normalise it (s = n - s, and flip v between 27 and 28) and send it again",
      });
    });

    test('on the login page: 400 invalid_request saying what is wrong (it was access_denied), using none of the page\'s attempts and not the nonce', async () => {
      const { agent, data } = await loginPage();
      const message = pageMessage(data, await pageNonce(agent, data));
      const mark = as.server.output().length;
      // More malformed posts (6) than the page has attempts (5).
      for (const [label, signature, why] of malformed) {
        const refused = await postLogin(agent, data, message, signature);
        expect({ label, ...refused }).toEqual({ label, status: 400, body: { error: 'invalid_request', error_description: `${FORM}${why}` } });
      }
      expect(failedSignIns(mark)).toEqual([]);
      // A well-formed signature by another key is still a refused sign-in (rule signature), and uses an attempt...
      const other = new Wallet(Wallet.createRandom().privateKey);
      const wrong = pageMessage(data, await pageNonce(agent, data));
      await expect(postLogin(agent, data, wrong, await other.signMessage(wrong))).resolves.toMatchObject({ status: 400, body: { error: 'access_denied', rule: 'signature' } });
      // ...and the first message, its nonce unused, signs in.
      const ok = await postLogin(agent, data, message);
      expect(ok.status).toBe(200);
      expect(ok.body.redirect_to).toEqual(expect.any(String));
    });
  });

  test('cross-bound nonces: a grant nonce on the login page and a login-page nonce at the grant are refused as nonce-binding', async () => {
    const { agent, data } = await loginPage();
    const agentId = agentClient.clientMetadata().client_id;
    const grantNonce = await fetchNonce(issuer, agentId);
    await expect(postLogin(agent, data, pageMessage(data, grantNonce))).resolves.toEqual({
      status: 400,
      body: {
        error: 'access_denied',
        rule: 'nonce-binding',
        error_description: `nonce-binding: nonce ${grantNonce} was issued for another client, not for this sign-in request; a nonce is redeemed only where it was requested`,
      },
    });
    const loginNonce = await pageNonce(agent, data);
    const signed = await signedSiwe(issuer, wallet, { address: wallet.address, nonce: loginNonce });
    await expect(oidc.genericGrantRequest(agentClient, GRANT, { ...signed, resource: RESOURCE, scope: 'read' })).rejects.toMatchObject({
      error: 'invalid_grant',
      error_description: `nonce-binding: nonce ${loginNonce} was issued for another sign-in request, not for client ${agentId}; a nonce is redeemed only where it was requested`,
    });
    // Neither nonce was used up by the refusal: each still works where it was issued.
    expect((await postLogin(agent, data, pageMessage(data, loginNonce))).status).toBe(200);
    const tokens = await oidc.genericGrantRequest(agentClient, GRANT, { ...(await signedSiwe(issuer, wallet, { address: wallet.address, nonce: grantNonce })), resource: RESOURCE, scope: 'read' });
    expect(tokens.scope).toBe('read');
  });
});
