import type { Wallet } from 'ethers';

import { register, REDIRECT, RESOURCE } from './agent-server.js';
import { form, walletCode } from './races.js';

/** A public client without DPoP (the MCP SDK's default client): sign-in through the code flow, and its refreshes. */

export interface PublicTokens {
  access_token: string;
  refresh_token?: string;
  token_type: string;
  expires_in: number;
}

/** Registers a public client (no secret, no DPoP) at `issuer`, signs `wallet` in: the token response of its code redemption. */
export async function signInPublic(issuer: string, wallet: Wallet): Promise<{ clientId: string; tokens: PublicTokens }> {
  const created = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', scope: 'read' });
  if (created.status !== 201) throw new Error(`registration answered ${created.status}: ${JSON.stringify(created.body)}`);
  const clientId = created.body.client_id as string;
  const { code, verifier } = await walletCode(issuer, clientId, wallet);
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: REDIRECT, resource: RESOURCE, client_id: clientId }),
  });
  const tokens = (await res.json()) as PublicTokens;
  if (res.status !== 200) throw new Error(`code redemption answered ${res.status}: ${JSON.stringify(tokens)}`);
  return { clientId, tokens };
}

/** The form body of a public client's refresh of `token`. */
export const publicRefreshForm = (clientId: string, token: string) => form({ grant_type: 'refresh_token', refresh_token: token, resource: RESOURCE, client_id: clientId });

/** A public client's refresh of `token` at `issuer`. */
export const publicRefresh = (issuer: string, clientId: string, token: string) =>
  fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: publicRefreshForm(clientId, token) });

/** The same, with its status and JSON body read. */
export async function publicRefreshed(issuer: string, clientId: string, token: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await publicRefresh(issuer, clientId, token);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A `standard` tier for public clients without DPoP whose refresh grace is `graceSeconds` (long refresh lifetimes). */
export const publicTier = (graceSeconds: number) => ({
  accessTokenTTL: 300, refreshTokenIdleTTL: 3600, refreshTokenAbsoluteTTL: 86400, dpop: 'optional', dpopNonce: false, refreshGraceSeconds: graceSeconds,
});
