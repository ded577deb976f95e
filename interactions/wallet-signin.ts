import type { NonceStore } from '../adapters/types.js';
import { bindingKey } from './siwe/binding.js';
import type { NonceBinding } from './siwe/binding.js';
import { createEip1271Verifier } from './siwe/eip1271.js';
import { SiweVerificationError } from './siwe/errors.js';
import { generateNonce } from './siwe/nonce.js';
import { ATTEMPT_TTL_SECONDS, verifySiwe } from './siwe/verify.js';
import type { SiweRules, VerifiedSiwe } from './siwe/verify.js';

export interface WalletSettings {
  chains: Record<string, { rpcUrl?: string | undefined }>;
  domains: string[];
  origins: string[];
  issuedAtWindowSeconds: number;
  clockSkewSeconds: number;
  nonceTTL: number;
  rpcTimeoutMs: number;
}

export type { NonceBinding };

/** Sign-in attempts one login page (interaction) allows, whatever their nonces; then it refuses with rule `attempts`. */
export const MAX_ATTEMPTS_PER_INTERACTION = 5;

/** What a sign-in is for: where its nonce must come from, and what the signature must consent to. */
export interface SignInPurpose {
  /** The login page's interaction (its uid is also the expected Request ID), or the client of a grant request. */
  binding: NonceBinding;
  /** Resources the message must list. */
  requiredResources: readonly string[];
  /** Scopes about to be granted without a consent page: each must be signed (`urn:agentauth:scope:<scope>`). */
  requiredScopes?: readonly string[];
}

/** Wallet sign-in as the login interaction and the headless grant both use it: one rule set, one nonce store. */
export interface WalletSignIn {
  readonly rules: SiweRules;
  /** A fresh EIP-4361 nonce for `binding`, stored for `nonceTTL` seconds and usable once, only there. */
  issueNonce(binding: NonceBinding): Promise<{ nonce: string; expiresIn: number }>;
  verify(message: string, signature: string, purpose: SignInPurpose): Promise<VerifiedSiwe>;
}

export function createWalletSignIn(settings: WalletSettings, issuer: string, nonces: NonceStore): WalletSignIn {
  const issuerUrl = new URL(issuer);
  const rules: SiweRules = {
    domains: [issuerUrl.host, ...settings.domains],
    origins: [issuerUrl.origin, ...settings.origins],
    chainIds: Object.keys(settings.chains).map(Number),
    issuedAtWindowSeconds: settings.issuedAtWindowSeconds,
    clockSkewSeconds: settings.clockSkewSeconds,
  };
  const endpoints = Object.fromEntries(
    Object.entries(settings.chains).flatMap(([id, chain]) => (chain.rpcUrl ? [[Number(id), chain.rpcUrl]] : [])),
  ) as Record<number, string>;
  const contractWallets = createEip1271Verifier(endpoints, settings.rpcTimeoutMs);
  // Without an endpoint for the chain, an EIP-191 mismatch is simply a wrong signature (with a hint for contract wallets).
  const eip1271: typeof contractWallets = async (chainId, address, digest, signature) => {
    if (endpoints[chainId] === undefined) {
      throw new SiweVerificationError(
        'signature',
        `the signature was not made by ${address}'s key (EIP-191); if ${address} is a contract wallet, it cannot be verified on chain ${chainId} because no JSON-RPC endpoint is configured for it (wallet.chains.${chainId}.rpcUrl)`,
        address,
      );
    }
    return contractWallets(chainId, address, digest, signature);
  };
  return {
    rules,
    async issueNonce(binding) {
      const nonce = generateNonce();
      await nonces.issue(nonce, settings.nonceTTL, bindingKey(binding));
      return { nonce, expiresIn: settings.nonceTTL };
    },
    async verify(message, signature, { binding, requiredResources, requiredScopes }) {
      if ('interaction' in binding) {
        // Counted before any other check: a login page allows so many attempts, cheap or not, then no more.
        const key = bindingKey(binding);
        if (!(await nonces.takeAttempt(key, MAX_ATTEMPTS_PER_INTERACTION, ATTEMPT_TTL_SECONDS))) {
          throw new SiweVerificationError(
            'attempts',
            `this sign-in request has had ${MAX_ATTEMPTS_PER_INTERACTION} sign-in attempts and accepts no more; go back to the application and start again`,
          );
        }
      }
      const input: Parameters<typeof verifySiwe>[0] = { message, signature, nonceBinding: bindingKey(binding), requiredResources };
      if ('interaction' in binding) input.requestId = binding.interaction;
      if (requiredScopes) input.requiredScopes = requiredScopes;
      return verifySiwe(input, rules, { nonces, eip1271 });
    },
  };
}
