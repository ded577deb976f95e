import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { availableParallelism } from 'node:os';

import { calculateJwkThumbprint, createRemoteJWKSet, jwtVerify } from 'jose';
import type { JWK } from 'jose';

import { loadConfig } from '../../server/config.js';
import { installInlineSignatures } from '../../server/crypto/inline-signatures.js';
import { installPublicKeyImportCache } from '../../server/crypto/public-key-import-cache.js';
import type { PublicKeyImportCache } from '../../server/crypto/public-key-import-cache.js';
import { createLogger } from '../../server/logger.js';
import { start } from '../../server/start.js';
import type { Running } from '../../server/start.js';
import { freePort } from '../support/ferretdb.js';
import { newKek, tempDir, writeConfig } from '../support/server.js';

/**
 * The DPoP key cache as agentauth runs it: a server started in this process (SQLite store) installs the cache at
 * boot, and DPoP proofs at the token endpoint, for oidc-provider's client_credentials grant and for agentauth's own
 * token-exchange grant (which calls oidc-provider's validateDpop), import a key they have seen before from the cache.
 * Every check made on a proof under a cached key: test/http/dpop.test.ts; the cache itself: test/unit/dpop-key-cache.test.ts.
 */
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const API_A = 'https://a.example.com';
const API_B = 'https://b.example.com';
const AGENT = { id: 'agent', secret: 'agent-secret-0123456789abcdefghijklmnop' };
const CONFIG = {
  resourceServers: [
    { identifier: API_A, scopes: ['read'] },
    { identifier: API_B, scopes: ['read'] },
  ],
  clients: [{ client_id: AGENT.id, client_secret: AGENT.secret, grant_types: ['client_credentials', EXCHANGE], tier: 'bound' }],
  tokenExchange: { rules: [{ clients: [AGENT.id], from: [API_A], to: [API_B] }] },
};

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
interface Key {
  privateKey: KeyObject;
  jwk: Record<string, unknown>;
}
const ecKey = (): Key => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, jwk: publicKey.export({ format: 'jwk' }) as Record<string, unknown> };
};
function proof(key: Key, htu: string, signer = key.privateKey): string {
  const input = `${b64({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk })}.${b64({ htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), jti: randomUUID() })}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key: signer, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}

describe('the DPoP key cache in a running agentauth', () => {
  let running: Running;
  let url: string;
  let cache: PublicKeyImportCache;

  beforeAll(async () => {
    const port = await freePort();
    const env = { AGENTAUTH_CONFIG: writeConfig(tempDir(), CONFIG), AGENTAUTH_KEK: newKek(), AGENTAUTH_DATA_DIR: tempDir('agentauth-dpop-cache-'), PORT: String(port), HOST: '127.0.0.1' };
    // As many processes as cores, as `--workers N` with N ≥ cores: boot also computes signatures on the event loop.
    running = await start(loadConfig(env), createLogger('silent'), { processes: availableParallelism() });
    url = `http://127.0.0.1:${port}`;
    // boot() installed it; installing again hands back the same cache.
    cache = installPublicKeyImportCache();
  });
  afterAll(async () => {
    await running?.shutdown();
  });

  const token = async (params: Record<string, string>, dpop: string) => {
    const res = await fetch(`${url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${AGENT.id}:${AGENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded', dpop },
      body: new URLSearchParams(params),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  test('client_credentials, then token exchange (agentauth grant): the proof key is imported once; a forged proof under it is still refused', async () => {
    const key = ecKey();
    const start = { hits: cache.hits, misses: cache.misses };
    const first = await token({ grant_type: 'client_credentials', resource: API_A, scope: 'read' }, proof(key, `${url}/token`));
    expect(first).toMatchObject({ status: 200, body: { token_type: 'DPoP' } });
    expect(cache.misses - start.misses).toBe(1);
    const second = await token({ grant_type: 'client_credentials', resource: API_A, scope: 'read' }, proof(key, `${url}/token`));
    expect(second.status).toBe(200);
    expect(cache.hits - start.hits).toBe(1);
    expect(cache.misses - start.misses).toBe(1);

    // (Verifying the subject token may import agentauth's own public signing key: a miss the first time, so only
    // the hit for the proof key is counted here.)
    const exchanged = await token(
      { grant_type: EXCHANGE, subject_token: first.body.access_token as string, subject_token_type: AT_TYPE, resource: API_B, scope: 'read' },
      proof(key, `${url}/token`),
    );
    expect(exchanged).toMatchObject({ status: 200, body: { token_type: 'DPoP' } });
    expect(cache.hits - start.hits).toBeGreaterThanOrEqual(2);

    const before = { hits: cache.hits, misses: cache.misses };
    const forged = await token({ grant_type: 'client_credentials', resource: API_A, scope: 'read' }, proof(key, `${url}/token`, ecKey().privateKey));
    expect(forged).toMatchObject({ status: 400, body: { error: 'invalid_dpop_proof' } });
    expect(cache.misses).toBe(before.misses);
    expect(cache.hits).toBe(before.hits + 1);
  });

  test('with as many processes as cores, boot also put the inline ECDSA/Ed25519 sign and verify in front of WebCrypto: proofs are verified and tokens signed on the event loop', async () => {
    const subtle = globalThis.crypto.subtle;
    expect(Object.getOwnPropertyDescriptor(subtle, Symbol.for('agentauth.inlineSignatures'))?.value).toBe(true);
    expect(installInlineSignatures()).toBe(false);
    // A token signed that way (its DPoP proof verified that way too) verifies against the server's published keys;
    // test/unit/inline-signatures.test.ts compares both directions with WebCrypto itself.
    const key = ecKey();
    const issued = await token({ grant_type: 'client_credentials', resource: API_A, scope: 'read' }, proof(key, `${url}/token`));
    expect(issued.status).toBe(200);
    const metadata = (await (await fetch(`${url}/.well-known/oauth-authorization-server`)).json()) as { issuer: string; jwks_uri: string };
    const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri.replace(metadata.issuer, url)));
    const { payload } = await jwtVerify(issued.body.access_token as string, jwks, { issuer: metadata.issuer, audience: API_A });
    expect(payload.cnf).toEqual({ jkt: await calculateJwkThumbprint(key.jwk as JWK) });
  });
});
