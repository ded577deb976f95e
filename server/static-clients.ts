import type { Provider } from 'oidc-provider';

import { ConfigError } from './config.js';
import type { StaticClientConfig } from './config.js';

/**
 * Builds every client of the configuration file (`clients[]`) now, through `provider.Client.find`, the lookup every
 * endpoint uses: oidc-provider validates a static client's metadata only when it is first looked up, so a client it
 * refuses (a scope no resource server has, a JWK it cannot use, ...) would otherwise pass `start` and then make every
 * token request of that client answer `invalid_client_metadata`, an error about registration the client cannot act
 * on. Refused here, it is a configuration error naming the entry: `start` exits 2, `config check` reports it.
 * A client built here stays in oidc-provider's cache, as after its first request.
 */
export async function checkStaticClients(provider: Provider, clients: readonly StaticClientConfig[]): Promise<void> {
  for (const [i, client] of clients.entries()) {
    let found: unknown;
    try {
      found = await provider.Client.find(client.client_id);
    } catch (err) {
      const e = err as { error_description?: unknown; message?: unknown };
      const why = typeof e.error_description === 'string' ? e.error_description : String(e.message);
      throw new ConfigError(`AGENTAUTH_CONFIG clients[${i}] (${client.client_id}): ${why}`);
    }
    if (found === undefined) throw new ConfigError(`AGENTAUTH_CONFIG clients[${i}] (${client.client_id}): oidc-provider does not find this client`);
  }
}
