import { createHash } from 'node:crypto';

import type { NonceStore } from '../../adapters/types.js';
import { DEFAULT_IPV6_PREFIX_LENGTH, limitedAddress } from './address.js';

/** A limit as configured: at most `max` hits per `windowSeconds`; `max: 0` turns the limit off. */
export interface LimitSetting {
  max: number;
  windowSeconds: number;
}

export interface LimitDecision {
  allowed: boolean;
  /** Seconds until the current window ends (when refused: what `Retry-After` says). */
  retryAfter: number;
}

/**
 * A fixed-window counter kept in the configured store, so every process and instance on that store counts the same
 * hits and a restart forgets none. Each window is one counter of the store's atomic `nonces.takeAttempt` (keyed by
 * limit name, window number and a hash of the subject, kept until the window ends): of any number of concurrent
 * hits, across processes, exactly `max` per window are allowed. Windows are aligned on the epoch, so every
 * process agrees on when one ends. A fixed window lets up to 2×max through around a window boundary; that is the
 * accepted price of one store operation per hit.
 */
export class SharedWindowLimit {
  constructor(
    private readonly store: Pick<NonceStore, 'takeAttempt'>,
    /** Names the counter in the store (`registration`, `token`, ...). */
    readonly name: string,
    readonly setting: LimitSetting,
    /** How much of an IPv6 client address counts as one address (`limits.ipv6PrefixLength`). */
    private readonly ipv6PrefixLength = DEFAULT_IPV6_PREFIX_LENGTH,
  ) {}

  /** What client address `ip` is counted as (server/limits/address.ts): one IPv4 address, or one IPv6 prefix. */
  address(ip: string): string {
    return limitedAddress(ip, this.ipv6PrefixLength);
  }

  get enabled(): boolean {
    return this.setting.max > 0;
  }

  /** Counts one hit for `subject` (client IP, client id); storage errors propagate (callers fail closed). */
  async hit(subject: string, now = Date.now()): Promise<LimitDecision> {
    const windowMs = this.setting.windowSeconds * 1000;
    const window = Math.floor(now / windowMs);
    const retryAfter = Math.max(1, Math.ceil(((window + 1) * windowMs - now) / 1000));
    if (!this.enabled) return { allowed: true, retryAfter: 0 };
    const digest = createHash('sha256').update(subject).digest('base64url').slice(0, 32);
    const allowed = await this.store.takeAttempt(`limit:${this.name}:${window}:${digest}`, this.setting.max, retryAfter + 1);
    return { allowed, retryAfter };
  }
}
