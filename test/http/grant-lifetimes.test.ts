import { Wallet } from 'ethers';
import { decodeJwt } from 'jose';
import * as oidc from 'openid-client';

import { SqliteStorage } from '../../adapters/sqlite.js';
import { insecure, REDIRECT, RESOURCE } from '../support/agent-server.js';
import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { authorizeWithWallet } from '../support/user-agent.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';

/**
 * A grant lives as long as its client's tier says (`refreshTokenAbsoluteTTL`), whichever way it was made: the wallet
 * grant, consent in the code flow, and token exchange (whose grant lives as long as its token). oidc-provider computes
 * a grant's lifetime from the client the grant was built with; built from a client id alone it used to get the default
 * tier's. And an exchanged token ends no later than the grant of the token it came from.
 */
const WALLET_GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const NEXT = 'https://next.example.com';
const SHORT_GRANT = 60;
const LONG_GRANT = 86_400;
const secretOf = (id: string) => `${id}-secret-0123456789abcdefghijklmnop`;
const wallet = new Wallet('0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba');

const CONFIG = {
  resourceServers: [
    { identifier: RESOURCE, scopes: ['read', 'write'], accessTokenTTL: 300 },
    { identifier: NEXT, scopes: ['read'], accessTokenTTL: 300 },
  ],
  tiers: {
    short: { accessTokenTTL: 300, refreshTokenIdleTTL: 60, refreshTokenAbsoluteTTL: SHORT_GRANT, dpop: 'optional', dpopNonce: false },
    long: { accessTokenTTL: 300, refreshTokenIdleTTL: 3600, refreshTokenAbsoluteTTL: LONG_GRANT, dpop: 'optional', dpopNonce: false },
  },
  registration: { defaultTier: 'short' },
  clients: [
    { client_id: 'long-wallet', client_secret: secretOf('long-wallet'), grant_types: [WALLET_GRANT], scope: 'read', tier: 'long' },
    { client_id: 'short-wallet', client_secret: secretOf('short-wallet'), grant_types: [WALLET_GRANT], scope: 'read', tier: 'short' },
    { client_id: 'long-web', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: [REDIRECT], scope: 'read', tier: 'long' },
    { client_id: 'skill', client_secret: secretOf('skill'), grant_types: [EXCHANGE], tier: 'long' },
  ],
  tokenExchange: { rules: [{ clients: ['skill'], from: [RESOURCE], to: [NEXT] }] },
};

let server: RunningServer;
let env: Record<string, string>;
let meta: oidc.ServerMetadata;

beforeAll(async () => {
  ({ env, server } = await startConfigured(CONFIG));
  meta = (await oidc.discovery(new URL(server.url), 'long-wallet', undefined, oidc.ClientSecretBasic(secretOf('long-wallet')), insecure)).serverMetadata();
});

afterAll(async () => {
  await server?.stop();
});

function confidential(id: string): oidc.Configuration {
  const config = new oidc.Configuration(meta, id, secretOf(id), oidc.ClientSecretBasic(secretOf(id)));
  oidc.allowInsecureRequests(config);
  return config;
}

/** The stored grant of a JWT access token: seconds from now until it expires. */
async function grantLifetime(accessToken: string): Promise<number> {
  return (await grantExp(accessToken)) - Math.floor(Date.now() / 1000);
}

async function walletToken(clientId: string): Promise<string> {
  const { message, signature } = await signedSiwe(server.url, wallet, { address: wallet.address, nonce: await fetchNonce(server.url, clientId) });
  const tokens = await oidc.genericGrantRequest(confidential(clientId), WALLET_GRANT, { message, signature, resource: RESOURCE, scope: 'read' });
  return tokens.access_token;
}

/** When the stored grant of a JWT access token expires (epoch s). */
async function grantExp(accessToken: string): Promise<number> {
  const grantId = decodeJwt(accessToken).grant_id;
  expect(typeof grantId).toBe('string');
  const storage = new SqliteStorage({ dataDir: env.AGENTAUTH_DATA_DIR! });
  await storage.init();
  try {
    const grant = await storage.model('Grant').find(grantId as string);
    expect(typeof grant?.exp).toBe('number');
    return grant!.exp as number;
  } finally {
    await storage.close();
  }
}

test('the wallet grant: the grant lives as long as the client\'s tier says, not the default tier', async () => {
  const long = await grantLifetime(await walletToken('long-wallet'));
  expect(long).toBeGreaterThan(LONG_GRANT - 30);
  expect(long).toBeLessThanOrEqual(LONG_GRANT);
  const short = await grantLifetime(await walletToken('short-wallet'));
  expect(short).toBeGreaterThan(SHORT_GRANT - 30);
  expect(short).toBeLessThanOrEqual(SHORT_GRANT);
});

test('consent in the code flow: the grant lives as long as the client\'s tier says', async () => {
  const client = new oidc.Configuration(meta, 'long-web', undefined, oidc.None());
  oidc.allowInsecureRequests(client);
  const verifier = oidc.randomPKCECodeVerifier();
  const url = oidc.buildAuthorizationUrl(client, { redirect_uri: REDIRECT, scope: 'read', resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
  const { callback } = await authorizeWithWallet(url, REDIRECT, { wallet });
  const tokens = await oidc.authorizationCodeGrant(client, callback, { pkceCodeVerifier: verifier }, { resource: RESOURCE });
  const lifetime = await grantLifetime(tokens.access_token);
  expect(lifetime).toBeGreaterThan(LONG_GRANT - 30);
  expect(lifetime).toBeLessThanOrEqual(LONG_GRANT);
});

test('token exchange: the new token ends no later than the grant of the token it came from, and its own grant with it', async () => {
  // The subject's grant (tier short) ends in a minute, its token in five.
  const subject = await walletToken('short-wallet');
  expect((decodeJwt(subject).exp as number) - Math.floor(Date.now() / 1000)).toBeGreaterThan(SHORT_GRANT + 60);
  const exchanged = await oidc.genericGrantRequest(confidential('skill'), EXCHANGE, { subject_token: subject, subject_token_type: AT_TYPE, resource: NEXT });
  expect(exchanged.expires_in).toBeLessThanOrEqual(SHORT_GRANT);
  expect(exchanged.expires_in).toBeGreaterThan(SHORT_GRANT - 30);
  // Its grant ends with it (a few seconds later), measured against the token's own exp, not the clock.
  const tokenExp = decodeJwt(exchanged.access_token).exp!;
  const exchangedGrant = await grantExp(exchanged.access_token);
  expect(exchangedGrant - tokenExp).toBeGreaterThanOrEqual(0);
  expect(exchangedGrant - tokenExp).toBeLessThanOrEqual(6);
  // From a token whose grant outlives it, the token's own lifetime is the bound (and the tier's 300 s).
  const fromLong = await oidc.genericGrantRequest(confidential('skill'), EXCHANGE, { subject_token: await walletToken('long-wallet'), subject_token_type: AT_TYPE, resource: NEXT });
  expect(fromLong.expires_in).toBeGreaterThan(240);
  expect((await grantExp(fromLong.access_token)) - decodeJwt(fromLong.access_token).exp!).toBeLessThanOrEqual(6);
});
