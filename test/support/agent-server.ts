import * as oidc from 'openid-client';

import { DEFAULT_TIERS } from '../../server/config.js';
import { mongoUri } from './storages.js';
import { newKek, startServer, tempDir, uniqueDbName, writeConfig } from './server.js';
import type { RunningServer } from './server.js';

export const RESOURCE = 'https://api.example.com';
export const OPAQUE_RESOURCE = 'https://opaque.example.com';
export const RS_CLIENT = { id: 'resource-server', secret: 'resource-server-secret-0123456789abcdefgh' };
export const REDIRECT = 'http://127.0.0.1:65000/callback';

export function baseConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    resourceServers: [
      { identifier: RESOURCE, scopes: ['read', 'write'], accessTokenTTL: 300 },
      { identifier: OPAQUE_RESOURCE, scopes: ['files'], accessTokenFormat: 'opaque' },
    ],
    // A resource server's own credentials, used to introspect tokens (RFC 7662).
    clients: [{ client_id: RS_CLIENT.id, client_secret: RS_CLIENT.secret, grant_types: ['client_credentials'] }],
    ...extra,
  };
}

/**
 * The shipped tiers without the refresh grace (refreshGraceSeconds 0): for tests of reuse detection itself, where any
 * second use of a rotated refresh token must revoke the grant. The grace has its own tests (public-refresh.test.ts).
 */
export const STRICT_REFRESH_TIERS = Object.fromEntries(Object.entries(DEFAULT_TIERS).map(([name, tier]) => [name, { ...tier, refreshGraceSeconds: 0 }]));

export interface AgentServer {
  server: RunningServer;
  env: Record<string, string>;
  dbName: string;
}

export async function startAgentServer(config: Record<string, unknown> = baseConfig(), env: Record<string, string> = {}): Promise<AgentServer> {
  const dbName = uniqueDbName('agent');
  const fullEnv = {
    AGENTAUTH_CONFIG: writeConfig(tempDir(), config),
    MONGODB_URI: mongoUri(),
    MONGODB_DB: dbName,
    AGENTAUTH_KEK: newKek(),
    ...env,
  };
  return { server: await startServer(fullEnv), env: fullEnv, dbName };
}

/** openid-client options for a plain-http test issuer. */
export const insecure = { execute: [oidc.allowInsecureRequests] };

export async function register(issuer: string, metadata: Record<string, unknown>, init: RequestInit = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${issuer}/reg`, {
    method: 'POST',
    ...init,
    headers: { 'content-type': 'application/json', ...(init.headers as Record<string, string> | undefined) },
    body: JSON.stringify(metadata),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, headers: res.headers };
}

export async function introspect(issuer: string, token: string, accept = 'application/json'): Promise<Record<string, unknown>> {
  const res = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
      accept,
    },
    body: new URLSearchParams({ token }),
  });
  if (res.status !== 200) throw new Error(`introspection answered ${res.status}: ${await res.text()}`);
  return accept === 'application/json' ? ((await res.json()) as Record<string, unknown>) : { jwt: await res.text(), type: res.headers.get('content-type') };
}

/** HTTP Basic client authentication, with id and secret form-encoded first (RFC 6749 §2.3.1). */
export const basicAuth = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

/** An opaque access token: client_credentials for OPAQUE_RESOURCE, as the resource server's client of baseConfig. */
export async function opaqueToken(issuer: string): Promise<string> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: basicAuth(RS_CLIENT.id, RS_CLIENT.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: OPAQUE_RESOURCE, scope: 'files' }),
  });
  return ((await res.json()) as { access_token: string }).access_token;
}

/** A client_credentials token request for RESOURCE with scope `read`, authenticated with HTTP Basic. */
export async function clientCredentialsToken(issuer: string, id: string, secret: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { authorization: basicAuth(id, secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/**
 * A configuration for key rotation tests: the resource server and its client, every access token living `ttl`
 * seconds (so the retire grace is `ttl` + `clockSkewSeconds`), and keys re-read every second.
 */
export function fastKeysConfig(ttl: number, clockSkewSeconds: number): Record<string, unknown> {
  const tier = { accessTokenTTL: ttl, refreshTokenIdleTTL: 60, refreshTokenAbsoluteTTL: 120, dpop: 'optional', dpopNonce: false };
  return {
    resourceServers: [{ identifier: RESOURCE, scopes: ['read'], accessTokenTTL: ttl }],
    clients: [{ client_id: RS_CLIENT.id, client_secret: RS_CLIENT.secret, grant_types: ['client_credentials'] }],
    tiers: { standard: tier, bound: { ...tier, dpop: 'required' }, strict: { ...tier, dpop: 'required', dpopNonce: true } },
    keys: { refreshIntervalSeconds: 1, clockSkewSeconds },
  };
}
