import { Provider } from 'oidc-provider';
import type { ClientMetadata, Configuration, KoaContextWithOIDC } from 'oidc-provider';

import { oidcAdapterFactory } from '../adapters/oidc-adapter.js';
import type { StorageHealth } from '../adapters/health.js';
import type { Storage } from '../adapters/types.js';
import type { Keyring } from '../keys/keyring.js';
import type { Config } from './config.js';
import type { Logger } from './logger.js';
import { MAX_BEARER_TTL, ResourceServerRegistry } from './resource-servers.js';

export interface ProviderDeps {
  config: Config;
  storage: Storage;
  health: StorageHealth;
  keyring: Keyring;
  cookieKeys: string[];
  log: Logger;
}

interface TtlToken {
  resourceServer?: { accessTokenTTL?: number };
  isSenderConstrained?: () => boolean;
}

/** Access-token lifetime: the resource server's TTL, and never more than five minutes for a bearer token. */
function accessTokenTtl(_ctx: KoaContextWithOIDC, token: TtlToken): number {
  const ttl = token.resourceServer?.accessTokenTTL ?? MAX_BEARER_TTL;
  const bound = typeof token.isSenderConstrained === 'function' && token.isSenderConstrained();
  return bound ? ttl : Math.min(ttl, MAX_BEARER_TTL);
}

function staticClients(config: Config): ClientMetadata[] {
  return config.clients.map((c) => ({
    client_id: c.client_id,
    ...(c.client_name ? { client_name: c.client_name } : {}),
    ...(c.client_secret ? { client_secret: c.client_secret } : {}),
    ...(c.jwks ? { jwks: c.jwks as unknown as ClientMetadata['jwks'] } : {}),
    ...(c.scope ? { scope: c.scope } : {}),
    token_endpoint_auth_method: c.token_endpoint_auth_method,
    grant_types: c.grant_types,
    response_types: [],
    redirect_uris: [],
  }));
}

export function providerConfiguration({ config, storage, health, keyring, cookieKeys }: ProviderDeps): Configuration {
  const resources = new ResourceServerRegistry(config.resourceServers, keyring.active.alg);
  const allScopes = [...new Set(config.resourceServers.flatMap((rs) => rs.scopes))];
  return {
    adapter: oidcAdapterFactory(storage, health),
    clients: staticClients(config),
    jwks: keyring.providerJwks() as Configuration['jwks'],
    cookies: { keys: cookieKeys },
    scopes: ['openid', ...allScopes],
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: keyring.active.alg,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    enabledJWA: {
      idTokenSigningAlgValues: ['ES256', 'EdDSA'],
      userinfoSigningAlgValues: ['ES256', 'EdDSA'],
      introspectionSigningAlgValues: ['ES256', 'EdDSA'],
      authorizationSigningAlgValues: ['ES256', 'EdDSA'],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resources.defaultResource(),
        getResourceServerInfo: async (_ctx, identifier) => resources.info(identifier),
        useGrantedResource: async () => true,
      },
    },
    pkce: { required: () => true },
    ttl: {
      AccessToken: accessTokenTtl as never,
      ClientCredentials: accessTokenTtl as never,
    },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

/** oidc-provider configured for agentauth, with its events logged (reasons included, credentials never). */
export function createProvider(deps: ProviderDeps): Provider {
  const provider = new Provider(deps.config.issuer, providerConfiguration(deps));
  const { log } = deps;
  const detail = (err: unknown) => {
    const e = err as { error?: string; error_description?: string; error_detail?: string; status?: number };
    return { error: e.error, error_description: e.error_description, error_detail: e.error_detail, status: e.status };
  };
  provider.on('grant.error', (_ctx, err) => log.info({ event: 'grant.error', ...detail(err) }, 'token request refused'));
  provider.on('server_error', (_ctx, err) => log.error({ event: 'server_error', err }, 'server error'));
  provider.on('grant.success', (ctx) =>
    log.info({ event: 'grant.success', client_id: ctx.oidc.client?.clientId, grant_type: ctx.oidc.params?.grant_type }, 'token issued'),
  );
  return provider;
}
