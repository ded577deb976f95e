// What agentauth and bare oidc-provider are both configured with: one resource server (plus an opaque one for the
// opaque-introspection comparison) and the same confidential clients.
export const RESOURCE = 'https://api.example.com';
export const OPAQUE_RESOURCE = 'https://opaque.example.com';
export const WALLET_GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';

const secret = (name) => `${name}-secret-0123456789abcdefghijklmnop`;

/** The agent that asks for client_credentials tokens. */
export const AGENT = { id: 'bench-agent', secret: secret('bench-agent') };
/** A resource server's own credentials, used to introspect (RFC 7662). */
export const RS = { id: 'bench-resource-server', secret: secret('bench-resource-server') };
/** A confidential agent that signs in with a wallet (no refresh token). */
export const WALLET_AGENT = { id: 'bench-wallet-agent', secret: secret('bench-wallet-agent') };
/** A confidential agent that holds refresh tokens (wallet grant + refresh_token). */
export const REFRESH_AGENT = { id: 'bench-refresh-agent', secret: secret('bench-refresh-agent') };

export const basic = ({ id, secret: s }) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(s)}`).toString('base64')}`;

/** agentauth's configuration file for the benchmark (AGENTAUTH_CONFIG). */
export function agentauthConfig() {
  return {
    resourceServers: [
      { identifier: RESOURCE, scopes: ['read', 'write'], accessTokenTTL: 300 },
      { identifier: OPAQUE_RESOURCE, scopes: ['files'], accessTokenFormat: 'opaque', accessTokenTTL: 300 },
    ],
    clients: [
      { client_id: AGENT.id, client_secret: AGENT.secret, grant_types: ['client_credentials'] },
      { client_id: RS.id, client_secret: RS.secret, grant_types: ['client_credentials'] },
      { client_id: WALLET_AGENT.id, client_secret: WALLET_AGENT.secret, grant_types: [WALLET_GRANT] },
      { client_id: REFRESH_AGENT.id, client_secret: REFRESH_AGENT.secret, grant_types: [WALLET_GRANT, 'refresh_token'] },
    ],
    // The default quota (20 per hour per address) would answer 429 to a benchmark from one address; the registered
    // body asks for client_credentials, which anonymous registrations get only when the operator allows it.
    registration: { mode: 'open', quota: { max: 100_000_000, windowSeconds: 3600 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } },
    // Messages are signed before the run starts; leave room for signing and the run itself.
    wallet: { nonceTTL: 900, issuedAtWindowSeconds: 900 },
    // The wallet scenario takes thousands of nonces from one address (the default, 60 a minute, answers 429).
    limits: { walletNoncesPerAddress: { max: 0 } },
  };
}

/** Client metadata sent to POST /reg (accepted by both servers). */
export const REGISTRATION_BODY = JSON.stringify({
  client_name: 'bench agent',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: 'read',
});
