import { buildSiweMessage } from '../../interactions/siwe/message.js';
import type { SiweMessageFields } from '../../interactions/siwe/message.js';
import { RESOURCE } from './agent-server.js';

/** A fresh nonce from agentauth's nonce endpoint. */
export async function fetchNonce(issuer: string): Promise<string> {
  const res = await fetch(`${issuer}/wallet/nonce`, { method: 'POST' });
  if (res.status !== 200) throw new Error(`nonce endpoint answered ${res.status}`);
  return ((await res.json()) as { nonce: string }).nonce;
}

/**
 * An EIP-4361 message for agentauth at `issuer` (its domain and origin, chain 1, the test resource, a fresh nonce
 * unless given), with `fields` overriding any part, signed by `signer`.
 */
export async function signedSiwe(
  issuer: string,
  signer: { signMessage(message: string): Promise<string> },
  fields: Partial<SiweMessageFields> & { address: string },
): Promise<{ message: string; signature: string }> {
  const message = buildSiweMessage({
    domain: new URL(issuer).host,
    statement: 'Grant the agent access to the API.',
    uri: issuer,
    chainId: 1,
    issuedAt: new Date(),
    resources: [RESOURCE],
    ...fields,
    nonce: fields.nonce ?? (await fetchNonce(issuer)),
  });
  return { message, signature: await signer.signMessage(message) };
}
