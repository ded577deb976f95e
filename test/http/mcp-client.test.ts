import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

import { auth, discoverAuthorizationServerMetadata, extractWWWAuthenticateParams, refreshAuthorization } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { InvalidGrantError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { Wallet } from 'ethers';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';

import { authorizeWithWallet } from '../support/user-agent.js';
import { baseConfig, introspect, startAgentServer, STRICT_REFRESH_TIERS } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';

const wallet = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
const SUB = `did:pkh:eip155:1:${wallet.address}`;
const MCP_SCOPE = 'mcp:tools';

/** One HTTP request the MCP SDK made, as seen through the fetchFn it was given. */
interface WireRecord {
  method: string;
  url: string;
  status: number;
  /** How the client authenticated: HTTP Basic, client_id in the body (public), or not at all. */
  clientAuth: 'basic' | 'body' | 'none';
  form?: Record<string, string>;
  json?: Record<string, unknown>;
}

/** The fetch handed to the SDK: a plain fetch that records what goes over the wire. */
function recordingFetch(log: WireRecord[]) {
  return async (url: string | URL, init?: RequestInit): Promise<Response> => {
    const res = await fetch(url, init);
    const headers = new Headers(init?.headers);
    const record: WireRecord = { method: init?.method ?? 'GET', url: String(url), status: res.status, clientAuth: 'none' };
    if (init?.body instanceof URLSearchParams) {
      record.form = Object.fromEntries(init.body);
      if (record.form.client_id) record.clientAuth = 'body';
    } else if (typeof init?.body === 'string') {
      record.json = JSON.parse(init.body) as Record<string, unknown>;
    }
    if (headers.get('authorization')?.startsWith('Basic ')) record.clientAuth = 'basic';
    log.push(record);
    return res;
  };
}

/** An OAuthClientProvider kept in memory: what an MCP host application implements to persist OAuth state. */
class MemoryProvider implements OAuthClientProvider {
  info: OAuthClientInformationMixed | undefined;
  saved: OAuthTokens | undefined;
  verifier: string | undefined;
  authorizationUrl: URL | undefined;
  readonly invalidated: string[] = [];
  readonly stateValue = randomBytes(16).toString('base64url');

  constructor(private readonly redirect: string) {}

  get redirectUrl(): string {
    return this.redirect;
  }

  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: 'MCP SDK test client',
      redirect_uris: [this.redirect],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      // The MCP SDK sends no DPoP proofs, and agentauth issues refresh tokens to public clients only when the
      // token request is DPoP-bound (RFC 9449 §5). A confidential client's refresh tokens are bound to its
      // credentials instead, so register with a secret to get (rotating) refresh tokens.
      token_endpoint_auth_method: 'client_secret_basic',
    };
  }

  state(): string {
    return this.stateValue;
  }

  clientInformation(): OAuthClientInformationMixed | undefined {
    return this.info;
  }

  saveClientInformation(info: OAuthClientInformationMixed): void {
    this.info = info;
  }

  tokens(): OAuthTokens | undefined {
    return this.saved;
  }

  saveTokens(tokens: OAuthTokens): void {
    this.saved = tokens;
  }

  redirectToAuthorization(url: URL): void {
    this.authorizationUrl = url;
  }

  saveCodeVerifier(verifier: string): void {
    this.verifier = verifier;
  }

  codeVerifier(): string {
    if (!this.verifier) throw new Error('no code verifier saved');
    return this.verifier;
  }

  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery'): void {
    this.invalidated.push(scope);
    if (scope === 'all' || scope === 'tokens') this.saved = undefined;
    if (scope === 'all' || scope === 'client') this.info = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
  }
}

/**
 * A stand-in MCP server: serves its RFC 9728 protected resource metadata naming agentauth, challenges requests
 * without a valid token with 401 + WWW-Authenticate (as the MCP authorization spec requires), and accepts
 * ES256 access tokens agentauth issued for it.
 */
class McpResource {
  readonly server: Server;
  readonly seen: Array<{ method: string; path: string; authorized: boolean }> = [];
  issuer = '';

  constructor() {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err));
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
  }

  get origin(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  get resource(): string {
    return `${this.origin}/mcp`;
  }

  get metadataUrl(): string {
    return `${this.origin}/.well-known/oauth-protected-resource/mcp`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', this.origin).pathname;
    const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    this.seen.push({ method: req.method ?? 'GET', path, authorized: token !== undefined });
    if (path === '/.well-known/oauth-protected-resource/mcp' || path === '/.well-known/oauth-protected-resource') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ resource: this.resource, authorization_servers: [this.issuer], scopes_supported: [MCP_SCOPE], bearer_methods_supported: ['header'] }),
      );
      return;
    }
    if (path !== '/mcp') {
      res.writeHead(404).end();
      return;
    }
    const challenge = `Bearer resource_metadata="${this.metadataUrl}", scope="${MCP_SCOPE}"`;
    if (!token) {
      res.writeHead(401, { 'www-authenticate': challenge }).end();
      return;
    }
    try {
      const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`${this.issuer}/jwks`)), {
        issuer: this.issuer,
        audience: this.resource,
        typ: 'at+jwt',
        algorithms: ['ES256'],
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sub: payload.sub, scope: payload.scope }));
    } catch {
      res.writeHead(401, { 'www-authenticate': `${challenge}, error="invalid_token"` }).end();
    }
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

describe('the official MCP TypeScript SDK OAuth client (auth()) against agentauth', () => {
  const mcp = new McpResource();
  const wire: WireRecord[] = [];
  const fetchFn = recordingFetch(wire);
  let as: AgentServer;
  let issuer: string;
  let provider: MemoryProvider;
  let resourceMetadataUrl: URL | undefined;
  let firstTokens: OAuthTokens;

  const paths = (records: WireRecord[]) => records.map((r) => `${r.method} ${r.url.replace(issuer, '{as}').replace(mcp.origin, '{mcp}')} ${r.status}`);

  beforeAll(async () => {
    // The MCP server's port, and so its resource identifier, is fixed before agentauth starts: agentauth must know
    // the exact resource URI (RFC 8707) the SDK will send, which is the `resource` of the metadata, sent verbatim.
    await mcp.listen();
    as = await startAgentServer(
      baseConfig({
        resourceServers: [{ identifier: mcp.resource, name: 'Test MCP server', scopes: [MCP_SCOPE, 'mcp:prompts'], accessTokenTTL: 300 }],
        // The reuse test below expects an immediate reuse to revoke: no refresh grace.
        tiers: STRICT_REFRESH_TIERS,
      }),
    );
    issuer = as.server.url;
    mcp.issuer = issuer;
    provider = new MemoryProvider(`${mcp.origin}/callback`);
  });

  afterAll(async () => {
    await as?.server.stop();
    await mcp.close();
  });

  test('the MCP server challenges an unauthenticated request; the SDK finds the protected resource metadata URL in WWW-Authenticate', async () => {
    const res = await fetch(mcp.resource, { method: 'POST' });
    expect(res.status).toBe(401);
    const params = extractWWWAuthenticateParams(res);
    expect(params.resourceMetadataUrl?.href).toBe(mcp.metadataUrl);
    expect(params.scope).toBe(MCP_SCOPE);
    resourceMetadataUrl = params.resourceMetadataUrl;
  });

  test('auth(): RFC 9728 + RFC 8414 discovery, dynamic client registration, then an authorization request with PKCE S256 and resource', async () => {
    expect(resourceMetadataUrl).toBeDefined();
    const result = await auth(provider, { serverUrl: mcp.resource, resourceMetadataUrl: resourceMetadataUrl!, fetchFn });
    expect(result).toBe('REDIRECT');

    expect(paths(wire)).toEqual([
      'GET {mcp}/.well-known/oauth-protected-resource/mcp 200',
      'GET {as}/.well-known/oauth-authorization-server 200',
      'POST {as}/reg 201',
    ]);
    // The registration request: the provider's metadata plus the scope the protected resource metadata advertises.
    expect(wire[2]!.json).toEqual({ ...provider.clientMetadata, scope: MCP_SCOPE });

    // The SDK keeps what agentauth returned, stamped with the authorization server it registered at.
    const info = provider.info as Record<string, unknown>;
    expect(info.issuer).toBe(issuer);
    expect(typeof info.client_id).toBe('string');
    expect(typeof info.client_secret).toBe('string');
    expect(info.token_endpoint_auth_method).toBe('client_secret_basic');
    expect(info.redirect_uris).toEqual([provider.redirectUrl]);

    const url = provider.authorizationUrl!;
    expect(`${url.origin}${url.pathname}`).toBe(`${issuer}/auth`);
    const q = url.searchParams;
    expect(q.get('response_type')).toBe('code');
    expect(q.get('client_id')).toBe(info.client_id);
    expect(q.get('redirect_uri')).toBe(provider.redirectUrl);
    expect(q.get('resource')).toBe(mcp.resource);
    expect(q.get('scope')).toBe(MCP_SCOPE);
    expect(q.get('state')).toBe(provider.stateValue);
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(provider.verifier).toMatch(/^[A-Za-z0-9._~-]{43,128}$/);
  });

  test('wallet login + consent, then auth() with the code: an ES256 at+jwt for the MCP server, accepted by it and introspecting active', async () => {
    const outcome = await authorizeWithWallet(provider.authorizationUrl!, provider.redirectUrl, { wallet });
    expect(outcome.pages.some((p) => p.includes('Allow access?') && p.includes('MCP SDK test client') && p.includes(mcp.resource) && p.includes(`<code>${MCP_SCOPE}</code>`))).toBe(true);
    const callback = outcome.callback.searchParams;
    expect(callback.get('state')).toBe(provider.stateValue);
    expect(callback.get('iss')).toBe(issuer);
    const code = callback.get('code');
    expect(code).toBeTruthy();

    const before = wire.length;
    const result = await auth(provider, { serverUrl: mcp.resource, resourceMetadataUrl: resourceMetadataUrl!, authorizationCode: code!, fetchFn });
    expect(result).toBe('AUTHORIZED');
    const exchange = wire.slice(before);
    expect(paths(exchange)).toEqual([
      'GET {mcp}/.well-known/oauth-protected-resource/mcp 200',
      'GET {as}/.well-known/oauth-authorization-server 200',
      'POST {as}/token 200',
    ]);
    const tokenRequest = exchange[2]!;
    expect(tokenRequest.clientAuth).toBe('basic');
    expect(tokenRequest.form).toEqual({
      grant_type: 'authorization_code',
      code,
      code_verifier: provider.verifier,
      redirect_uri: provider.redirectUrl,
      resource: mcp.resource,
    });

    firstTokens = provider.saved!;
    expect(firstTokens).toMatchObject({ token_type: 'Bearer', expires_in: 300, scope: MCP_SCOPE, issuer });
    expect(typeof firstTokens.refresh_token).toBe('string');

    const access = firstTokens.access_token;
    expect(decodeProtectedHeader(access)).toMatchObject({ typ: 'at+jwt', alg: 'ES256' });
    const { payload } = await jwtVerify(access, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer, audience: mcp.resource, typ: 'at+jwt', algorithms: ['ES256'] });
    expect(payload).toMatchObject({ sub: SUB, client_id: provider.info!.client_id, scope: MCP_SCOPE, aud: mcp.resource });
    expect(payload.cnf).toBeUndefined();

    expect(await introspect(issuer, access)).toMatchObject({ active: true, aud: mcp.resource, sub: SUB, scope: MCP_SCOPE, token_type: 'Bearer' });
    expect(await introspect(issuer, firstTokens.refresh_token!)).toMatchObject({ active: true, client_id: provider.info!.client_id });

    const call = await fetch(mcp.resource, { method: 'POST', headers: { authorization: `Bearer ${access}` } });
    expect(call.status).toBe(200);
    expect(await call.json()).toEqual({ sub: SUB, scope: MCP_SCOPE });
  });

  test('auth() with a saved refresh token refreshes: new access and refresh tokens; the old refresh token is refused and its reuse revokes the grant', async () => {
    expect(firstTokens?.refresh_token).toBeDefined();
    const before = wire.length;
    // This SDK version refreshes whenever the saved tokens hold a refresh token (it does not look at expiry).
    const result = await auth(provider, { serverUrl: mcp.resource, resourceMetadataUrl: resourceMetadataUrl!, fetchFn });
    expect(result).toBe('AUTHORIZED');
    const refresh = wire.slice(before);
    expect(paths(refresh)).toEqual([
      'GET {mcp}/.well-known/oauth-protected-resource/mcp 200',
      'GET {as}/.well-known/oauth-authorization-server 200',
      'POST {as}/token 200',
    ]);
    expect(refresh[2]!.clientAuth).toBe('basic');
    expect(refresh[2]!.form).toEqual({ grant_type: 'refresh_token', refresh_token: firstTokens.refresh_token, resource: mcp.resource });

    const second = provider.saved!;
    expect(second.access_token).not.toBe(firstTokens.access_token);
    expect(second.refresh_token).toBeDefined();
    expect(second.refresh_token).not.toBe(firstTokens.refresh_token);
    expect(second).toMatchObject({ token_type: 'Bearer', scope: MCP_SCOPE, issuer });
    expect(decodeJwt(second.access_token)).toMatchObject({ aud: mcp.resource, sub: SUB, scope: MCP_SCOPE });
    expect((await introspect(issuer, second.access_token)).active).toBe(true);
    expect((await fetch(mcp.resource, { method: 'POST', headers: { authorization: `Bearer ${second.access_token}` } })).status).toBe(200);

    // The rotated-out refresh token, presented through the SDK's own refresh call, is refused with invalid_grant...
    const metadata = await discoverAuthorizationServerMetadata(issuer);
    const reuse = refreshAuthorization(issuer, {
      metadata,
      clientInformation: provider.info!,
      refreshToken: firstTokens.refresh_token!,
      resource: new URL(mcp.resource),
    });
    await expect(reuse).rejects.toBeInstanceOf(InvalidGrantError);
    await expect(reuse).rejects.toMatchObject({ errorCode: 'invalid_grant' });
    // ...and, as refresh-token reuse, revokes the whole grant: the current tokens die with it.
    expect(await introspect(issuer, second.access_token)).toEqual({ active: false });
    expect(await introspect(issuer, second.refresh_token!)).toEqual({ active: false });

    // The SDK then recovers as designed: invalid_grant on refresh drops the tokens and starts a new authorization.
    const again = await auth(provider, { serverUrl: mcp.resource, resourceMetadataUrl: resourceMetadataUrl!, fetchFn });
    expect(again).toBe('REDIRECT');
    expect(provider.invalidated).toEqual(['tokens']);
    expect(provider.saved).toBeUndefined();
    expect(provider.authorizationUrl!.searchParams.get('resource')).toBe(mcp.resource);
  });

  test('without a WWW-Authenticate hint the SDK probes the path-aware RFC 9728 location and reaches the same authorization request', async () => {
    const fresh = new MemoryProvider(`${mcp.origin}/callback`);
    const before = wire.length;
    expect(await auth(fresh, { serverUrl: mcp.resource, fetchFn })).toBe('REDIRECT');
    expect(paths(wire.slice(before))).toEqual([
      'GET {mcp}/.well-known/oauth-protected-resource/mcp 200',
      'GET {as}/.well-known/oauth-authorization-server 200',
      'POST {as}/reg 201',
    ]);
    expect(fresh.info!.client_id).not.toBe(provider.info!.client_id);
    const q = fresh.authorizationUrl!.searchParams;
    expect(q.get('resource')).toBe(mcp.resource);
    expect(q.get('scope')).toBe(MCP_SCOPE);
    expect(q.get('code_challenge_method')).toBe('S256');
  });
});

describe('the MCP SDK without a person: a confidential client with client_credentials, and the DCR fallback', () => {
  const mcp = new McpResource();
  const wire: WireRecord[] = [];
  const fetchFn = recordingFetch(wire);
  const M2M = { id: 'mcp-m2m-agent', secret: 'mcp-m2m-agent-secret-0123456789abcdefghij' };
  let as: AgentServer;
  let issuer: string;

  const paths = (records: WireRecord[]) => records.map((r) => `${r.method} ${r.url.replace(issuer, '{as}').replace(mcp.origin, '{mcp}')} ${r.status}`);

  beforeAll(async () => {
    await mcp.listen();
    const base = baseConfig({
      resourceServers: [{ identifier: mcp.resource, name: 'Test MCP server', scopes: [MCP_SCOPE], accessTokenTTL: 300 }],
    });
    as = await startAgentServer({
      ...base,
      clients: [...(base.clients as Record<string, unknown>[]), { client_id: M2M.id, client_secret: M2M.secret, grant_types: ['client_credentials'], scope: MCP_SCOPE }],
      // Metadata documents off (an operator's choice), so the SDK must fall back to dynamic registration.
      clientIdMetadataDocuments: { enabled: false },
    });
    issuer = as.server.url;
    mcp.issuer = issuer;
  });

  afterAll(async () => {
    await as?.server.stop();
    await mcp.close();
  });

  test('ClientCredentialsProvider: RFC 9728 + RFC 8414 discovery, client_credentials with client_secret_basic and the resource; the MCP server accepts the token', async () => {
    const provider = new ClientCredentialsProvider({ clientId: M2M.id, clientSecret: M2M.secret, expectedIssuer: issuer, scope: MCP_SCOPE });
    expect(await auth(provider, { serverUrl: mcp.resource, fetchFn })).toBe('AUTHORIZED');
    expect(paths(wire)).toEqual([
      'GET {mcp}/.well-known/oauth-protected-resource/mcp 200',
      'GET {as}/.well-known/oauth-authorization-server 200',
      'POST {as}/token 200',
    ]);
    expect(wire[2]!.clientAuth).toBe('basic');
    expect(wire[2]!.form).toMatchObject({ grant_type: 'client_credentials', resource: mcp.resource, scope: MCP_SCOPE });
    const tokens = provider.tokens()!;
    expect(tokens.token_type).toMatch(/^bearer$/i);
    expect(tokens.refresh_token).toBeUndefined(); // client_credentials: the agent asks again
    expect(decodeProtectedHeader(tokens.access_token)).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
    expect(decodeJwt(tokens.access_token)).toMatchObject({ aud: mcp.resource, client_id: M2M.id, scope: MCP_SCOPE });
    const call = await fetch(mcp.resource, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(call.status).toBe(200);
    expect((await introspect(issuer, tokens.access_token)).active).toBe(true);
  });

  test('ClientCredentialsProvider with a wrong secret: the SDK surfaces invalid_client and gets no token', async () => {
    const provider = new ClientCredentialsProvider({ clientId: M2M.id, clientSecret: `${M2M.secret}-wrong`, expectedIssuer: issuer, scope: MCP_SCOPE });
    await expect(auth(provider, { serverUrl: mcp.resource, fetchFn })).rejects.toThrow(/client authentication failed|invalid_client/i);
    expect(provider.tokens()).toBeUndefined();
  });

  test('a provider offering a client ID metadata document URL falls back to dynamic registration when the server does not advertise support', async () => {
    const meta = (await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    expect(meta.client_id_metadata_document_supported).toBeUndefined();
    const provider = Object.assign(new MemoryProvider(`${mcp.origin}/callback`), { clientMetadataUrl: 'https://agent.example.com/mcp-client.json' });
    const before = wire.length;
    expect(await auth(provider, { serverUrl: mcp.resource, fetchFn })).toBe('REDIRECT');
    expect(paths(wire.slice(before))).toEqual([
      'GET {mcp}/.well-known/oauth-protected-resource/mcp 200',
      'GET {as}/.well-known/oauth-authorization-server 200',
      'POST {as}/reg 201',
    ]);
    const clientId = provider.info!.client_id;
    expect(clientId).not.toBe(provider.clientMetadataUrl);
    expect(provider.authorizationUrl!.searchParams.get('client_id')).toBe(clientId);
  });
});
