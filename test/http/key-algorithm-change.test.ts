import { Wallet } from 'ethers';
import { decodeProtectedHeader } from 'jose';
import * as oidc from 'openid-client';

import { clientCredentialsToken, fastKeysConfig, insecure, introspect, REDIRECT, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { runCli, startConfigured, startServer } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { authorizeWithWallet } from '../support/user-agent.js';

/**
 * A rotation to another algorithm (AGENTAUTH_KEY_ALG): access tokens move to the new key at once. ID tokens and signed
 * introspection responses (RFC 9701) follow the algorithm the client registered (or was built with), which clients
 * check: signed by the old key while it is published, then by the new one. They used to fail with a 500 once the old
 * key was archived. ID tokens presented back as `id_token_hint` verify with the key that signed them. Discovery names
 * the published keys' algorithms only, registration refuses one no published key has, and a client registered before
 * the rotation still loads after a restart (every client stores the algorithm of its day; it used to fail to load,
 * `invalid_client_metadata`, once the restarted server knew only the new key's).
 */
const CONFIG = fastKeysConfig(5, 1);
const person = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');

let server: RunningServer;
let env: Record<string, string>;

beforeAll(async () => {
  ({ server, env } = await startConfigured(CONFIG));
});
afterAll(async () => {
  await server?.stop();
});

const header = (jwt: string) => {
  const h = decodeProtectedHeader(jwt);
  return { alg: h.alg, kid: h.kid };
};

async function signedBy(): Promise<{ token: { alg: unknown; kid: unknown }; introspection: { alg: unknown; kid: unknown } }> {
  const { status, body } = await clientCredentialsToken(server.url, RS_CLIENT.id, RS_CLIENT.secret);
  expect(status).toBe(200);
  const token = String(body.access_token);
  const signed = await introspect(server.url, token, 'application/token-introspection+jwt');
  return { token: header(token), introspection: header(String(signed.jwt)) };
}

/** A person signed in to a public OpenID client: its ID token (redeemed by hand: openid-client checks the algorithm). */
async function idToken(client: oidc.Configuration): Promise<string> {
  const verifier = oidc.randomPKCECodeVerifier();
  const url = oidc.buildAuthorizationUrl(client, { redirect_uri: REDIRECT, scope: 'openid read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
  const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet: person });
  const res = await fetch(`${server.url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code: callback.searchParams.get('code')!, redirect_uri: REDIRECT, code_verifier: verifier, client_id: client.clientMetadata().client_id, resource: RESOURCE }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { id_token: string }).id_token;
}

/** What the logout page makes of an ID token presented as id_token_hint (no session here): its form, or a refusal. */
/** The signing algorithms discovery advertises, the same at every spelling of its two paths the router accepts. */
async function advertised(): Promise<Record<string, unknown>> {
  const seen = [];
  for (const path of ['/.well-known/openid-configuration', '/.WELL-KNOWN/OpenID-Configuration/', '/.well-known/oauth-authorization-server']) {
    const res = await fetch(`${server.url}${path}`);
    expect({ path, status: res.status }).toEqual({ path, status: 200 });
    const meta = (await res.json()) as Record<string, unknown>;
    seen.push({ id: meta.id_token_signing_alg_values_supported, introspection: meta.introspection_signing_alg_values_supported });
  }
  expect(seen[1]).toEqual(seen[0]);
  expect(seen[2]).toEqual(seen[0]);
  return seen[0]!;
}

async function logoutWithHint(hint: string): Promise<{ status: number; text: string }> {
  const res = await fetch(`${server.url}/session/end?${new URLSearchParams({ id_token_hint: hint })}`, { headers: { accept: 'text/html' } });
  return { status: res.status, text: await res.text() };
}

test('after an ES256 → EdDSA rotation: access tokens move at once; ID tokens and signed introspection follow once the old key is archived, never a 500; hints verify; discovery and registration follow the published keys; the client still loads after a restart', async () => {
  const client = await oidc.dynamicClientRegistration(
    new URL(server.url),
    { client_name: 'OpenID agent', redirect_uris: [REDIRECT], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'openid read' },
    oidc.None(),
    insecure,
  );
  const registered = client.clientMetadata();
  expect(registered.id_token_signed_response_alg).toBe('ES256');
  expect(await advertised()).toEqual({ id: ['ES256'], introspection: ['ES256'] });
  const before = await signedBy();
  expect(before.token.alg).toBe('ES256');
  expect(before.introspection).toEqual(before.token);
  const oldIdToken = await idToken(client);
  expect(header(oldIdToken)).toEqual(before.token);

  const rotated = await runCli(['keys', 'rotate', '--immediately', '--json'], { ...env, AGENTAUTH_KEY_ALG: 'EdDSA' });
  expect(rotated.code).toBe(0);
  const newKid = (JSON.parse(rotated.stdout) as { kid: string }).kid;
  // The server follows within its refresh interval (1 s).
  const deadline = Date.now() + 10_000;
  let after = await signedBy();
  while (after.token.kid !== newKid && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    after = await signedBy();
  }
  expect(after.token).toEqual({ alg: 'EdDSA', kid: newKid });
  // Both keys are published: both algorithms are advertised.
  expect(await advertised()).toEqual({ id: ['ES256', 'EdDSA'], introspection: ['ES256', 'EdDSA'] });
  // The client checks the algorithm it registered (ES256): while the old key is published, that key signs for it.
  expect(after.introspection).toEqual(before.token);
  expect(header(await idToken(client))).toEqual(before.token);
  expect((await logoutWithHint(oldIdToken)).status).toBe(200);

  // Past the retire grace (5 s tokens + 1 s skew) the ES256 key is archived: the new key signs everything.
  await new Promise((r) => setTimeout(r, 7000));
  const jwks = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: Array<{ kid: string }> };
  expect(jwks.keys.map((k) => k.kid)).toEqual([newKid]);
  // The archived key's algorithm leaves discovery at once (it used to stay until a restart), and registration.
  expect(await advertised()).toEqual({ id: ['EdDSA'], introspection: ['EdDSA'] });
  const refused = await fetch(`${server.url}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'openid read', id_token_signed_response_alg: 'ES256' }),
  });
  expect({ status: refused.status, body: await refused.json() }).toEqual({ status: 400, body: {
    error: 'invalid_client_metadata',
    error_description: "id_token_signed_response_alg is ES256, which none of this server's signing keys uses; use EdDSA (id_token_signing_alg_values_supported)",
  } });
  expect((await signedBy()).introspection).toEqual({ alg: 'EdDSA', kid: newKid });
  const newIdToken = await idToken(client);
  expect(header(newIdToken)).toEqual({ alg: 'EdDSA', kid: newKid });
  // An EdDSA ID token is a valid hint although the client registered ES256: it is checked with its own key.
  const page = await logoutWithHint(newIdToken);
  expect({ status: page.status, refused: /could not validate|id_token_hint/i.test(page.text) }).toEqual({ status: 200, refused: false });
  // A hint whose key is gone is refused (400), as any unverifiable hint is.
  expect((await logoutWithHint(oldIdToken)).status).toBe(400);
  // The client's registration reads back as stored.
  const read = await fetch(registered.registration_client_uri as string, { headers: { authorization: `Bearer ${registered.registration_access_token as string}` } });
  expect(read.status).toBe(200);
  const current = (await read.json()) as Record<string, unknown>;
  expect(current).toMatchObject({ id_token_signed_response_alg: 'ES256' });
  // An RFC 7592 update may echo the algorithm the client has, though no published key has it any more.
  const { registration_access_token: token, registration_client_uri: uri, client_id_issued_at: _issuedAt, ...metadata } = current;
  const updated = await fetch(uri as string, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token as string}` },
    body: JSON.stringify({ ...metadata, client_name: 'OpenID agent, renamed' }),
  });
  const updatedBody = (await updated.json()) as Record<string, unknown>;
  expect({ status: updated.status, alg: updatedBody.id_token_signed_response_alg, name: updatedBody.client_name }).toEqual({ status: 200, alg: 'ES256', name: 'OpenID agent, renamed' });

  // Restarted (same port, same store) with only the EdDSA key left: the client registered with ES256 still loads.
  await server.stop();
  server = await startServer({ ...env, AGENTAUTH_KEY_ALG: 'EdDSA' }, server.port);
  expect(await advertised()).toEqual({ id: ['EdDSA'], introspection: ['EdDSA'] });
  expect(header(await idToken(client))).toEqual({ alg: 'EdDSA', kid: newKid });
  const reread = await fetch(uri as string, { headers: { authorization: `Bearer ${updatedBody.registration_access_token as string}` } });
  expect(reread.status).toBe(200);
  expect(await reread.json()).toMatchObject({ id_token_signed_response_alg: 'ES256', client_name: 'OpenID agent, renamed' });
}, 90_000);
