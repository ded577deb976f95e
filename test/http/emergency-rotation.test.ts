import { decodeJwt, decodeProtectedHeader, importJWK, SignJWT } from 'jose';
import type { JWK } from 'jose';

import { SqliteStorage } from '../../adapters/sqlite.js';
import { decodeKek } from '../../keys/kek.js';
import { unseal } from '../../keys/seal.js';
import { clientCredentialsToken, fastKeysConfig, introspect, RS_CLIENT } from '../support/agent-server.js';
import { runCli, startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * A signing key that leaked: after `agentauth keys rotate --immediately` it stays published for the retire grace, so
 * that tokens it signed before go on verifying, and a thief holding it can sign tokens that verify against /jwks.
 * Introspection refuses what agentauth itself never signs: a token dated after its key stopped signing, and one that
 * lives longer than any token agentauth issues. What is left is a token dated before the rotation, which expires
 * within the longest access-token lifetime of it (docs/security.md, Known gaps).
 */
const TTL = 60;
const CONFIG = fastKeysConfig(TTL, 2);

let server: RunningServer;
let env: Record<string, string>;

beforeAll(async () => {
  ({ server, env } = await startConfigured(CONFIG));
});
afterAll(async () => {
  await server?.stop();
});

/** The private key of `kid`, as a thief with the database and the KEK would have it. */
async function stolenKey(kid: string) {
  const storage = new SqliteStorage({ dataDir: env.AGENTAUTH_DATA_DIR! });
  await storage.init();
  try {
    const record = (await storage.keys.list()).find((k) => k.kid === kid)!;
    const jwk = JSON.parse(unseal(decodeKek(env.AGENTAUTH_KEK!, 'AGENTAUTH_KEK'), record.sealed, kid)) as JWK;
    return importJWK(jwk, record.alg);
  } finally {
    await storage.close();
  }
}

test('after an emergency rotation, introspection refuses tokens forged with the old key that agentauth could not have signed', async () => {
  const { body } = await clientCredentialsToken(server.url, RS_CLIENT.id, RS_CLIENT.secret);
  const issued = String(body.access_token);
  const oldKid = decodeProtectedHeader(issued).kid!;
  const claims = decodeJwt(issued);

  const rotated = await runCli(['keys', 'rotate', '--immediately', '--json'], env);
  expect(rotated.code).toBe(0);
  // The rotation's own time: the old key stopped signing when the new one activated.
  const retiredAt = Math.floor(Date.parse((JSON.parse(rotated.stdout) as { activatesAt: string }).activatesAt) / 1000);
  // The server follows within its refresh interval: new tokens come from the new key.
  const deadline = Date.now() + 10_000;
  while (decodeProtectedHeader(String((await clientCredentialsToken(server.url, RS_CLIENT.id, RS_CLIENT.secret)).body.access_token)).kid === oldKid && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
  }

  const key = await stolenKey(oldKid);
  const forge = (iat: number, exp: number, jti: string) =>
    new SignJWT({ ...claims, jti, iat, exp }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: oldKid }).sign(key);

  // A token the old key signed before the rotation is still active: the key stays published for that.
  expect((await introspect(server.url, issued)).active).toBe(true);
  // Dated after the key stopped signing, beyond the refresh interval and the clock skew (1 + 2 s): refused.
  const after = retiredAt + 1 + 2 + 2;
  expect((await introspect(server.url, await forge(after, after + TTL, 'forged-after'))).active).toBe(false);
  // Dated before the rotation but living longer than any token agentauth issues: refused.
  const before = retiredAt - 10;
  expect((await introspect(server.url, await forge(before, before + TTL * 50, 'forged-long'))).active).toBe(false);
  // Dated before the rotation with an ordinary lifetime: still accepted until it expires (the gap that remains).
  const forgedBefore = await forge(before, before + TTL, 'forged-before');
  expect((await introspect(server.url, forgedBefore)).active).toBe(true);
  // Revocation goes by the signature alone: a refused forgery can still be put on the denylist, and this one is.
  const revoke = await fetch(`${server.url}/token/revocation`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: forgedBefore }),
  });
  expect(revoke.status).toBe(200);
  expect((await introspect(server.url, forgedBefore)).active).toBe(false);
}, 60_000);
