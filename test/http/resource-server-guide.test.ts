import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { calculateJwkThumbprint, decodeJwt, EmbeddedJWK, errors, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';
import * as oidc from 'openid-client';

import { basicAuth, baseConfig, clientCredentialsToken, insecure, introspect, OPAQUE_RESOURCE, opaqueToken, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { guideBlock, guideDir, toJavaScript, typeProblems } from '../support/guide.js';
import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * docs/resource-servers.md's example resource server (`protect.ts`, `introspect.ts` and `server.ts`, taken from the
 * guide as written), type-checked with the project's strict settings and run against a live agentauth, called by
 * openid-client as an agent would. A guide whose code no longer works with agentauth fails here: it did, for agents
 * whose DPoP key is Ed25519 (openid-client's `alg: "Ed25519"`), which the guide's algorithm list refused. The guide's
 * `introspectSigned` (RFC 9701) is tested the same way, in its own block below.
 */

const FILES = ['protect', 'introspect', 'server'] as const;
let dir: string;

let as: RunningServer;
let issuerMetadata: Record<string, unknown>;

beforeAll(async () => {
  dir = guideDir('resource-server-guide', Object.fromEntries(FILES.map((name) => [`${name}.ts`, guideBlock('resource-servers.md', `(\`${name}.ts\``)])));
  ({ server: as } = await startConfigured(baseConfig()));
  issuerMetadata = (await (await fetch(`${as.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
});

afterAll(async () => {
  await as?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('the guide\'s code type-checks under the project\'s strict settings', () => {
  expect(typeProblems(FILES.map((name) => join(dir, `${name}.ts`)))).toEqual([]);
});

describe.each([
  ['verifying JWTs locally', '0'],
  ['introspecting', '1'],
])('the guide\'s resource server, %s', (_mode, introspect) => {
  let rs: ChildProcess;
  let rsUrl: string;
  let output = '';

  beforeAll(async () => {
    const jsDir = join(dir, `js-${introspect}`);
    mkdirSync(jsDir, { recursive: true });
    for (const name of FILES) writeFileSync(join(jsDir, `${name}.js`), toJavaScript(readFileSync(join(dir, `${name}.ts`), 'utf8')));
    const port = await freePort();
    rsUrl = `http://127.0.0.1:${port}`;
    rs = spawn(process.execPath, [join(jsDir, 'server.js')], {
      env: {
        PATH: process.env.PATH, PORT: String(port), ISSUER: as.url, RESOURCE, PUBLIC_ORIGIN: rsUrl, INTROSPECT: introspect,
        RS_CLIENT_ID: RS_CLIENT.id, RS_CLIENT_SECRET: RS_CLIENT.secret,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    rs.stdout!.on('data', (d: Buffer) => (output += d));
    rs.stderr!.on('data', (d: Buffer) => (output += d));
    const deadline = Date.now() + 15_000;
    for (;;) {
      const up = await fetch(`${rsUrl}/.well-known/oauth-protected-resource`).then((r) => r.ok, () => false);
      if (up) break;
      if (rs.exitCode !== null || Date.now() > deadline) throw new Error(`the guide's server did not start: ${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(() => {
    rs?.kill();
  });

  /**
   * openid-client as an agent configures it, with a DPoP key of `alg` (none: a bearer token). `proofs` holds every DPoP
   * header it sent to the resource server.
   */
  async function agent(alg?: 'ES256' | 'EdDSA') {
    const server = (await oidc.discovery(new URL(as.url), RS_CLIENT.id, undefined, oidc.ClientSecretBasic(RS_CLIENT.secret), insecure)).serverMetadata();
    const config = new oidc.Configuration(server, RS_CLIENT.id, RS_CLIENT.secret, oidc.ClientSecretBasic(RS_CLIENT.secret));
    oidc.allowInsecureRequests(config);
    const proofs: string[] = [];
    config[oidc.customFetch] = (url, options) => {
      const proof = new Headers(options.headers).get('dpop');
      if (proof && url.startsWith(rsUrl)) proofs.push(proof);
      return fetch(url, options);
    };
    const dpop = alg ? oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair(alg)) : undefined;
    const tokens = await oidc.clientCredentialsGrant(config, { resource: RESOURCE, scope: 'read' }, dpop ? { DPoP: dpop } : undefined);
    const call = () => oidc.fetchProtectedResource(config, tokens.access_token, new URL(`${rsUrl}/data`), 'GET', undefined, undefined, dpop ? { DPoP: dpop } : undefined);
    return { config, tokens, call, proofs };
  }

  test('its metadata advertises the DPoP algorithms agentauth itself accepts', async () => {
    const metadata = (await (await fetch(`${rsUrl}/.well-known/oauth-protected-resource`)).json()) as Record<string, unknown>;
    expect(metadata).toMatchObject({ resource: RESOURCE, authorization_servers: [as.url] });
    expect(metadata.dpop_signing_alg_values_supported).toEqual(issuerMetadata.dpop_signing_alg_values_supported);
  });

  test.each(['ES256', 'EdDSA'] as const)('a DPoP-bound token from an agent with an %s key (openid-client) is accepted', async (alg) => {
    const { tokens, call } = await agent(alg);
    expect(tokens.token_type).toBe('dpop');
    const res = await call();
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ sub: RS_CLIENT.id, client_id: RS_CLIENT.id });
  });

  test('a bearer token is accepted with the Bearer scheme', async () => {
    const { tokens, call } = await agent();
    expect(tokens.token_type).toBe('bearer');
    expect((await call()).status).toBe(200);
  });

  test('a DPoP-bound token sent as a bearer token, and a replayed proof, are refused with 401', async () => {
    const { tokens, call, proofs } = await agent('ES256');
    const asBearer = await fetch(`${rsUrl}/data`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(asBearer.status).toBe(401);
    expect(asBearer.headers.get('www-authenticate')).toMatch(/Bearer [^,]*, error="invalid_token"/);

    expect((await call()).status).toBe(200);
    expect(proofs).toHaveLength(1);
    const replayed = await fetch(`${rsUrl}/data`, { headers: { authorization: `DPoP ${tokens.access_token}`, dpop: proofs[0]! } });
    expect(replayed.status).toBe(401);
    expect(replayed.headers.get('www-authenticate')).toMatch(/error="invalid_dpop_proof", error_description="DPoP proof replayed"/);
  });

  test(introspect === '1' ? 'a revoked token is refused at once' : 'a revoked token is still accepted until it expires, as the guide says of local verification', async () => {
    const { config, tokens, call } = await agent('ES256');
    expect((await call()).status).toBe(200);
    await oidc.tokenRevocation(config, tokens.access_token);
    if (introspect === '0') {
      expect((await call()).status).toBe(200);
      return;
    }
    const refused = await call().then(() => undefined, (err: unknown) => err);
    expect(refused).toBeInstanceOf(oidc.WWWAuthenticateChallengeError);
    const challenge = refused as oidc.WWWAuthenticateChallengeError;
    expect(challenge.status).toBe(401);
    expect(challenge.cause.find((c) => c.scheme === 'dpop')?.parameters).toMatchObject({ error: 'invalid_token', error_description: 'token is not active' });
  });

  test('no credentials, or credentials of another scheme: 401 with a challenge per scheme, each naming the metadata, no error code', async () => {
    for (const headers of [{}, { authorization: 'Basic eDp5' }, { authorization: 'Token abc' }] as Array<Record<string, string>>) {
      const res = await fetch(`${rsUrl}/data`, { headers });
      expect({ headers, status: res.status }).toEqual({ headers, status: 401 });
      const challenges = res.headers.get('www-authenticate') ?? '';
      expect(challenges).toContain(`DPoP resource_metadata="${rsUrl}/.well-known/oauth-protected-resource"`);
      expect(challenges).toContain(`Bearer resource_metadata="${rsUrl}/.well-known/oauth-protected-resource"`);
      expect(challenges).not.toContain('error=');
      // The MCP SDK finds the metadata and the scope in it (it reads the first challenge, and only a Bearer one).
      expect(extractWWWAuthenticateParams(res)).toEqual({ resourceMetadataUrl: new URL(`${rsUrl}/.well-known/oauth-protected-resource`), scope: expect.any(String), error: undefined });
    }
  });
});

/**
 * RFC 9449 §11.1, as the guide says: "Keep a replay cache for as long as a proof is accepted". The guide's
 * `authenticate`, loaded as written, is given a proof dated the clock skew ahead (the latest it accepts); its replay
 * cache must keep the jti until jose stops accepting that proof. It used to forget it up to a second before (70 s
 * after the first use, where jose, comparing whole seconds, took the proof until the 71st).
 */
test('the guide\'s replay cache keeps a proof\'s jti for as long as the guide accepts the proof', async () => {
  const block = guideBlock('resource-servers.md', '(`protect.ts`');
  const setting = (name: string) => Number(new RegExp(`const ${name} = (\\d+);`).exec(block)?.[1]);
  const [maxAge, skew] = [setting('PROOF_MAX_AGE'), setting('CLOCK_SKEW')];
  expect([maxAge, skew]).toEqual([expect.any(Number), expect.any(Number)]);
  const jsFile = join(dir, 'protect-replay.js');
  writeFileSync(jsFile, toJavaScript(block));
  type Guide = {
    authenticate(req: { method: string; url: string; authorization: string; dpop: string[] }, replay: { addOnce(key: string, ttl: number): Promise<boolean> }, check: (t: string) => Promise<object>): Promise<unknown>;
  };
  const { authenticate } = (await import(pathToFileURL(jsFile).href)) as Guide;
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  const jwk = await exportJWK(publicKey);
  const token = 'an-access-token';
  // Sent just after a second begins, when the gap was widest.
  while (Date.now() % 1000 > 50) await new Promise((r) => setTimeout(r, 5));
  const firstUse = Date.now();
  const iat = Math.floor(firstUse / 1000) + skew;
  const proof = await new SignJWT({ htm: 'GET', htu: 'https://api.example.com/data', iat, jti: 'one', ath: createHash('sha256').update(token).digest('base64url') })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
    .sign(privateKey);
  const remembered: number[] = [];
  const replay = { addOnce: async (_key: string, ttl: number) => (remembered.push(ttl), true) };
  await authenticate({ method: 'GET', url: 'https://api.example.com/data', authorization: `DPoP ${token}`, dpop: [proof] }, replay, async () => ({ cnf: { jkt: await calculateJwkThumbprint(jwk) } }));
  expect(remembered).toHaveLength(1);
  // The last instant jose accepts the proof: while floor(now) - iat - skew <= maxAge.
  const acceptedUntil = (iat + maxAge + skew + 1) * 1000;
  const accepted = (at: number) => jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', maxTokenAge: maxAge, clockTolerance: skew, currentDate: new Date(at) }).then(() => true, () => false);
  expect([await accepted(acceptedUntil - 1), await accepted(acceptedUntil)]).toEqual([true, false]);
  expect(firstUse + remembered[0]! * 1000).toBeGreaterThanOrEqual(acceptedUntil);
});

/**
 * The guide's protect.ts and introspect.ts, loaded as written for the opaque resource server of this agentauth
 * (ISSUER, RESOURCE and the resource server's client read at import).
 */
describe('the guide\'s checks, for the opaque resource server', () => {
  type Guide = {
    authenticate(req: { method: string; url: string; authorization: string; dpop: string[] }, replay: { addOnce(key: string, ttl: number): Promise<boolean> }, check: (t: string) => Promise<object>): Promise<unknown>;
    verifyLocally(token: string): Promise<Record<string, unknown>>;
  };
  let guide: Guide;
  let introspectGuide: (token: string) => Promise<Record<string, unknown>>;

  beforeAll(async () => {
    const jsDir = join(dir, 'js-opaque');
    mkdirSync(jsDir, { recursive: true });
    for (const name of ['protect', 'introspect']) writeFileSync(join(jsDir, `${name}.js`), toJavaScript(readFileSync(join(dir, `${name}.ts`), 'utf8')));
    const settings = { ISSUER: as.url, RESOURCE: OPAQUE_RESOURCE, RS_CLIENT_ID: RS_CLIENT.id, RS_CLIENT_SECRET: RS_CLIENT.secret };
    const saved = Object.fromEntries(Object.keys(settings).map((name) => [name, process.env[name]]));
    Object.assign(process.env, settings);
    try {
      guide = (await import(pathToFileURL(join(jsDir, 'protect.js')).href)) as Guide;
      ({ introspect: introspectGuide } = (await import(pathToFileURL(join(jsDir, 'introspect.js')).href)) as { introspect: typeof introspectGuide });
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  test('a refused claim is named in the message, with jose\'s reason', async () => {
    // A JWT access token agentauth issued for another resource server.
    const { body } = await clientCredentialsToken(as.url, RS_CLIENT.id, RS_CLIENT.secret);
    await expect(guide.verifyLocally(body.access_token as string)).rejects.toMatchObject({ error: 'invalid_token', message: 'access token rejected (ERR_JWT_CLAIM_VALIDATION_FAILED: claim aud check_failed)' });

    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const token = 'an-access-token';
    const ath = createHash('sha256').update(token).digest('base64url');
    const now = Math.floor(Date.now() / 1000);
    const call = async (claims: Record<string, unknown>) => {
      const proof = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(privateKey);
      const replay = { addOnce: async () => true };
      return guide.authenticate({ method: 'GET', url: 'https://api.example.com/data', authorization: `DPoP ${token}`, dpop: [proof] }, replay, async () => ({ cnf: { jkt: await calculateJwkThumbprint(jwk) } }))
        .then(() => undefined, (err: unknown) => err as { error: string; message: string });
    };
    const proof = { htm: 'GET', htu: 'https://api.example.com/data', iat: now, jti: 'one', ath };
    expect(await call({ ...proof, ath: undefined })).toMatchObject({ error: 'invalid_dpop_proof', message: 'DPoP proof rejected (ERR_JWT_CLAIM_VALIDATION_FAILED: claim ath missing)' });
    expect(await call({ ...proof, iat: now - 3600 })).toMatchObject({ error: 'invalid_dpop_proof', message: 'DPoP proof rejected (ERR_JWT_EXPIRED: claim iat check_failed)' });
    expect(await call(proof)).toBeUndefined();
  });

  test('introspecting an opaque client credentials token: accepted, without sub; the machine is client_id', async () => {
    const claims = await introspectGuide(await opaqueToken(as.url));
    expect(claims).toMatchObject({ active: true, client_id: RS_CLIENT.id, aud: OPAQUE_RESOURCE, token_type: 'Bearer' });
    expect(claims).not.toHaveProperty('sub');
  });
});

/**
 * The guide's `introspectSigned` ("### Signed introspection responses (RFC 9701)"), type-checked as written, then
 * loaded into this process as JavaScript, unchanged, and called against the live agentauth. It reads the settings
 * introspect.ts reads (ISSUER, RS_CLIENT_ID, RS_CLIENT_SECRET): this agentauth and the resource-server client that
 * baseConfig() registers.
 */
describe('the guide\'s signed introspection (introspectSigned)', () => {
  const SETTINGS = ['ISSUER', 'RS_CLIENT_ID', 'RS_CLIENT_SECRET'] as const;
  const saved = Object.fromEntries(SETTINGS.map((k) => [k, process.env[k]]));
  let file: string;
  let introspectSigned: (token: string) => Promise<Record<string, unknown>>;

  beforeAll(async () => {
    const source = guideBlock('resource-servers.md', '### Signed introspection responses (RFC 9701)');
    file = join(dir, 'introspect-signed.ts');
    writeFileSync(file, source);
    const jsFile = join(dir, 'introspect-signed.js');
    writeFileSync(jsFile, toJavaScript(source));
    // The module reads its settings once, when it is loaded.
    Object.assign(process.env, { ISSUER: as.url, RS_CLIENT_ID: RS_CLIENT.id, RS_CLIENT_SECRET: RS_CLIENT.secret });
    ({ introspectSigned } = (await import(pathToFileURL(jsFile).href)) as { introspectSigned: typeof introspectSigned });
  });

  afterAll(() => {
    for (const k of SETTINGS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });

  /** A fresh client_credentials access token for RESOURCE (scope read), the resource-server client's own. */
  async function accessToken(): Promise<string> {
    const { status, body } = await clientCredentialsToken(as.url, RS_CLIENT.id, RS_CLIENT.secret);
    expect(status).toBe(200);
    return String(body.access_token);
  }

  test('it type-checks under the project\'s strict settings', () => {
    expect(typeProblems([file])).toEqual([]);
  });

  test('a live access token: the verified answer is active, with the token\'s client_id and aud, the same as the JSON answer', async () => {
    const token = await accessToken();
    const claims = decodeJwt(token);
    const answer = await introspectSigned(token);
    expect(answer).toMatchObject({ active: true, client_id: claims.client_id, aud: claims.aud });
    expect(claims).toMatchObject({ client_id: RS_CLIENT.id, aud: RESOURCE });
    expect(answer).toEqual(await introspect(as.url, token));
  });

  test('a revoked token: the verified answer is active: false', async () => {
    const token = await accessToken();
    expect((await introspectSigned(token)).active).toBe(true);
    const revoked = await fetch(`${as.url}/token/revocation`, {
      method: 'POST',
      headers: { authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    expect(revoked.status).toBe(200);
    expect(await introspectSigned(token)).toEqual({ active: false });
  });

  test('an answer whose signature was altered on the way is refused by the guide\'s jwtVerify', async () => {
    // The guide's function calls the global fetch, so the test stands in for an intermediary there: agentauth's real
    // signed answer for a live token, with one character of its signature changed (the first one: the last may carry
    // only padding bits, which would leave the signature's bytes as they were). The JWKS is fetched untouched.
    const token = await accessToken();
    const realFetch = globalThis.fetch;
    const tampered: string[] = [];
    globalThis.fetch = async (input, init) => {
      const res = await realFetch(input, init);
      const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
      if (url !== `${as.url}/token/introspection`) return res;
      const [header, payload, signature] = (await res.text()).split('.');
      const altered = `${signature![0] === 'A' ? 'B' : 'A'}${signature!.slice(1)}`;
      tampered.push(altered);
      return new Response(`${header}.${payload}.${altered}`, { status: res.status, headers: res.headers });
    };
    try {
      await expect(introspectSigned(token)).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
    } finally {
      globalThis.fetch = realFetch;
    }
    expect(tampered).toHaveLength(1);
    // The same call without the intermediary is accepted: only the altered signature was refused.
    expect((await introspectSigned(token)).active).toBe(true);
  });
});
