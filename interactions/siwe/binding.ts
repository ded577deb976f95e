/**
 * What a sign-in nonce is issued for, and the scopes a message signs. A nonce from the login page is bound to that
 * sign-in request (interaction); a nonce for the wallet-signature grant is bound to the client that asked for it.
 * Only a sign-in through the same interaction, or a token request authenticated as the same client, may redeem it.
 */
export type NonceBinding = { interaction: string } | { client: string };

/** The binding as the nonce store keeps it: `interaction:<uid>` or `client:<client_id>`. */
export function bindingKey(binding: NonceBinding): string {
  return 'interaction' in binding ? `interaction:${binding.interaction}` : `client:${binding.client}`;
}

/** How a refusal names the binding it expected ("this sign-in request", "client <id>"). */
export function describeBinding(key: string): string {
  if (key.startsWith('interaction:')) return 'this sign-in request';
  if (key.startsWith('client:')) return `client ${key.slice('client:'.length)}`;
  return key;
}

/**
 * A scope the account holder consents to is signed as a resource `urn:agentauth:scope:<scope>` (characters outside
 * RFC 3986 `pchar` percent-encoded). EIP-4361 `Resources` are what the signer consents to; the statement is prose and
 * is never read.
 */
export const SCOPE_RESOURCE_PREFIX = 'urn:agentauth:scope:';

export function scopeResource(scope: string): string {
  return SCOPE_RESOURCE_PREFIX + scope.replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@/]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** The scopes a message's resources sign (entries that do not decode are ignored). */
export function signedScopes(resources: readonly string[]): string[] {
  const out: string[] = [];
  for (const r of resources) {
    if (!r.startsWith(SCOPE_RESOURCE_PREFIX)) continue;
    try {
      out.push(decodeURIComponent(r.slice(SCOPE_RESOURCE_PREFIX.length)));
    } catch {
      // not valid percent-encoding: signs nothing
    }
  }
  return out;
}
