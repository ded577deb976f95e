import { randomUUID } from 'node:crypto';

import { Wallet } from 'ethers';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import * as oidc from 'openid-client';

import { authorizeWithWallet, logOut } from '../support/user-agent.js';
import type { UserAgent } from '../support/user-agent.js';
import { baseConfig, STRICT_REFRESH_TIERS, insecure, introspect, OPAQUE_RESOURCE, REDIRECT, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { runCli } from '../support/server.js';

const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
const SUB = `did:pkh:eip155:1:${wallet.address}`;

describe('agents with openid-client v6: registration, authorization code + PKCE + DPoP, refresh, introspection, revocation', () => {
  let as: AgentServer;
  let issuer: string;
  let config: oidc.Configuration;

  beforeAll(async () => {
    as = await startAgentServer(baseConfig({ tiers: STRICT_REFRESH_TIERS }));
    issuer = as.server.url;
    config = await oidc.dynamicClientRegistration(
      new URL(issuer),
      {
        client_name: 'Test agent',
        redirect_uris: [REDIRECT],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
        scope: 'read write files',
      },
      oidc.None(),
      insecure,
    );
  });

  afterAll(async () => {
    await as?.server.stop();
  });

  /** An authorization code for `resource` and `scope`, signed in with the wallet: the callback and its PKCE verifier. */
  async function authorize(resource: string, scope: string, agent?: UserAgent, extra: Record<string, string> = {}) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT,
      scope,
      resource,
      state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      ...extra,
    });
    const outcome = await authorizeWithWallet(url, REDIRECT, { wallet, ...(agent ? { agent } : {}) });
    return { outcome, verifier, state };
  }

  async function login(resource: string, scope: string, agent?: UserAgent) {
    const dpop = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const { outcome, verifier, state } = await authorize(resource, scope, agent);
    const tokens = await oidc.authorizationCodeGrant(config, outcome.callback, { pkceCodeVerifier: verifier, expectedState: state }, { resource }, { DPoP: dpop });
    return { tokens, dpop, outcome };
  }

  test('discovery advertises exactly what is supported', async () => {
    const meta = (await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(meta.code_challenge_methods_supported).toEqual(['S256']);
    expect(meta.dpop_signing_alg_values_supported).toEqual(['ES256', 'EdDSA', 'Ed25519']);
    expect(meta.authorization_response_iss_parameter_supported).toBe(true);
    expect(meta.registration_endpoint).toBe(`${issuer}/reg`);
    expect(meta.introspection_endpoint).toBe(`${issuer}/token/introspection`);
    expect(meta.revocation_endpoint).toBe(`${issuer}/token/revocation`);
    expect([...(meta.grant_types_supported as string[])].sort()).toEqual([
      'authorization_code', 'client_credentials', 'refresh_token', 'urn:agentauth:params:oauth:grant-type:wallet-signature',
      'urn:ietf:params:oauth:grant-type:token-exchange',
    ]);
    expect(meta.response_types_supported).toEqual(['code']);
    expect(meta.token_endpoint_auth_methods_supported).toEqual(['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt']);
    // The same methods at introspection and revocation (RFC 8414 §2 would otherwise imply client_secret_basic only).
    expect(meta.introspection_endpoint_auth_methods_supported).toEqual(meta.token_endpoint_auth_methods_supported);
    expect(meta.revocation_endpoint_auth_methods_supported).toEqual(meta.token_endpoint_auth_methods_supported);
    // The wallet-signature grant's nonce endpoint, and it is the endpoint there (this client is not registered for
    // that grant, and the endpoint says so; test/http/wallet-grant.test.ts gets nonces from it).
    expect(meta.agentauth_wallet_nonce_endpoint).toBe(`${issuer}/wallet/nonce`);
    const nonce = await fetch(meta.agentauth_wallet_nonce_endpoint as string, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: config.clientMetadata().client_id }),
    });
    expect(nonce.status).toBe(400);
    expect(await nonce.json()).toMatchObject({ error: 'unauthorized_client', error_description: expect.stringContaining('wallet-signature grant') });
  });

  test('a code exchanged with a resource it was not issued for is refused without using the code up: the corrected request gets the tokens', async () => {
    const dpop = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const { outcome: { callback }, verifier, state } = await authorize(RESOURCE, 'read');
    const code = callback.searchParams.get('code')!;
    const exchange = (...resources: string[]) =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams([
          ...Object.entries({ grant_type: 'authorization_code', client_id: config.clientMetadata().client_id, code, code_verifier: verifier, redirect_uri: REDIRECT }),
          ...resources.map((r): [string, string] => ['resource', r]),
        ]),
      });
    // Another configured resource server, an unknown one, and one that is not a URL: each refused naming what the code
    // covers (oidc-provider said "resource indicator is missing, or unknown"), none using the code up.
    for (const wrong of [OPAQUE_RESOURCE, 'https://elsewhere.example.com', 'urn:x']) {
      const refused = await exchange(wrong);
      expect(refused.status).toBe(400);
      expect(await refused.json()).toEqual({ error: 'invalid_target', error_description: `resource ${wrong} was not part of the authorization request; this authorization code covers ${RESOURCE}` });
    }
    // Two faults at once get the error oidc-provider gives first (its PKCE check, before any check of the resource).
    const twoFaults = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', client_id: config.clientMetadata().client_id, code, code_verifier: oidc.randomPKCECodeVerifier(), redirect_uri: REDIRECT, resource: 'urn:x' }),
    });
    expect(await twoFaults.json()).toEqual({ error: 'invalid_grant', error_description: 'code_verifier does not match code_challenge' });
    // The resource repeated (oidc-provider accepts the parameter more than once, then cannot pick one): refused too.
    const repeated = await exchange(RESOURCE, OPAQUE_RESOURCE);
    expect(repeated.status).toBe(400);
    // It said "the resource parameter is required", of a parameter sent twice.
    expect(await repeated.json()).toEqual({ error: 'invalid_target', error_description: `name one resource per token request (got 2); this authorization code covers ${RESOURCE}` });
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state }, { resource: RESOURCE }, { DPoP: dpop });
    expect(decodeJwt(tokens.access_token).aud).toBe(RESOURCE);
    // Used once, the code is then spent as usual.
    const again = await exchange(RESOURCE);
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: string }).error).toBe('invalid_grant');
    // A code this server never issued (or one expired and gone) is told both, and what to do (it said only "not found").
    const unknown = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', client_id: config.clientMetadata().client_id, code: 'x'.repeat(43), code_verifier: verifier, redirect_uri: REDIRECT, resource: RESOURCE }),
    });
    expect([unknown.status, await unknown.json()]).toEqual([400, { error: 'invalid_grant', error_description: 'authorization code not found: it is not a code this server issued, or it has expired (codes live 60 s); exchange a code as soon as the redirect brings it, or start a new authorization request' }]);
  });

  describe('a code refused for its DPoP proof is not used up: the corrected request gets the tokens', () => {
    const proofFor = async (keys: Awaited<ReturnType<typeof generateKeyPair>>, jti = randomUUID()) =>
      new SignJWT({ htm: 'POST', htu: `${issuer}/token`, jti })
        .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: await exportJWK(keys.publicKey) })
        .setIssuedAt()
        .sign(keys.privateKey);
    const redeem = (code: string, verifier: string, dpop?: string) =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...(dpop ? { dpop } : {}) },
        body: new URLSearchParams({ grant_type: 'authorization_code', client_id: config.clientMetadata().client_id, code, code_verifier: verifier, redirect_uri: REDIRECT, resource: RESOURCE }),
      });
    const codeOf = (callback: URL) => callback.searchParams.get('code')!;

    test('a proof already used (replayed): invalid_dpop_proof, and the code still redeems with a fresh proof', async () => {
      const keys = await generateKeyPair('ES256');
      const used = await proofFor(keys);
      const first = await authorize(RESOURCE, 'read');
      expect((await redeem(codeOf(first.outcome.callback), first.verifier, used)).status).toBe(200);
      const second = await authorize(RESOURCE, 'read');
      const replay = await redeem(codeOf(second.outcome.callback), second.verifier, used);
      expect(replay.status).toBe(400);
      expect(await replay.json()).toEqual({ error: 'invalid_dpop_proof', error_description: 'DPoP proof JWT replay detected: each proof (its jti) may be used once' });
      const ok = await redeem(codeOf(second.outcome.callback), second.verifier, await proofFor(keys));
      expect(ok.status).toBe(200);
      // And the grant behind the first code is intact: its refresh token still works.
      expect(((await ok.json()) as { token_type: string }).token_type).toBe('DPoP');
    });

    test('a code bound with dpop_jkt: no proof, or another key\'s, is invalid_grant; the bound key then redeems it', async () => {
      const bound = await generateKeyPair('ES256');
      const other = await generateKeyPair('ES256');
      const { outcome, verifier } = await authorize(RESOURCE, 'read', undefined, { dpop_jkt: await calculateJwkThumbprint(await exportJWK(bound.publicKey)) });
      const code = codeOf(outcome.callback);
      const missing = await redeem(code, verifier);
      expect(missing.status).toBe(400);
      expect(await missing.json()).toEqual({ error: 'invalid_grant', error_description: 'missing DPoP proof JWT' });
      const wrongKey = await redeem(code, verifier, await proofFor(other));
      expect(wrongKey.status).toBe(400);
      expect(await wrongKey.json()).toEqual({ error: 'invalid_grant', error_description: 'DPoP proof key thumbprint does not match dpop_jkt' });
      expect((await redeem(code, verifier, await proofFor(bound))).status).toBe(200);
    });
  });

  test('the registered public client gets the standard tier and no secret', () => {
    const meta = config.clientMetadata();
    expect(meta.client_secret).toBeUndefined();
    expect(meta.agentauth_tier).toBe('standard');
    expect(typeof meta.registration_access_token).toBe('string');
  });

  test('code + PKCE + DPoP: a DPoP-bound, audience-bound ES256 JWT and a DPoP-bound rotating refresh token', async () => {
    const { tokens, outcome } = await login(RESOURCE, 'read');
    expect(outcome.pages.some((p) => p.includes('Connect wallet and sign in'))).toBe(true);
    expect(outcome.pages.some((p) => p.includes('Allow access?') && p.includes('Test agent') && p.includes(RESOURCE) && p.includes('127.0.0.1:65000') && p.includes('<code>read</code>') && p.includes('bearer tokens'))).toBe(true);
    expect(tokens.token_type).toBe('dpop');
    expect(tokens.expires_in).toBe(300);
    expect(typeof tokens.refresh_token).toBe('string');
    const header = decodeProtectedHeader(tokens.access_token);
    expect(header).toMatchObject({ typ: 'at+jwt', alg: 'ES256' });
    const { payload } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer, audience: RESOURCE });
    expect(payload).toMatchObject({ sub: SUB, client_id: config.clientMetadata().client_id, scope: 'read', aud: RESOURCE });
    expect(typeof payload.jti).toBe('string');
    expect(typeof (payload.cnf as { jkt: string }).jkt).toBe('string');
  });

  test('refresh rotates every time; presenting a rotated refresh token again revokes the whole grant, JWT access tokens included', async () => {
    const { tokens, dpop } = await login(RESOURCE, 'read write');
    const second = await oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop });
    expect(second.refresh_token).toBeDefined();
    expect(second.refresh_token).not.toBe(tokens.refresh_token);
    expect((await introspect(issuer, second.access_token)).active).toBe(true);

    // The reuse is told what happened and what to do (it said only "refresh token already used").
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).rejects.toMatchObject({
      error: 'invalid_grant',
      error_description: 'refresh token already used: it was rotated by an earlier refresh, and presenting it again is treated as token theft (refresh token reuse detection, RFC 9700 section 4.14.2), so its grant is revoked with every access and refresh token issued from it; obtain a new authorization (the user signs in again for a new authorization code, or a new wallet-signature grant)',
    });
    // The successor, revoked with its grant, is no reuse: it is not told so.
    const revoked = await oidc.refreshTokenGrant(config, second.refresh_token!, { resource: RESOURCE }, { DPoP: dpop }).catch((e: unknown) => e);
    expect(revoked).toMatchObject({ error: 'invalid_grant' });
    expect((revoked as { error_description?: string }).error_description).not.toMatch(/already used/);
    expect(await introspect(issuer, second.access_token)).toEqual({ active: false });
    expect(await introspect(issuer, tokens.access_token)).toEqual({ active: false });
  });

  test('10 concurrent refreshes of one refresh token give exactly one success, and the reuse revokes the grant, the winner\'s tokens too', async () => {
    const { tokens, dpop } = await login(RESOURCE, 'read');
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, () => oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })),
    );
    const won = results.filter((r): r is PromiseFulfilledResult<oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers> => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results.filter((x): x is PromiseRejectedResult => x.status === 'rejected')) {
      expect(r.reason).toMatchObject({ error: 'invalid_grant' });
    }
    // The losers were a reuse of a rotated refresh token: the grant is gone, with everything issued from it.
    expect(await introspect(issuer, won[0]!.value.access_token)).toEqual({ active: false });
    await expect(oidc.refreshTokenGrant(config, won[0]!.value.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test('introspection (RFC 7662) of JWT and opaque access tokens and refresh tokens; RFC 9701 signed responses', async () => {
    const { tokens } = await login(RESOURCE, 'read');
    const jwt = await introspect(issuer, tokens.access_token);
    const claims = decodeJwt(tokens.access_token);
    expect(jwt).toMatchObject({
      active: true, sub: SUB, client_id: config.clientMetadata().client_id, aud: RESOURCE, scope: 'read',
      exp: claims.exp, iat: claims.iat, jti: claims.jti, token_type: 'DPoP', cnf: claims.cnf,
    });
    // The client itself, through openid-client.
    expect((await oidc.tokenIntrospection(config, tokens.access_token)).active).toBe(true);
    expect(await oidc.tokenIntrospection(config, tokens.refresh_token!)).toMatchObject({ active: true, client_id: config.clientMetadata().client_id });

    const signed = await introspect(issuer, tokens.access_token, 'application/token-introspection+jwt');
    expect(signed.type).toMatch(/^application\/token-introspection\+jwt/);
    const { payload } = await jwtVerify(signed.jwt as string, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer });
    expect((payload.token_introspection as { active: boolean; jti: string }).jti).toBe(claims.jti);

    const opaque = await login(OPAQUE_RESOURCE, 'files');
    expect(opaque.tokens.access_token.split('.')).toHaveLength(1);
    expect(await introspect(issuer, opaque.tokens.access_token)).toMatchObject({ active: true, aud: OPAQUE_RESOURCE, scope: 'files', token_type: 'DPoP' });
  });

  test('revocation (RFC 7009): a revoked JWT access token introspects inactive; idempotent; unknown tokens answer 200', async () => {
    const { tokens, dpop } = await login(RESOURCE, 'read');
    await oidc.tokenRevocation(config, tokens.access_token);
    await oidc.tokenRevocation(config, tokens.access_token);
    expect(await introspect(issuer, tokens.access_token)).toEqual({ active: false });
    // Revoking an access token alone leaves the grant: the refresh token still works.
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).resolves.toBeDefined();
    await expect(oidc.tokenRevocation(config, 'not-a-token-we-issued')).resolves.toBeUndefined();
    await expect(oidc.tokenRevocation(config, 'eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.')).resolves.toBeUndefined();
  });

  test('revoking a refresh token revokes the whole grant, JWT access tokens included', async () => {
    const { tokens, dpop } = await login(RESOURCE, 'read');
    await oidc.tokenRevocation(config, tokens.refresh_token!);
    expect(await introspect(issuer, tokens.access_token)).toEqual({ active: false });
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test('a person signed in is not asked to sign in again; this public client with a loopback redirect is asked to approve again (RFC 8252 section 8.6)', async () => {
    const first = await login(RESOURCE, 'read');
    const again = await login(RESOURCE, 'read', first.outcome.agent);
    expect(again.outcome.pages.some((p) => p.includes('Connect wallet'))).toBe(false);
    expect(again.outcome.pages.some((p) => p.includes('Allow access?'))).toBe(true);
  });

  /** Every audit record so far, through `agentauth audit export`. */
  async function auditLog(): Promise<Array<{ type: string; hash: string; details: Record<string, unknown> }>> {
    const r = await runCli(['audit', 'export'], as.env);
    expect(r.code).toBe(0);
    return r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; hash: string; details: Record<string, unknown> });
  }

  /** The grant.revoked records written since `before` (a list auditLog returned). */
  async function revokedSince(before: Array<{ hash: string }>): Promise<Array<Record<string, unknown>>> {
    const seen = new Set(before.map((e) => e.hash));
    return (await auditLog()).filter((e) => !seen.has(e.hash) && e.type === 'grant.revoked').map((e) => e.details);
  }

  test('revoking an opaque access token revokes its grant; the person\'s next authorization starts a new grant, whose JWT access tokens are active', async () => {
    // The same person, the same browser session, the same client: first an opaque resource's token, revoked by the client.
    const first = await login(OPAQUE_RESOURCE, 'files');
    const grantId = (await introspect(issuer, first.tokens.access_token)).grant_id as string;
    expect(typeof grantId).toBe('string');
    const before = await auditLog();
    await oidc.tokenRevocation(config, first.tokens.access_token);
    expect(await introspect(issuer, first.tokens.access_token)).toEqual({ active: false });
    await expect(oidc.refreshTokenGrant(config, first.tokens.refresh_token!, { resource: OPAQUE_RESOURCE }, { DPoP: first.dpop })).rejects.toMatchObject({ error: 'invalid_grant' });
    expect(await revokedSince(before)).toEqual([expect.objectContaining({ grant_id: grantId, route: 'revocation' })]);
    // Asked again (the grant is gone), the person consents to a new grant: its JWT access token is active. Before, the
    // kept grant was reused, and its revocation mark made every JWT access token issued from it inactive for 70 minutes.
    const again = await login(RESOURCE, 'read', first.outcome.agent);
    expect(again.outcome.pages.some((p) => p.includes('Allow access?'))).toBe(true);
    const claims = decodeJwt(again.tokens.access_token);
    expect(typeof claims.grant_id).toBe('string');
    expect(claims.grant_id).not.toBe(grantId);
    expect(await introspect(issuer, again.tokens.access_token)).toEqual(expect.objectContaining({ active: true, jti: claims.jti }));
  });

  test('RP-initiated logout revokes the grant, JWT access tokens included; the audit record says logout', async () => {
    const { tokens, dpop, outcome } = await login(RESOURCE, 'read');
    const before = await auditLog();
    const agent = outcome.agent;
    expect([200, 303]).toContain(await logOut(agent, issuer, config.clientMetadata().client_id));
    expect(await introspect(issuer, tokens.access_token)).toEqual({ active: false });
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!, { resource: RESOURCE }, { DPoP: dpop })).rejects.toMatchObject({ error: 'invalid_grant' });
    expect(await revokedSince(before)).toEqual([expect.objectContaining({ route: 'end_session_confirm', reason: 'logout' })]);
  });

  test('a logout that returns to a post_logout_redirect_uri the client registered is audited as a logout, even one shaped like this server\'s resume URL', async () => {
    const lookalike = `${issuer}/auth/${randomUUID()}`;
    const spoofing = await oidc.dynamicClientRegistration(
      new URL(issuer),
      { redirect_uris: [REDIRECT], post_logout_redirect_uris: [lookalike], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' },
      oidc.None(),
      insecure,
    );
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(spoofing, {
      redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const { agent } = await authorizeWithWallet(url, REDIRECT, { wallet });
    const before = await auditLog();
    const start = await agent.fetch(`${issuer}/session/end?client_id=${encodeURIComponent(spoofing.clientMetadata().client_id)}&post_logout_redirect_uri=${encodeURIComponent(lookalike)}`);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(await start.text())?.[1];
    const confirm = await agent.fetch(`${issuer}/session/end/confirm`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ xsrf: xsrf!, logout: 'yes' }).toString(),
    });
    expect(confirm.headers.get('location')).toBe(lookalike);
    expect(await revokedSince(before)).toEqual([expect.objectContaining({ route: 'end_session_confirm', reason: 'logout' })]);
  });

  test('signing in with another wallet in the same browser session ends the first account\'s session (oidc-provider), audited as an account switch, not as a logout', async () => {
    const first = await login(RESOURCE, 'read');
    const before = await auditLog();
    const other = new Wallet(Wallet.createRandom().privateKey);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, state, prompt: 'login',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const outcome = await authorizeWithWallet(url, REDIRECT, { wallet: other, agent: first.outcome.agent });
    // oidc-provider's self-submitting logout form was on the way.
    expect(outcome.pages.some((p) => p.includes('document.forms[0].submit()') && /action="[^"]*\/session\/end\/confirm"/.test(p))).toBe(true);
    const dpop = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const second = await oidc.authorizationCodeGrant(config, outcome.callback, { pkceCodeVerifier: verifier, expectedState: state }, { resource: RESOURCE }, { DPoP: dpop });
    expect(decodeJwt(second.access_token).sub).toBe(`did:pkh:eip155:1:${other.address}`);
    expect(await introspect(issuer, first.tokens.access_token)).toEqual({ active: false });
    expect(await revokedSince(before)).toEqual([expect.objectContaining({ route: 'end_session_confirm', reason: 'account_switch' })]);
  });
});
