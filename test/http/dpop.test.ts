import { createHash, createPrivateKey, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { Wallet } from 'ethers';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { JWK } from 'jose';

type SigningKey = Parameters<SignJWT['sign']>[0];
import * as oidc from 'openid-client';

import { baseConfig, insecure, OPAQUE_RESOURCE, REDIRECT, RESOURCE, RS_CLIENT, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { startServer } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { authorizeWithWallet } from '../support/user-agent.js';
import { sentBack } from '../support/sent-back.js';

const wallet = new Wallet('0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a');
const now = () => Math.floor(Date.now() / 1000);
const b64 = (s: string) => Buffer.from(s).toString('base64url');

interface ProofOptions {
  htm?: string;
  htu: string;
  iat?: number;
  jti?: string;
  alg?: string;
  typ?: string;
  jwk?: JWK;
  ath?: string;
  nonce?: string;
}

async function keyPair() {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { privateKey: privateKey as SigningKey, jwk: await exportJWK(publicKey), privateJwk: await exportJWK(privateKey) };
}

async function proof(key: { privateKey: SigningKey; jwk: JWK }, o: ProofOptions): Promise<string> {
  return new SignJWT({ htm: o.htm ?? 'POST', htu: o.htu, iat: o.iat ?? now(), jti: o.jti ?? randomUUID(), ...(o.ath ? { ath: o.ath } : {}), ...(o.nonce ? { nonce: o.nonce } : {}) })
    .setProtectedHeader({ alg: o.alg ?? 'ES256', typ: o.typ ?? 'dpop+jwt', jwk: o.jwk ?? key.jwk })
    .sign(key.privateKey);
}

async function ccRequest(url: string, dpop: string | undefined, issuer = url, client = RS_CLIENT) {
  const res = await fetch(`${url}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${client.id}:${client.secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      ...(dpop ? { dpop } : {}),
      ...(issuer !== url ? { 'x-forwarded-proto': new URL(issuer).protocol.slice(0, -1), 'x-forwarded-host': new URL(issuer).host } : {}),
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, nonce: res.headers.get('dpop-nonce') };
}

/** A proof with exactly the given header and claims (none added), signed by `privateKey`. */
const rawProof = (privateKey: SigningKey, header: Record<string, unknown>, claims: Record<string, unknown>) =>
  new SignJWT(claims).setProtectedHeader(header as { alg: string }).sign(privateKey);

/** A client of the shipped `strict` tier: DPoP and server nonces required. */
const STRICT_CLIENT = { id: 'strict-agent', secret: 'strict-agent-secret-0123456789abcdefghijkl' };

describe('DPoP (RFC 9449) at the token and userinfo endpoints', () => {
  let as: AgentServer;
  let url: string;

  beforeAll(async () => {
    const config = baseConfig();
    config.clients = [
      ...(config.clients as unknown[]),
      { client_id: STRICT_CLIENT.id, client_secret: STRICT_CLIENT.secret, grant_types: ['client_credentials'], tier: 'strict' },
    ];
    as = await startAgentServer(config);
    url = as.server.url;
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  test('a valid proof binds the access token (cnf.jkt, token_type DPoP)', async () => {
    const key = await keyPair();
    const res = await ccRequest(url, await proof(key, { htu: `${url}/token` }));
    expect(res.status).toBe(200);
    expect(res.body.token_type).toBe('DPoP');
  });

  const bad: Array<[string, (k: Awaited<ReturnType<typeof keyPair>>, url: string) => Promise<string>]> = [
    ['wrong htm', (k, u) => proof(k, { htu: `${u}/token`, htm: 'GET' })],
    ['wrong htu', (k, u) => proof(k, { htu: `${u}/other` })],
    ['htu of another server', (k) => proof(k, { htu: 'https://evil.example.com/token' })],
    ['wrong typ', (k, u) => proof(k, { htu: `${u}/token`, typ: 'JWT' })],
    [
      'alg none',
      async (k, u) => `${b64(JSON.stringify({ alg: 'none', typ: 'dpop+jwt', jwk: k.jwk }))}.${b64(JSON.stringify({ htm: 'POST', htu: `${u}/token`, iat: now(), jti: randomUUID() }))}.`,
    ],
    [
      'HS256 (a symmetric key)',
      async (k, u) =>
        new SignJWT({ htm: 'POST', htu: `${u}/token`, iat: now(), jti: randomUUID() })
          .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: b64('0123456789abcdef0123456789abcdef') } as JWK })
          .sign(new TextEncoder().encode('0123456789abcdef0123456789abcdef')),
    ],
    ['a private key in the jwk header', (k, u) => proof(k, { htu: `${u}/token`, jwk: k.privateJwk })],
    ['signed by a key other than the one in the header', async (k, u) => proof({ privateKey: (await keyPair()).privateKey, jwk: k.jwk }, { htu: `${u}/token` })],
    ['a malformed proof', async () => 'not.a.jwt'],
    // A key WebCrypto cannot import (jose's EmbeddedJWK): a point off the curve, a member missing, another curve.
    ['a jwk whose point is off the curve', (k, u) => proof(k, { htu: `${u}/token`, jwk: { ...k.jwk, y: k.jwk.x } })],
    ['a jwk without its y', (k, u) => proof(k, { htu: `${u}/token`, jwk: { kty: 'EC', crv: 'P-256', x: k.jwk.x } as JWK })],
    ['a P-384 jwk under ES256', async (k, u) => proof(k, { htu: `${u}/token`, jwk: (await exportJWK((await generateKeyPair('ES384', { extractable: true })).publicKey)) })],
  ];

  test.each(bad)('%s is refused with invalid_dpop_proof, saying which check failed', async (label, make) => {
    const res = await ccRequest(url, await make(await keyPair(), url));
    expect(res.status).toBe(400);
    expect(res.body.error).toBe('invalid_dpop_proof');
    // Never the bare "invalid DPoP key binding": the check that failed is named.
    expect({ label, description: res.body.error_description }).toEqual({ label, description: SAYS[label]!.replace('<url>', url) });
  });
  const SAYS: Record<string, string> = {
    'wrong htm': 'DPoP proof htm mismatch',
    // These said only "DPoP proof htu mismatch", and the alg refusals not which algorithms are accepted.
    'wrong htu': `DPoP proof htu mismatch: the proof's htu must be <url>/token (RFC 9449 section 4.3)`,
    'htu of another server': `DPoP proof htu mismatch: the proof's htu must be <url>/token (RFC 9449 section 4.3)`,
    'wrong typ': "invalid DPoP proof: unexpected 'typ' JWT header value",
    'alg none': "invalid DPoP proof: 'alg' (Algorithm) Header Parameter value not allowed (none): sign the proof with one of ES256, EdDSA, Ed25519 (dpop_signing_alg_values_supported, RFC 9449 section 5.1)",
    'HS256 (a symmetric key)': "invalid DPoP proof: 'alg' (Algorithm) Header Parameter value not allowed (HS256): sign the proof with one of ES256, EdDSA, Ed25519 (dpop_signing_alg_values_supported, RFC 9449 section 5.1)",
    'a private key in the jwk header': "invalid DPoP proof: 'jwk' (JSON Web Key) Header Parameter must be a public key",
    'signed by a key other than the one in the header': 'invalid DPoP proof: signature verification failed',
    'a malformed proof': 'invalid DPoP proof: JWS Protected Header is invalid',
    // These were the bare "invalid DPoP key binding".
    'a jwk whose point is off the curve': "invalid DPoP proof: the 'jwk' header is not a public key usable with the proof's alg (ES256)",
    'a jwk without its y': "invalid DPoP proof: the 'jwk' header is not a public key usable with the proof's alg (ES256)",
    'a P-384 jwk under ES256': "invalid DPoP proof: the 'jwk' header is not a public key usable with the proof's alg (ES256)",
  };

  /** A client_credentials request with exactly these DPoP header fields (fetch drops an empty one and joins repeats). */
  const withDpopFields = (fields: string[]) =>
    new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
      const body = new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }).toString();
      const req = httpRequest(`${url}/token`, {
        method: 'POST',
        headers: [
          'host', new URL(url).host,
          'authorization', `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`,
          'content-type', 'application/x-www-form-urlencoded',
          'content-length', String(Buffer.byteLength(body)),
          ...fields.flatMap((f) => ['DPoP', f]),
        ],
      }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, unknown> }));
      });
      req.on('error', reject);
      req.end(body);
    });

  test('an empty DPoP header is refused with invalid_dpop_proof saying so, not read as no proof (which got a bearer token)', async () => {
    for (const empty of ['', ' ']) {
      const res = await withDpopFields([empty]);
      expect(res).toEqual({ status: 400, body: { error: 'invalid_dpop_proof', error_description: 'the DPoP header is empty: send one DPoP proof JWT, or no DPoP header (RFC 9449 section 4.3)' } });
    }
    // Without the header at all, this client still gets its bearer token.
    expect((await withDpopFields([])).status).toBe(200);
  });

  test('two DPoP header fields are refused with invalid_dpop_proof saying so, even when each holds a valid proof', async () => {
    const key = await keyPair();
    const res = await withDpopFields([await proof(key, { htu: `${url}/token` }), await proof(key, { htu: `${url}/token` })]);
    expect(res).toEqual({ status: 400, body: { error: 'invalid_dpop_proof', error_description: 'the request has 2 DPoP header fields: send one DPoP proof JWT (RFC 9449 section 4.3)' } });
    expect((await withDpopFields([await proof(key, { htu: `${url}/token` })])).body.token_type).toBe('DPoP');
  });

  test.each([
    ['stale iat (10 minutes old)', -600],
    ['future iat (10 minutes ahead)', 600],
  ])('%s is refused with use_dpop_nonce and a fresh DPoP-Nonce (RFC 9449 §8), and a nonce-bearing retry succeeds', async (_label, offset) => {
    const key = await keyPair();
    const res = await fetch(`${url}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        dpop: await proof(key, { htu: `${url}/token`, iat: now() + offset }),
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('use_dpop_nonce');
    const nonce = res.headers.get('dpop-nonce');
    expect(nonce).toMatch(/^[A-Za-z0-9_-]+$/);
    // The clock-skewed client retries with the server's nonce, as RFC 9449 §8 intends.
    expect((await ccRequest(url, await proof(key, { htu: `${url}/token`, iat: now() + offset, nonce: nonce! }))).status).toBe(200);
  });

  test('openid-client EdDSA keys (alg "Ed25519", RFC 9864) are accepted', async () => {
    const server = (await oidc.discovery(new URL(url), RS_CLIENT.id, undefined, oidc.ClientSecretBasic(RS_CLIENT.secret), insecure)).serverMetadata();
    const config = new oidc.Configuration(server, RS_CLIENT.id, RS_CLIENT.secret, oidc.ClientSecretBasic(RS_CLIENT.secret));
    oidc.allowInsecureRequests(config);
    const dpop = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('EdDSA'));
    const tokens = await oidc.clientCredentialsGrant(config, { resource: RESOURCE, scope: 'read' }, { DPoP: dpop });
    expect(tokens.token_type).toBe('dpop');
  });

  test('a replayed proof jti is refused, also when the replays race', async () => {
    const key = await keyPair();
    const p = await proof(key, { htu: `${url}/token` });
    expect((await ccRequest(url, p)).status).toBe(200);
    const again = await ccRequest(url, p);
    expect(again.status).toBe(400);
    expect(again.body).toMatchObject({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(/replay detected/) });

    const racing = await proof(key, { htu: `${url}/token` });
    const results = await Promise.all(Array.from({ length: 10 }, () => ccRequest(url, racing)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
  });

  describe('a proof key already seen: imported once, then served from the key cache, with every check still made', () => {
    // Each case first uses the key in a valid request (so the server has imported and cached it), then sends a bad
    // proof under that same key: the cache must never stand in for a check.
    let key: Awaited<ReturnType<typeof keyPair>>;
    beforeEach(async () => {
      key = await keyPair();
      expect((await ccRequest(url, await proof(key, { htu: `${url}/token` }))).status).toBe(200);
    });
    const claims = () => ({ htm: 'POST', htu: `${url}/token`, iat: now(), jti: randomUUID() });
    const refused = async (dpop: string, description: RegExp, error = 'invalid_dpop_proof') => {
      const res = await ccRequest(url, dpop);
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ error, error_description: expect.stringMatching(description) });
    };

    test('the same key keeps working for new proofs', async () => {
      for (let i = 0; i < 3; i += 1) expect((await ccRequest(url, await proof(key, { htu: `${url}/token` }))).status).toBe(200);
    });

    test('typ: a proof typed JWT is refused', async () => {
      await refused(await proof(key, { htu: `${url}/token`, typ: 'JWT' }), /^invalid DPoP proof: unexpected 'typ' JWT header value$/);
    });

    test('alg: an algorithm outside the allowed list is refused', async () => {
      const [, payload] = (await proof(key, { htu: `${url}/token` })).split('.');
      await refused(`${b64(JSON.stringify({ alg: 'ES512', typ: 'dpop+jwt', jwk: key.jwk }))}.${payload}.AAAA`, /^invalid DPoP proof: 'alg' \(Algorithm\) Header Parameter value not allowed \(ES512\): sign the proof with one of ES256, EdDSA, Ed25519 \(dpop_signing_alg_values_supported/);
    });

    test('the embedded key must be public: the same key sent with its private member is refused', async () => {
      await refused(await proof(key, { htu: `${url}/token`, jwk: key.privateJwk }), /^invalid DPoP proof: 'jwk' \(JSON Web Key\) Header Parameter must be a public key$/);
    });

    test('signature: a proof signed by another key under the seen key is refused', async () => {
      await refused(await rawProof((await keyPair()).privateKey, { alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk }, claims()), /^invalid DPoP proof: signature verification failed$/);
    });

    test('signature: a valid proof whose claims were changed after signing is refused', async () => {
      const [header, , signature] = (await proof(key, { htu: `${url}/token` })).split('.');
      await refused(`${header}.${b64(JSON.stringify(claims()))}.${signature}`, /^invalid DPoP proof: signature verification failed$/);
    });

    test('htm: a proof for GET is refused at POST /token', async () => {
      await refused(await proof(key, { htu: `${url}/token`, htm: 'GET' }), /htm mismatch/);
    });

    test('htu: a proof for another URL is refused', async () => {
      await refused(await proof(key, { htu: `${url}/token/introspection` }), /^DPoP proof htu mismatch: the proof's htu must be http:\/\/[^ ]+\/token \(RFC 9449 section 4\.3\)$/);
      // A query or fragment on the htu is ignored, as oidc-provider compares it: such a proof is accepted.
      expect((await ccRequest(url, await proof(key, { htu: `${url}/token?x=1#f` }))).status).toBe(200);
    });

    test('iat: a proof 10 minutes old is refused (use_dpop_nonce), and one without iat is invalid', async () => {
      const stale = await ccRequest(url, await proof(key, { htu: `${url}/token`, iat: now() - 600 }));
      expect(stale).toMatchObject({ status: 400, body: { error: 'use_dpop_nonce' } });
      expect(stale.nonce).toMatch(/^[A-Za-z0-9_-]+$/);
      const { iat: _iat, ...noIat } = claims();
      await refused(await rawProof(key.privateKey, { alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk }, noIat), /must have a iat number/);
    });

    test('jti: a proof without a jti is refused', async () => {
      const { jti: _jti, ...noJti } = claims();
      await refused(await rawProof(key.privateKey, { alg: 'ES256', typ: 'dpop+jwt', jwk: key.jwk }, noJti), /must have a jti string/);
    });

    test('nonce: a nonce the server did not issue is refused with use_dpop_nonce', async () => {
      await refused(await proof(key, { htu: `${url}/token`, nonce: 'not-a-server-nonce' }), /invalid nonce/, 'use_dpop_nonce');
    });

    test('nonce where the tier requires one: refused without, accepted with the server nonce, for the same key', async () => {
      const strict = await keyPair();
      const first = await ccRequest(url, await proof(strict, { htu: `${url}/token` }), url, STRICT_CLIENT);
      expect(first).toMatchObject({ status: 400, body: { error: 'use_dpop_nonce' } });
      expect(first.nonce).toMatch(/^[A-Za-z0-9_-]+$/);
      const ok = await ccRequest(url, await proof(strict, { htu: `${url}/token`, nonce: first.nonce! }), url, STRICT_CLIENT);
      expect(ok.status).toBe(200);
      // The key is now imported; a proof under it without a nonce is still refused.
      const again = await ccRequest(url, await proof(strict, { htu: `${url}/token` }), url, STRICT_CLIENT);
      expect(again).toMatchObject({ status: 400, body: { error: 'use_dpop_nonce', error_description: expect.stringMatching(/nonce is required/) } });
    });

    test('replay: a proof used once is refused the second time', async () => {
      const p = await proof(key, { htu: `${url}/token` });
      expect((await ccRequest(url, p)).status).toBe(200);
      await refused(p, /replay detected/);
    });
  });

  describe('with an authorization code grant', () => {
    let config: oidc.Configuration;

    beforeAll(async () => {
      config = await oidc.dynamicClientRegistration(
        new URL(url),
        { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'openid read' },
        oidc.None(),
        insecure,
      );
    });

    async function codeFlow(scope: string, resource?: string) {
      const keys = await oidc.randomDPoPKeyPair('ES256');
      const dpop = oidc.getDPoPHandle(config, keys);
      const verifier = oidc.randomPKCECodeVerifier();
      const params: Record<string, string> = { redirect_uri: REDIRECT, scope, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' };
      if (resource) params.resource = resource;
      const { callback } = await authorizeWithWallet(oidc.buildAuthorizationUrl(config, params), REDIRECT, { wallet });
      const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, resource ? { resource } : {}, { DPoP: dpop });
      return { tokens, dpop, keys };
    }

    test('a refresh with a proof from a different key is refused; the bound key still works', async () => {
      const { tokens, dpop } = await codeFlow('read', RESOURCE);
      const otherHandle = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
      await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: otherHandle })).rejects.toMatchObject({
        error: expect.stringMatching(/^invalid_(grant|dpop_proof)$/),
      });
      await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).resolves.toBeDefined();
    });

    test('a DPoP-bound refresh token sent without a proof, or with another key\'s, is told so (it said "failed jkt verification")', async () => {
      const { tokens } = await codeFlow('read', RESOURCE);
      const refresh = async (proof?: string) => {
        const res = await fetch(`${url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', ...(proof ? { dpop: proof } : {}) },
          body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, client_id: config.clientMetadata().client_id, resource: RESOURCE }),
        });
        return [res.status, ((await res.json()) as Record<string, unknown>).error_description];
      };
      expect(await refresh()).toEqual([400, 'the refresh token is bound to a DPoP key: send a DPoP proof made with that key (RFC 9449 section 5)']);
      expect(await refresh(await proof(await keyPair(), { htu: `${url}/token` }))).toEqual([400, 'the refresh token is bound to another DPoP key: send a DPoP proof made with the key it was issued to (RFC 9449 section 5)']);
    });

    test('dpop_jkt on the authorization request binds the code to that key: another key cannot redeem it', async () => {
      const bound = await oidc.randomDPoPKeyPair('ES256');
      const other = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
      const verifier = oidc.randomPKCECodeVerifier();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT,
        scope: 'read',
        resource: RESOURCE,
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        dpop_jkt: await calculateJwkThumbprint(await exportJWK(bound.publicKey)),
      });
      const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet });
      await expect(oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE }, { DPoP: other })).rejects.toMatchObject({
        error: 'invalid_grant',
      });
    });

    test('a dpop_jkt that is no JWK thumbprint is refused before the sign-in: at /auth to the redirect URI, at PAR to the client', async () => {
      const params = async (jkt: string) => ({
        redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256', dpop_jkt: jkt, state: 's1',
      });
      const refusedAt = async (authUrl: URL) => {
        // This client registered itself: the way back is the refused-request page's link (server/http/untrusted-redirects.ts).
        const res = await fetch(authUrl, { redirect: 'manual' });
        const location = await sentBack(res);
        return { status: res.status, to: `${location.origin}${location.pathname}`, error: location.searchParams.get('error'), description: location.searchParams.get('error_description'), state: location.searchParams.get('state') };
      };
      const expected = { status: 400, to: REDIRECT, error: 'invalid_request', description: expect.stringMatching(/^dpop_jkt must be the base64url SHA-256 JWK thumbprint/), state: 's1' };
      // Before, the person signed in and consented to a code no key could redeem.
      for (const jkt of ['abc', 'x'.repeat(44), `${'a'.repeat(42)}=`, `${'a'.repeat(42)}+`]) {
        expect({ jkt, ...(await refusedAt(oidc.buildAuthorizationUrl(config, await params(jkt)))) }).toEqual({ jkt, ...expected });
      }
      // Pushed (PAR): refused by the PAR endpoint itself, as /auth would (RFC 9126 section 2.1), to the client that
      // pushed it; it was pushed (201) and refused only in the browser. So is a request naming no grantable scope.
      const push = async (extra: Record<string, string>) => {
        const res = await fetch(`${url}/request`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ client_id: config.clientMetadata().client_id, response_type: 'code', ...(await params(jkt43)), ...extra }) });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      const jkt43 = await calculateJwkThumbprint(await exportJWK((await oidc.randomDPoPKeyPair('ES256')).publicKey));
      expect(await push({ dpop_jkt: 'abc' })).toEqual({ status: 400, body: { error: 'invalid_request', error_description: expect.stringMatching(/^dpop_jkt must be the base64url SHA-256 JWK thumbprint/) } });
      expect(await push({ scope: 'zzz' })).toEqual({ status: 400, body: { error: 'invalid_scope', error_description: expect.stringMatching(/^the request names no scope this server can grant/) } });
      const pushed = await push({});
      expect(pushed.status).toBe(201);
      // A well-formed pushed request goes on to the sign-in.
      const viaPar = new URL(`${url}/auth`);
      viaPar.search = new URLSearchParams({ client_id: config.clientMetadata().client_id, request_uri: pushed.body.request_uri as string }).toString();
      const started = await fetch(viaPar, { redirect: 'manual' });
      expect([started.status, new URL(started.headers.get('location')!, url).pathname]).toEqual([303, expect.stringMatching(/^\/interaction\//)]);
    });

    test('a code bound with dpop_jkt is redeemed by its own key, and the tokens are bound to that key', async () => {
      const bound = await oidc.randomDPoPKeyPair('ES256');
      const jkt = await calculateJwkThumbprint(await exportJWK(bound.publicKey));
      const verifier = oidc.randomPKCECodeVerifier();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT,
        scope: 'read',
        resource: RESOURCE,
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        dpop_jkt: jkt,
      });
      const { callback, pages } = await authorizeWithWallet(url, REDIRECT, { wallet });
      // A public client's code and refresh token are both bound to the key: the consent page says every token is.
      expect(pages.at(-1)).toContain('Tokens will be <strong>DPoP-bound</strong>');
      const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE }, { DPoP: oidc.getDPoPHandle(config, bound) });
      expect(tokens.token_type).toBe('dpop');
      expect((decodeJwt(tokens.access_token).cnf as { jkt: string }).jkt).toBe(jkt);
    });

    test('a confidential client\'s code bound with dpop_jkt: its refresh token is not bound (RFC 9449 section 5), so the consent page does not promise DPoP-bound tokens', async () => {
      const confidential = await oidc.dynamicClientRegistration(
        new URL(url),
        { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' },
        undefined,
        insecure,
      );
      const bound = await oidc.randomDPoPKeyPair('ES256');
      const verifier = oidc.randomPKCECodeVerifier();
      const authUrl = oidc.buildAuthorizationUrl(confidential, {
        redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
        dpop_jkt: await calculateJwkThumbprint(await exportJWK(bound.publicKey)),
      });
      const { callback, pages } = await authorizeWithWallet(authUrl, REDIRECT, { wallet });
      // It said "Tokens will be DPoP-bound", and a refresh without a proof then got a bearer token.
      expect(pages.at(-1)).not.toContain('Tokens will be <strong>DPoP-bound</strong>');
      expect(pages.at(-1)).toContain('Tokens are DPoP-bound only if the application proves possession of its key');
      const tokens = await oidc.authorizationCodeGrant(confidential, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE }, { DPoP: oidc.getDPoPHandle(confidential, bound) });
      expect(tokens.token_type).toBe('dpop');
      const refreshed = await oidc.refreshTokenGrant(confidential, tokens.refresh_token!, { resource: RESOURCE });
      expect(refreshed.token_type).toBe('bearer');
    });

    test('userinfo: the DPoP-bound token works with its proof and is refused when presented as Bearer', async () => {
      const { tokens, dpop } = await codeFlow('openid');
      const info = await oidc.fetchUserInfo(config, tokens.access_token, oidc.skipSubjectCheck, { DPoP: dpop });
      expect(info.sub).toBe(`did:pkh:eip155:1:${wallet.address}`);
      const asBearer = await fetch(`${url}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
      expect(asBearer.status).toBe(401);
      expect(asBearer.headers.get('www-authenticate')).toMatch(/invalid_token/);
      // The right proof with the wrong scheme is refused too.
      const ath = createHash('sha256').update(tokens.access_token).digest('base64url');
      const k = await keyPair();
      const stranger = await fetch(`${url}/me`, {
        headers: { authorization: `DPoP ${tokens.access_token}`, dpop: await proof(k, { htm: 'GET', htu: `${url}/me`, ath }) },
      });
      expect(stranger.status).toBe(401);
    });

    describe('userinfo refusals say which of their three causes it was', () => {
      const athOf = (token: string) => createHash('sha256').update(token).digest('base64url');
      const userinfo = async (token: string, keys?: oidc.CryptoKeyPair) => {
        const headers: Record<string, string> = keys
          ? { authorization: `DPoP ${token}`, dpop: await rawProof(keys.privateKey as SigningKey, { alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(keys.publicKey) }, { htm: 'GET', htu: `${url}/me`, iat: now(), jti: randomUUID(), ath: athOf(token) }) }
          : { authorization: `Bearer ${token}` };
        const res = await fetch(`${url}/me`, { headers });
        const body = (await res.json()) as Record<string, unknown>;
        const challenge = res.headers.get('www-authenticate') ?? '';
        // The challenge says what the body says.
        if (res.status === 401) expect(challenge).toContain(`error_description="${String(body.error_description)}"`);
        return { status: res.status, body, challenge };
      };
      const invalid = (description: string) => ({ status: 401, body: { error: 'invalid_token', error_description: description } });
      const GENERIC = 'invalid token provided';
      const FOR_A_RESOURCE_SERVER = 'the access token is for a resource server, not for the userinfo endpoint: /me takes an access token requested with OpenID scopes only (scope=openid) and no resource, from an authorization code or refresh token request';

      test('a token that does not verify, or no longer: the generic invalid_token, as before', async () => {
        const { tokens } = await codeFlow('openid read', RESOURCE);
        const jwt = tokens.access_token;
        expect(jwt.split('.')).toHaveLength(3);
        for (const token of ['not-a-token', `${jwt.slice(0, -4)}AAAA`, `${jwt.split('.').slice(0, 2).join('.')}.`]) {
          expect(await userinfo(token)).toMatchObject(invalid(GENERIC));
        }
        // An opaque userinfo token once revoked (its refresh token revoked with the grant).
        const opaque = await codeFlow('openid');
        expect((await userinfo(opaque.tokens.access_token, opaque.keys)).status).toBe(200);
        await oidc.tokenRevocation(config, opaque.tokens.refresh_token!);
        expect(await userinfo(opaque.tokens.access_token, opaque.keys)).toMatchObject(invalid(GENERIC));
      });

      test('a resource server\'s JWT access token: said to be for a resource server (an opaque one: insufficient_scope, as before)', async () => {
        const { tokens, keys } = await codeFlow('openid read', RESOURCE);
        // With its proof, and without (a JWT is never looked up: what the published keys verify is said, nothing more).
        expect(await userinfo(tokens.access_token, keys)).toMatchObject(invalid(FOR_A_RESOURCE_SERVER));
        expect(await userinfo(tokens.access_token)).toMatchObject(invalid(FOR_A_RESOURCE_SERVER));
        // An opaque resource server's token, asked for with openid.
        const files = await oidc.dynamicClientRegistration(
          new URL(url),
          { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'openid files' },
          oidc.None(),
          insecure,
        );
        const verifier = oidc.randomPKCECodeVerifier();
        const authorize = oidc.buildAuthorizationUrl(files, { redirect_uri: REDIRECT, scope: 'openid files', resource: OPAQUE_RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
        const { callback } = await authorizeWithWallet(authorize, REDIRECT, { wallet });
        const bearer = await oidc.authorizationCodeGrant(files, callback, { pkceCodeVerifier: verifier }, { resource: OPAQUE_RESOURCE });
        expect(bearer.access_token.split('.')).toHaveLength(1);
        // A resource server's token carries only that server's scopes: oidc-provider's scope check, before its audience
        // check, answers it (403, as before).
        expect(await userinfo(bearer.access_token)).toMatchObject({ status: 403, body: { error: 'insufficient_scope', error_description: 'access token missing openid scope' } });
      });

      test('a DPoP-bound token without its key\'s proof, or a bearer token with a proof: said which, and what to send', async () => {
        const { tokens } = await codeFlow('openid');
        const other = await oidc.randomDPoPKeyPair('ES256');
        expect(await userinfo(tokens.access_token)).toMatchObject(invalid('the access token is DPoP-bound: send it as Authorization: DPoP <token> with a DPoP proof made with its key (RFC 9449 section 7.1)'));
        expect(await userinfo(tokens.access_token, other)).toMatchObject(invalid('the access token is bound to another DPoP key: send a DPoP proof made with the key it was issued to (RFC 9449 section 7.1)'));
        // A bearer token (no proof at the code exchange) sent with a proof.
        const verifier = oidc.randomPKCECodeVerifier();
        const authorize = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
        const { callback } = await authorizeWithWallet(authorize, REDIRECT, { wallet });
        const bearer = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier });
        expect(bearer.token_type).toBe('bearer');
        expect(await userinfo(bearer.access_token, other)).toMatchObject(invalid('the access token is not DPoP-bound: send it as Authorization: Bearer <token>, without a DPoP header'));
        // Each still works the way it is meant to be sent.
        expect((await userinfo(bearer.access_token)).status).toBe(200);
      });

      test('no token keeps its own answer', async () => {
        const none = await fetch(`${url}/me`);
        expect(none.status).toBe(401);
        expect(await none.json()).toEqual({ error: 'invalid_token', error_description: 'no access token provided' });
      });
    });

    test("userinfo, with the key already used at the token endpoint: a proof whose ath is another token's hash is refused, the right one accepted", async () => {
      const { tokens, keys } = await codeFlow('openid');
      const jwk = await exportJWK(keys.publicKey);
      const athOf = (token: string) => createHash('sha256').update(token).digest('base64url');
      const userinfo = async (ath: string) =>
        fetch(`${url}/me`, {
          headers: {
            authorization: `DPoP ${tokens.access_token}`,
            dpop: await rawProof(keys.privateKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, { htm: 'GET', htu: `${url}/me`, iat: now(), jti: randomUUID(), ath }),
          },
        });
      const wrong = await userinfo(athOf(`${tokens.access_token}x`));
      expect(wrong.status).toBe(401);
      expect(wrong.headers.get('www-authenticate')).toMatch(/invalid_dpop_proof/);
      expect(wrong.headers.get('www-authenticate')).toMatch(/ath mismatch/);
      expect((await userinfo(athOf(tokens.access_token))).status).toBe(200);
    });

    test('userinfo: a replayed proof is refused as an invalid DPoP proof (RFC 9449 §7.1), not as an invalid token', async () => {
      const { tokens, keys } = await codeFlow('openid');
      const jwk = await exportJWK(keys.publicKey);
      const ath = createHash('sha256').update(tokens.access_token).digest('base64url');
      const dpop = await rawProof(keys.privateKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, { htm: 'GET', htu: `${url}/me`, iat: now(), jti: randomUUID(), ath });
      const call = () => fetch(`${url}/me`, { headers: { authorization: `DPoP ${tokens.access_token}`, dpop } });
      expect((await call()).status).toBe(200);
      const replay = await call();
      expect(replay.status).toBe(401);
      expect(await replay.json()).toEqual({ error: 'invalid_dpop_proof', error_description: 'DPoP proof JWT replay detected: each proof (its jti) may be used once' });
      expect(replay.headers.get('www-authenticate')).toMatch(/^DPoP .*error="invalid_dpop_proof"/);
    });

    test('userinfo and PAR: a proof for another URL names the URL expected, and a refused alg names those accepted', async () => {
      const { tokens, keys } = await codeFlow('openid');
      const jwk = await exportJWK(keys.publicKey);
      const ath = createHash('sha256').update(tokens.access_token).digest('base64url');
      const algs = 'sign the proof with one of ES256, EdDSA, Ed25519 (dpop_signing_alg_values_supported, RFC 9449 section 5.1)';
      const atUserinfo = async (dpop: string) => {
        const res = await fetch(`${url}/me`, { headers: { authorization: `DPoP ${tokens.access_token}`, dpop } });
        const body = (await res.json()) as Record<string, unknown>;
        // The challenge (RFC 9449 section 7.1) says what the body says.
        if (res.status === 401) expect(res.headers.get('www-authenticate')).toContain(`error_description="${String(body.error_description)}"`);
        return { status: res.status, body };
      };
      const claims = (htu: string, htm = 'GET') => ({ htm, htu, iat: now(), jti: randomUUID(), ath });
      expect(await atUserinfo(await rawProof(keys.privateKey as SigningKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, claims(`${url}/token`)))).toEqual({
        status: 401, body: { error: 'invalid_dpop_proof', error_description: `DPoP proof htu mismatch: the proof's htu must be ${url}/me (RFC 9449 section 4.3)` },
      });
      const [, payload] = (await rawProof(keys.privateKey as SigningKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, claims(`${url}/me`))).split('.');
      expect(await atUserinfo(`${b64(JSON.stringify({ alg: 'ES512', typ: 'dpop+jwt', jwk }))}.${payload}.AAAA`)).toEqual({
        status: 401, body: { error: 'invalid_dpop_proof', error_description: `invalid DPoP proof: 'alg' (Algorithm) Header Parameter value not allowed (ES512): ${algs}` },
      });
      // The right proof is still accepted.
      expect((await atUserinfo(await rawProof(keys.privateKey as SigningKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, claims(`${url}/me`)))).status).toBe(200);

      // PAR takes a DPoP proof (RFC 9449 section 10.1): the same checks, the same descriptions, at /request.
      const push = async (dpop: string) => {
        const res = await fetch(`${url}/request`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', dpop },
          body: new URLSearchParams({ client_id: config.clientMetadata().client_id, response_type: 'code', redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256' }),
        });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      const parClaims = (htu: string) => ({ htm: 'POST', htu, iat: now(), jti: randomUUID() });
      expect(await push(await rawProof(keys.privateKey as SigningKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, parClaims(`${url}/token`)))).toEqual({
        status: 400, body: { error: 'invalid_dpop_proof', error_description: `DPoP proof htu mismatch: the proof's htu must be ${url}/request (RFC 9449 section 4.3)` },
      });
      const [, parPayload] = (await rawProof(keys.privateKey as SigningKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, parClaims(`${url}/request`))).split('.');
      expect(await push(`${b64(JSON.stringify({ alg: 'HS256', typ: 'dpop+jwt', jwk }))}.${parPayload}.AAAA`)).toEqual({
        status: 400, body: { error: 'invalid_dpop_proof', error_description: `invalid DPoP proof: 'alg' (Algorithm) Header Parameter value not allowed (HS256): ${algs}` },
      });
      expect((await push(await rawProof(keys.privateKey as SigningKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, parClaims(`${url}/request`)))).status).toBe(201);
    });

    test('userinfo: the challenge says what the body says, in ASCII, for a proof jose refuses and for two DPoP header fields', async () => {
      const { tokens, keys } = await codeFlow('openid');
      const jwk = await exportJWK(keys.publicKey);
      const ath = createHash('sha256').update(tokens.access_token).digest('base64url');
      const fresh = () => rawProof(keys.privateKey, { alg: 'ES256', typ: 'dpop+jwt', jwk }, { htm: 'GET', htu: `${url}/me`, iat: now(), jti: randomUUID(), ath });
      const challenged = async (dpop: string | string[]) => {
        // fetch joins repeated fields into one; node:http sends each as its own field.
        const headers = ['host', new URL(url).host, 'authorization', `DPoP ${tokens.access_token}`, ...[dpop].flat().flatMap((v) => ['DPoP', v])];
        const res = await new Promise<{ status: number; body: { error_description: string }; challenge: string }>((resolve, reject) => {
          const req = httpRequest(`${url}/me`, { headers }, (r) => {
            let text = '';
            r.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve({ status: r.statusCode!, body: JSON.parse(text) as { error_description: string }, challenge: String(r.headers['www-authenticate']) }));
          });
          req.on('error', reject);
          req.end();
        });
        expect(res.status).toBe(401);
        return res;
      };
      // A crit member jose names in its message, with characters Node refuses in a header (it was a 500, and an
      // error-level stack trace in the log, for anyone).
      // Signed by hand: jose refuses to sign a crit member it does not know.
      const withCrit = async (crit: string) => {
        const input = [{ alg: 'ES256', typ: 'dpop+jwt', jwk, crit: [crit] }, { htm: 'GET', htu: `${url}/me`, iat: now(), jti: randomUUID(), ath }]
          .map((part) => Buffer.from(JSON.stringify(part)).toString('base64url')).join('.');
        const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, keys.privateKey as Parameters<typeof crypto.subtle.sign>[1], Buffer.from(input));
        return `${input}.${Buffer.from(signature).toString('base64url')}`;
      };
      const crits = await Promise.all(['\u2028', 'a\r\nb', '\u{1F600}', '\u00e9', '$&"', "$'x"].map(async (c) => challenged(await withCrit(c))));
      for (const res of [await challenged([await fresh(), await fresh()]), await challenged(`${(await fresh()).slice(0, -4)}AAAA`), ...crits]) {
        expect(res.body.error_description).not.toBe('invalid DPoP key binding');
        // RFC 6749 §5.2 and RFC 6750 §3: printable ASCII without " and \ (a "§" arrived as "Â§" in the header).
        expect(res.body.error_description).toMatch(/^[\x20\x21\x23-\x5b\x5d-\x7e]+$/);
        expect(res.challenge).toContain(`error_description="${res.body.error_description.replace(/"/g, '\\"')}"`);
      }
    });
  });
});

describe('DPoP proof replay across two server processes sharing one MongoDB', () => {
  let a: RunningServer;
  let b: RunningServer;
  const issuer = 'https://as.example.com';

  beforeAll(async () => {
    const first = await startAgentServer(baseConfig(), { ISSUER: issuer, TRUST_PROXY: 'true' });
    a = first.server;
    b = await startServer(first.env);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  test('a proof used at one instance is refused at the other; racing replays give exactly one success', async () => {
    const key = await keyPair();
    const htu = `${issuer}/token`;
    const p = await proof(key, { htu });
    expect((await ccRequest(a.url, p, issuer)).status).toBe(200);
    const replay = await ccRequest(b.url, p, issuer);
    expect(replay.status).toBe(400);

    const racing = await proof(key, { htu });
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => ccRequest(i % 2 ? a.url : b.url, racing, issuer)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
  });
});
