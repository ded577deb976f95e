import type { Wallet } from 'ethers';
import * as oidc from 'openid-client';

import { register, REDIRECT, RESOURCE } from './agent-server.js';
import { authorizeWithWallet } from './user-agent.js';
import type { UserAgent } from './user-agent.js';

/** Helpers for single-use races: many concurrent requests, each over its own connection, and what they answered. */

export const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
export const form = (params: Record<string, string>) => new URLSearchParams(params).toString();

export interface RaceResult {
  status: number;
  body: Record<string, unknown>;
}

/** Starts `n` requests at once and waits for every answer. */
export async function all(n: number, fire: (i: number) => Promise<Response>): Promise<RaceResult[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const res = await fire(i);
      const text = await res.text();
      return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
    }),
  );
}

export const statuses = (results: Array<{ status: number }>) => results.map((r) => r.status).sort().join(',');
/** The refusals among `results`, each as `<status> <error>`: an assertion on them shows what came back. */
export const refusals = (results: RaceResult[]) => results.filter((r) => r.status !== 200).map((r) => `${r.status} ${String(r.body.error)}`);

export interface CodeGrant {
  clientId: string;
  secret: string;
  code: string;
  verifier: string;
}

/**
 * Registers a confidential code-flow client (no DPoP, so every redemption request may be identical) at `issuer` and
 * signs `wallet` in through the login pages: one unredeemed authorization code.
 */
export async function codeFor(issuer: string, wallet: Wallet): Promise<CodeGrant> {
  const created = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
  if (created.status !== 201) throw new Error(`registration answered ${created.status}: ${JSON.stringify(created.body)}`);
  const clientId = created.body.client_id as string;
  const secret = created.body.client_secret as string;
  return { clientId, secret, ...(await walletCode(issuer, clientId, wallet)) };
}

/** `wallet` signs in through the login pages for `clientId` (PKCE S256, scope read, RESOURCE, REDIRECT unless told): an unredeemed code and its verifier. */
export async function walletCode(issuer: string, clientId: string, wallet: Wallet, scope = 'read', redirect = REDIRECT): Promise<{ code: string; verifier: string; agent: UserAgent }> {
  const verifier = oidc.randomPKCECodeVerifier();
  const url = new URL(`${issuer}/auth`);
  const params = { client_id: clientId, response_type: 'code', redirect_uri: redirect, scope, resource: RESOURCE, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const { callback, agent } = await authorizeWithWallet(url, redirect, { wallet });
  const code = callback.searchParams.get('code');
  if (!code) throw new Error(`no code in ${callback.href}`);
  // The browser stand-in that signed in: its cookies are the person's sign-in session here.
  return { code, verifier, agent };
}

/** The form of a code redemption for `c`. */
export const redemption = (c: CodeGrant) => form({ grant_type: 'authorization_code', code: c.code, code_verifier: c.verifier, redirect_uri: REDIRECT, resource: RESOURCE });

/** The form of a refresh of `token`. */
export const refreshing = (token: string) => form({ grant_type: 'refresh_token', refresh_token: token, resource: RESOURCE });

/**
 * One DPoP proof for a client_credentials request to `${issuer}/token`, built once by openid-client
 * (oauth4webapi-style: htm, htu, iat, jti) and captured instead of sent, so that it can be sent many times.
 */
export async function oneDpopProof(issuer: string, clientId: string, secret: string): Promise<string> {
  const key = await oidc.randomDPoPKeyPair('ES256');
  const config = new oidc.Configuration({ issuer, token_endpoint: `${issuer}/token` }, clientId, secret);
  let proof: string | undefined;
  const capture: typeof fetch = async (_url, init) => {
    proof = new Headers(init?.headers).get('dpop') ?? undefined;
    return new Response(JSON.stringify({ access_token: 'x', token_type: 'DPoP' }), { headers: { 'content-type': 'application/json' } });
  };
  config[oidc.customFetch] = capture as never;
  oidc.allowInsecureRequests(config);
  await oidc.clientCredentialsGrant(config, { resource: RESOURCE }, { DPoP: oidc.getDPoPHandle(config, key) }).catch(() => undefined);
  if (!proof) throw new Error('openid-client sent no DPoP proof');
  return proof;
}
