import type { Provider } from 'oidc-provider';

import type { WalletSignIn } from '../interactions/wallet-signin.js';
import { installDisabledClientCheck } from './admin/disabled-clients.js';
import { registerTokenExchangeGrant } from './grants/token-exchange.js';
import { registerWalletGrant } from './grants/wallet-signature.js';
import { createProvider } from './provider.js';
import { advertisePublishedAlgs, followActiveKeyAlg, publishedAlgsOf } from './signing-alg.js';
import type { ProviderDeps } from './provider.js';

/**
 * The provider as agentauth serves it: oidc-provider configured (server/provider.ts), agentauth's two grants
 * registered (oidc-provider then accepts their grant types in client metadata), the disabled-client check on every
 * client lookup, ID tokens signed with the active key's algorithm, and clients that load whatever key algorithm they
 * registered with (server/signing-alg.ts). `start` (server/boot.ts) and `config check` (server/config-check.ts) both build it here, so a
 * client the check accepts is one the server accepts.
 */
export function assembleProvider(deps: ProviderDeps & { wallet: WalletSignIn }): Provider {
  const provider = createProvider(deps);
  registerWalletGrant(provider, deps.wallet, deps.log, deps.health, deps.storage.revokedTokens);
  registerTokenExchangeGrant(provider, { policy: deps.config.tokenExchange, clients: deps.storage.model('Client'), health: deps.health });
  installDisabledClientCheck(provider, deps.storage.model('Client'), deps.storage.nonces, deps.health);
  const keys = { activeAlg: () => deps.keyring.active.alg, publishedAlgs: publishedAlgsOf(deps.keyring) };
  followActiveKeyAlg(provider, keys);
  advertisePublishedAlgs(provider, keys);
  return provider;
}
