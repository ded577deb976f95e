import { z } from 'zod';

import { DEFAULT_IPV6_PREFIX_LENGTH } from './address.js';

const windowSchema = (max: number, windowSeconds: number) =>
  z
    .strictObject({
      /** Hits allowed per window; 0 turns the limit off. */
      max: z.number().int().min(0).max(1_000_000).default(max),
      /** Window length in seconds (fixed windows aligned on the epoch, the same on every instance). */
      windowSeconds: z.number().int().min(1).max(86_400).default(windowSeconds),
    })
    .prefault({});

/**
 * Request limits counted in the configured store, shared by every process and instance on it and kept across
 * restarts (server/limits/window.ts). The registration quota is `registration.quota`, counted the same way.
 */
export const limitsSchema = z.strictObject({
  /**
   * Token requests per authenticated client (every grant type), at the token endpoint: refused with 429 slow_down.
   * Off by default: it costs store operations on every token request (docs/operations.md, "Shared limits").
   */
  tokenRequestsPerClient: windowSchema(0, 60),
  /** Wallet nonces issued per client IP (`POST /wallet/nonce` and the login page's nonce): 429 slow_down. */
  walletNoncesPerAddress: windowSchema(60, 60),
  /** Wallet sign-in attempts per client IP on login pages (`POST /interaction/<uid>/login`): 429 slow_down. */
  signInAttemptsPerAddress: windowSchema(30, 60),
  /**
   * How many leading bits of an IPv6 client address the per-address limits (these, the registration quota, a public
   * client's token requests) count as one address (server/limits/address.ts): a host commonly holds a whole /64.
   */
  ipv6PrefixLength: z.number().int().min(32).max(128).default(DEFAULT_IPV6_PREFIX_LENGTH),
});

export type LimitsConfig = z.infer<typeof limitsSchema>;
