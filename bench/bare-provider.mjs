// Bare node-oidc-provider for the benchmark baseline: `new Provider(issuer, {...})` with its default in-memory
// adapter, devInteractions off, one ES256 key, the same resource servers and clients as agentauth's bench config,
// client_credentials + resource indicators + introspection + registration + refresh rotation, JWT access tokens
// for the API, DPoP on. No agentauth code is involved.
//
// One addition outside the provider: POST /__bench/refresh-tokens?n=N mints N refresh tokens in-process (Grant +
// RefreshToken models), because bare oidc-provider has no headless grant that issues one (agentauth uses its wallet
// grant for that). It is only called before a measured run.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

import { AGENT, OPAQUE_RESOURCE, REFRESH_AGENT, RESOURCE, RS } from './lib/shared.mjs';

const port = Number(process.env.PORT ?? 3100);
const issuer = process.env.ISSUER ?? `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: randomUUID() };

const resourceServers = {
  [RESOURCE]: { scope: 'read write', audience: RESOURCE, accessTokenTTL: 300, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } },
  [OPAQUE_RESOURCE]: { scope: 'files', audience: OPAQUE_RESOURCE, accessTokenTTL: 300, accessTokenFormat: 'opaque' },
};

const confidential = (c, grantTypes) => ({
  client_id: c.id,
  client_secret: c.secret,
  grant_types: grantTypes,
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(issuer, {
  clients: [
    confidential(AGENT, ['client_credentials']),
    confidential(RS, ['client_credentials']),
    confidential(REFRESH_AGENT, ['refresh_token', 'client_credentials']),
  ],
  jwks: { keys: [signingKey] },
  // offline_access in scopes is what enables oidc-provider's refresh_token grant.
  scopes: ['openid', 'offline_access', 'read', 'write', 'files'],
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: 'ES256',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  enabledJWA: { dPoPSigningAlgValues: ['ES256', 'EdDSA'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    registration: { enabled: true },
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo: (_ctx, identifier) => {
        const info = resourceServers[identifier];
        if (!info) throw new Provider.errors.InvalidTarget();
        return info;
      },
      useGrantedResource: () => true,
    },
  },
  rotateRefreshToken: true,
  ttl: { AccessToken: 300, ClientCredentials: 300, RefreshToken: 86_400, Grant: 7 * 86_400 },
});

async function mintRefreshTokens(n) {
  const client = await provider.Client.find(REFRESH_AGENT.id);
  const tokens = [];
  for (let i = 0; i < n; i += 1) {
    const accountId = `bench-account-${i}`;
    const grant = new provider.Grant({ accountId, clientId: client.clientId });
    grant.addResourceScope(RESOURCE, 'read');
    const grantId = await grant.save();
    const rt = new provider.RefreshToken({
      accountId, client, grantId, gty: 'bench', scope: 'read', resource: RESOURCE, rotations: 0, iiat: Math.floor(Date.now() / 1000),
    });
    tokens.push(await rt.save());
  }
  return tokens;
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.url?.startsWith('/__bench/refresh-tokens') && req.method === 'POST') {
    const n = Math.min(10_000, Number(new URL(req.url, issuer).searchParams.get('n') ?? 1));
    mintRefreshTokens(n).then(
      (tokens) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ refresh_tokens: tokens }));
      },
      (err) => {
        res.statusCode = 500;
        res.end(String(err?.stack ?? err));
      },
    );
    return;
  }
  callback(req, res);
});
server.keepAliveTimeout = 5000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`bare oidc-provider listening on ${issuer}\n`));
// Exit at once (and so write a --cpu-prof profile): there is nothing to drain.
process.once('SIGTERM', () => process.exit(0));
