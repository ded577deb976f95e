import type { NonceStore } from '../adapters/types.js';
import { createEip1271Verifier } from './siwe/eip1271.js';
import { SiweVerificationError } from './siwe/errors.js';
import { generateNonce } from './siwe/nonce.js';
import { verifySiwe } from './siwe/verify.js';
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

/** Wallet sign-in as the login interaction and the headless grant both use it: one rule set, one nonce store. */
export interface WalletSignIn {
  readonly rules: SiweRules;
  /** A fresh EIP-4361 nonce, stored for `nonceTTL` seconds and usable once. */
  issueNonce(): Promise<{ nonce: string; expiresIn: number }>;
  verify(message: string, signature: string, requiredResources: readonly string[]): Promise<VerifiedSiwe>;
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
    async issueNonce() {
      const nonce = generateNonce();
      await nonces.issue(nonce, settings.nonceTTL);
      return { nonce, expiresIn: settings.nonceTTL };
    },
    verify: (message, signature, requiredResources) => verifySiwe({ message, signature, requiredResources }, rules, { nonces, eip1271 }),
  };
}
