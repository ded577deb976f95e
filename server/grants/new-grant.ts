import type { Provider } from 'oidc-provider';

type Grant = InstanceType<Provider['Grant']>;
type Client = InstanceType<Provider['Client']>;

/**
 * A new Grant built with its client instance, not only its id. oidc-provider computes a grant's lifetime when it is
 * first saved, by calling `ttl.Grant(ctx, grant, client)` with the client the grant was built with; built from
 * `clientId` alone, the client is undefined and the lifetime is the default tier's `refreshTokenAbsoluteTTL` whatever
 * the client's tier (server/provider.ts). `expiresIn` fixes the lifetime instead (an exchanged token's grant).
 */
export function newGrant(provider: Provider, init: { accountId: string; client: Client; expiresIn?: number }): Grant {
  const GrantModel = provider.Grant as unknown as new (init: { accountId: string; client: Client; expiresIn?: number }) => Grant;
  return new GrantModel(init);
}
