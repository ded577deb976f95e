import { decodeProtectedHeader } from 'jose';

import { clientCredentialsToken, introspect, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { runCli, startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * A rotation to another algorithm (AGENTAUTH_KEY_ALG) moves everything agentauth signs to the new key: access tokens
 * and signed introspection responses (RFC 9701) alike. The responses used to stay with the algorithm the server
 * started with, so the retired key went on signing them (and once it was archived they failed with a 500).
 */
const SHORT = { accessTokenTTL: 5, refreshTokenIdleTTL: 60, refreshTokenAbsoluteTTL: 120, dpop: 'optional', dpopNonce: false };
const CONFIG = {
  resourceServers: [{ identifier: RESOURCE, scopes: ['read'], accessTokenTTL: 5 }],
  clients: [{ client_id: RS_CLIENT.id, client_secret: RS_CLIENT.secret, grant_types: ['client_credentials'] }],
  tiers: { standard: SHORT, bound: { ...SHORT, dpop: 'required' }, strict: { ...SHORT, dpop: 'required', dpopNonce: true } },
  keys: { refreshIntervalSeconds: 1, clockSkewSeconds: 1 },
};

let server: RunningServer;
let env: Record<string, string>;

beforeAll(async () => {
  ({ server, env } = await startConfigured(CONFIG));
});
afterAll(async () => {
  await server?.stop();
});

async function signedBy(): Promise<{ token: { alg: unknown; kid: unknown }; introspection: { alg: unknown; kid: unknown } }> {
  const { status, body } = await clientCredentialsToken(server.url, RS_CLIENT.id, RS_CLIENT.secret);
  expect(status).toBe(200);
  const token = String(body.access_token);
  const signed = await fetch(`${server.url}/token/introspection`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/token-introspection+jwt' },
    body: new URLSearchParams({ token }),
  });
  expect(signed.status).toBe(200);
  const pick = (h: Record<string, unknown>) => ({ alg: h.alg, kid: h.kid });
  return { token: pick(decodeProtectedHeader(token)), introspection: pick(decodeProtectedHeader(await signed.text())) };
}

test('after an ES256 → EdDSA rotation, access tokens and signed introspection responses are both signed by the new key, and stay so after the old one is archived', async () => {
  const before = await signedBy();
  expect(before.token.alg).toBe('ES256');
  expect(before.introspection).toEqual(before.token);

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
  expect(after.introspection).toEqual({ alg: 'EdDSA', kid: newKid });

  // Past the retire grace (5 s tokens + 1 s skew) the ES256 key is archived: signed introspection still answers.
  await new Promise((r) => setTimeout(r, 7000));
  expect((await signedBy()).introspection).toEqual({ alg: 'EdDSA', kid: newKid });
  expect((await introspect(server.url, (await clientCredentialsToken(server.url, RS_CLIENT.id, RS_CLIENT.secret)).body.access_token as string)).active).toBe(true);
}, 60_000);
