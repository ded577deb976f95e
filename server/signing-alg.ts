import type { Provider } from 'oidc-provider';

/** The client properties oidc-provider reads to choose the key that signs an ID token or an introspection response. */
const SIGNED_BY_THE_SERVER = ['idTokenSignedResponseAlg', 'introspectionSignedResponseAlg'] as const;

/**
 * ID tokens and signed introspection responses (RFC 9701) are signed by the key that signs now, with its algorithm.
 * oidc-provider signs them with the first key of its key set whose algorithm is the client's
 * `id_token_signed_response_alg` / `introspection_signed_response_alg`, which default to the algorithm of the key that
 * signed when the server started and are stored with a registered client. After a rotation to another algorithm
 * (`AGENTAUTH_KEY_ALG`), the only key of the old algorithm is the retired one: it went on signing, and once archived
 * every such response failed (500). Every client oidc-provider looks up reads both properties from the active key
 * instead (an ID token algorithm a client registered is not kept across an algorithm change).
 */
export function followActiveKeyAlg(provider: Provider, activeAlg: () => string): void {
  const Client = provider.Client as unknown as { find(...args: unknown[]): Promise<unknown> };
  const find = Client.find.bind(Client);
  const following = new WeakSet<object>();
  Client.find = async (...args: unknown[]) => {
    const client = await find(...args);
    if (client && typeof client === 'object' && !following.has(client)) {
      for (const prop of SIGNED_BY_THE_SERVER) Object.defineProperty(client, prop, { get: activeAlg, enumerable: true, configurable: true });
      following.add(client);
    }
    return client;
  };
}
