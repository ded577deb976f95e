import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, importJWK, SignJWT } from 'jose';
import type { JWK } from 'jose';

import { baseConfig, RESOURCE, RS_CLIENT, register } from '../support/agent-server.js';
import { freePort } from '../support/ferretdb.js';
import { newKek, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * private_key_jwt (RFC 7523 §2.2, OpenID Connect Core §9) with every algorithm discovery advertises for it, at the
 * token, introspection and revocation endpoints, for clients of the configuration file and clients registered
 * through RFC 7591. RS256 and PS256 were advertised and never worked: the DPoP key-import cache froze every public
 * key it imported, an RSA key's publicExponent (a Uint8Array) cannot be frozen, the import threw, and oidc-provider
 * reported a bad signature (401 invalid_client).
 */

type SigningKey = Parameters<SignJWT['sign']>[0];
const ALGS = ['ES256', 'ES384', 'EdDSA', 'PS256', 'RS256'] as const;
type Alg = (typeof ALGS)[number];
const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

interface Answer { status: number; body: Record<string, unknown> }

async function keyPair(alg: string): Promise<{ privateKey: SigningKey; privateJwk: JWK; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg.startsWith('RS') || alg.startsWith('PS') ? { modulusLength: 2048 } : {}) });
  return { privateKey: privateKey as SigningKey, privateJwk: await exportJWK(privateKey), jwk: { ...(await exportJWK(publicKey)), use: 'sig' } };
}

const assertion = (clientId: string, alg: string, key: SigningKey, aud: string) =>
  new SignJWT({ jti: randomUUID() })
    .setProtectedHeader({ alg })
    .setIssuer(clientId).setSubject(clientId).setAudience(aud).setIssuedAt().setExpirationTime('60s')
    .sign(key);

describe('private_key_jwt with every advertised signing algorithm', () => {
  let server: RunningServer;
  let issuer: string;
  const keys = {} as Record<Alg, { privateKey: SigningKey; privateJwk: JWK; jwk: JWK }>;
  const clientOf = (alg: string) => `pkj-${alg.toLowerCase()}`;

  async function post(path: string, clientId: string, alg: string, key: SigningKey, params: Record<string, string>): Promise<Answer> {
    const res = await fetch(`${issuer}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ ...params, client_id: clientId, client_assertion_type: ASSERTION_TYPE, client_assertion: await assertion(clientId, alg, key, `${issuer}${path}`) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }
  const ccToken = (clientId: string, alg: string, key: SigningKey) => post('/token', clientId, alg, key, { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' });

  beforeAll(async () => {
    for (const alg of ALGS) keys[alg] = await keyPair(alg);
    const config = baseConfig({ registration: { mode: 'open', anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } });
    config.clients = [
      ...(config.clients as unknown[]),
      ...ALGS.map((alg) => ({ client_id: clientOf(alg), token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys[alg].jwk] }, grant_types: ['client_credentials'] })),
      // A resource server that authenticates with an RSA key, to introspect and revoke.
      { client_id: 'rs-rsa', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.RS256.jwk] }, grant_types: ['client_credentials'] },
    ];
    const port = await freePort();
    const dir = tempDir();
    issuer = `http://127.0.0.1:${port}`;
    server = await startServer({ AGENTAUTH_CONFIG: writeConfig(dir, config), AGENTAUTH_DATA_DIR: `${dir}/data`, AGENTAUTH_KEK: newKek(), ISSUER: issuer, HOST: '127.0.0.1' }, port);
  });
  afterAll(async () => {
    await server?.stop();
  });

  test('discovery advertises exactly these algorithms for the token, introspection and revocation endpoints', async () => {
    const meta = (await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    // RFC 8414 §2: required wherever private_key_jwt is listed; the introspection and revocation ones were missing.
    for (const endpoint of ['token', 'introspection', 'revocation']) {
      expect({ endpoint, methods: meta[`${endpoint}_endpoint_auth_methods_supported`], algs: meta[`${endpoint}_endpoint_auth_signing_alg_values_supported`] })
        .toEqual({ endpoint, methods: expect.arrayContaining(['private_key_jwt']), algs: [...ALGS] });
    }
  });

  test.each(ALGS)('%s: a client of the configuration file gets a token; another key, or the same key under another algorithm, is invalid_client', async (alg) => {
    const ok = await ccToken(clientOf(alg), alg, keys[alg].privateKey);
    expect([ok.status, ok.body.token_type]).toEqual([200, 'Bearer']);
    const other = await keyPair(alg);
    const forged = await ccToken(clientOf(alg), alg, other.privateKey);
    expect([forged.status, forged.body.error]).toEqual([401, 'invalid_client']);
    if (alg === 'RS256' || alg === 'PS256') {
      // RS512 is not advertised: refused, though the client's key makes it.
      const unlisted = await ccToken(clientOf(alg), 'RS512', (await importJWK(keys[alg].privateJwk, 'RS512')) as SigningKey);
      expect([unlisted.status, unlisted.body.error]).toEqual([401, 'invalid_client']);
    }
  });

  test.each(['RS256', 'PS256', 'ES256'] as const)('%s: a client registered through RFC 7591 with that key authenticates', async (alg) => {
    const reg = await register(issuer, { token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: alg, jwks: { keys: [keys[alg].jwk] }, grant_types: ['client_credentials'], scope: 'read' });
    expect(reg.status).toBe(201);
    const ok = await ccToken(reg.body.client_id as string, alg, keys[alg].privateKey);
    expect([ok.status, ok.body.token_type]).toEqual([200, 'Bearer']);
  });

  test('a refused client_assertion signed by the client\'s key says what is wrong with it (invalid_client); one it did not sign, or of an unknown client or another method, learns nothing', async () => {
    const id = clientOf('ES256');
    const key = keys.ES256.privateKey;
    const aud = `${issuer}/token`;
    const send = async (params: Record<string, string>) => {
      const res = await fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read', client_assertion_type: ASSERTION_TYPE, ...params }) });
      const body = (await res.json()) as Record<string, unknown>;
      return [res.status, body.error, body.error_description];
    };
    const signed = (claims: Record<string, unknown>, alg = 'ES256', signer = key) => new SignJWT(claims).setProtectedHeader({ alg }).sign(signer);
    const now = Math.floor(Date.now() / 1000);
    const base = { iss: id, sub: id, aud, jti: randomUUID(), iat: now, exp: now + 60 };
    const generic = [401, 'invalid_client', 'client authentication failed'];
    // Signed by the client's key: each was "client authentication failed".
    expect(await send({ client_assertion: await signed({ ...base, aud: 'https://elsewhere.example/token' }) })).toEqual([401, 'invalid_client', 'client_assertion: audience (aud) must equal the endpoint url, issuer identifier or token endpoint url']);
    expect(await send({ client_assertion: await signed({ ...base, jti: undefined }) })).toEqual([401, 'invalid_client', 'client_assertion: unique jti (JWT ID) must be provided in the client_assertion JWT']);
    expect(await send({ client_assertion: await signed({ ...base, iat: now - 600, exp: now - 300 }) })).toEqual([401, 'invalid_client', 'client_assertion: jwt expired']);
    const rs384 = (await importJWK(keys.RS256.privateJwk, 'RS384')) as SigningKey;
    const rsId = clientOf('RS256');
    expect(await send({ client_assertion: await signed({ ...base, iss: rsId, sub: rsId }, 'RS384', rs384) })).toEqual([401, 'invalid_client', 'client_assertion: its alg is not one accepted for this client (its token_endpoint_auth_signing_alg, else token_endpoint_auth_signing_alg_values_supported)']);
    const once = await signed({ ...base, jti: randomUUID() });
    expect((await send({ client_assertion: once }))[0]).toBe(200);
    expect(await send({ client_assertion: once })).toEqual([401, 'invalid_client', 'client_assertion: client assertion tokens must only be used once']);
    // RFC 7523 §3.2: an assertion that is no JWT is invalid_client too (it was 400 invalid_request).
    expect(await send({ client_assertion: 'not-a-jwt' })).toEqual([401, 'invalid_client', 'client_assertion: not a JWT (RFC 7523 section 3)']);
    // Not signed by the client's key: the same answer as for a client that does not exist, or one registered for
    // another method, whatever is wrong with it (oidc-provider checks the alg and claims before the signature, so a
    // detail here would say that the client exists, uses private_key_jwt, and which algorithms and keys it has).
    const stranger = (await keyPair('ES256')).privateKey;
    const forged = [
      await signed({ ...base, aud: 'https://elsewhere.example/token' }, 'ES256', stranger),
      await signed({ ...base, jti: undefined }, 'ES256', stranger),
      await signed(base, 'ES256', stranger),
      await signed(base, 'EdDSA', keys.EdDSA.privateKey),
      await signed({ ...base, iss: rsId, sub: rsId }, 'ES256', stranger),
      `${(await signed(base)).split('.').slice(0, 2).join('.')}.AAAA`,
    ];
    for (const assertion of forged) expect(await send({ client_assertion: assertion })).toEqual(generic);
    expect(await send({ client_assertion: await signed({ ...base, iss: 'nobody', sub: 'nobody' }) })).toEqual(generic);
    expect(await send({ client_assertion: await signed({ ...base, iss: RS_CLIENT.id, sub: RS_CLIENT.id }) })).toEqual(generic);
  });

  test('an RS256 client introspects (another client\'s token and its own) and revokes its own: active, then inactive', async () => {
    const rsKey = keys.RS256.privateKey;
    const others = (await ccToken(clientOf('ES256'), 'ES256', keys.ES256.privateKey)).body.access_token as string;
    const seen = await post('/token/introspection', 'rs-rsa', 'RS256', rsKey, { token: others });
    expect([seen.status, seen.body.active, seen.body.client_id]).toEqual([200, true, clientOf('ES256')]);
    const own = (await ccToken('rs-rsa', 'RS256', rsKey)).body.access_token as string;
    expect((await post('/token/introspection', 'rs-rsa', 'RS256', rsKey, { token: own })).body.active).toBe(true);
    const revoked = await post('/token/revocation', 'rs-rsa', 'RS256', rsKey, { token: own });
    expect(revoked.status).toBe(200);
    // Another key under rs-rsa's name: refused, whatever the token's state.
    const forged = await post('/token/introspection', 'rs-rsa', 'PS256', keys.PS256.privateKey, { token: own });
    expect([forged.status, forged.body.error]).toEqual([401, 'invalid_client']);
    const inactive = await post('/token/introspection', 'rs-rsa', 'RS256', rsKey, { token: own });
    expect([inactive.status, inactive.body.active]).toEqual([200, false]);
  });
});
