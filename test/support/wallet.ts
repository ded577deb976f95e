import { scopeResource } from '../../interactions/siwe/binding.js';
import { buildSiweMessage } from '../../interactions/siwe/message.js';
import type { SiweMessageFields } from '../../interactions/siwe/message.js';
import { RESOURCE } from './agent-server.js';

/** A fresh nonce from agentauth's nonce endpoint, bound to `clientId` (the client that will redeem it). */
export async function fetchNonce(issuer: string, clientId: string): Promise<string> {
  const res = await fetch(`${issuer}/wallet/nonce`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ client_id: clientId }),
  });
  if (res.status !== 200) throw new Error(`nonce endpoint answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { nonce: string }).nonce;
}

/**
 * An EIP-4361 message for agentauth at `issuer` (its domain and origin, chain 1, the test resource and the `read`
 * scope as resources, the given nonce), with `fields` overriding any part, signed by `signer`.
 */
export async function signedSiwe(
  issuer: string,
  signer: { signMessage(message: string): Promise<string> },
  fields: Partial<SiweMessageFields> & { address: string; nonce: string },
): Promise<{ message: string; signature: string }> {
  const message = buildSiweMessage({
    domain: new URL(issuer).host,
    statement: 'Grant the agent access to the API.',
    uri: issuer,
    chainId: 1,
    issuedAt: new Date(),
    resources: [RESOURCE, scopeResource('read')],
    ...fields,
  });
  return { message, signature: await signer.signMessage(message) };
}
