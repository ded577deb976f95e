import type { TierConfig } from '../config.js';

/** Client metadata field (an extension, RFC 7591 §2) that records a client's token tier. Set by policy, never by the client. */
export const TIER_FIELD = 'agentauth_tier';

const TIER_POLICY_PREFIX = 'tier:';
/** The initial-access-token policy (oidc-provider `features.registration.policies`) that assigns a tier. */
export const tierPolicyName = (tier: string) => `${TIER_POLICY_PREFIX}${tier}`;
export const tierFromPolicies = (policies: readonly string[] | undefined) =>
  policies?.find((p) => p.startsWith(TIER_POLICY_PREFIX))?.slice(TIER_POLICY_PREFIX.length);

export interface TierLimits {
  tiers: Readonly<Record<string, TierConfig>>;
  defaultTier: string;
  /** Cap for access tokens that are not sender-constrained (≤ 300 s). */
  maxBearerTokenTTL: number;
}

export interface TieredClient {
  metadata(): Record<string, unknown>;
}

type Tier = TierConfig & { name: string };
/** Per limits object, the tier of each client instance (oidc-provider builds a new instance when metadata changes). */
const resolved = new WeakMap<TierLimits, WeakMap<object, Tier>>();

/** The tier a client belongs to; a client whose tier no longer exists fails closed with an error. */
export function tierOf(limits: TierLimits, client: TieredClient | undefined): Tier {
  let cache = resolved.get(limits);
  const hit = client && cache?.get(client);
  if (hit) return hit;
  const name = (client?.metadata()[TIER_FIELD] as string | undefined) ?? limits.defaultTier;
  const tier = limits.tiers[name];
  if (!tier) throw new Error(`client tier ${name} is not configured`);
  const result = { name, ...tier };
  if (client) {
    if (!cache) resolved.set(limits, (cache = new WeakMap()));
    cache.set(client, result);
  }
  return result;
}

/**
 * Access-token lifetime: the resource server's TTL, never more than the tier allows, and never more than
 * maxBearerTokenTTL unless the token is sender-constrained (DPoP-bound).
 */
export function accessTokenLifetime(limits: TierLimits, tier: TierConfig, resourceServerTTL: number | undefined, senderConstrained: boolean): number {
  const ttl = Math.min(resourceServerTTL ?? tier.accessTokenTTL, tier.accessTokenTTL);
  return senderConstrained ? ttl : Math.min(ttl, limits.maxBearerTokenTTL);
}

/**
 * Refresh-token lifetime: the tier's idle lifetime, cut so no refresh token of a grant outlives the tier's absolute
 * lifetime counted from the grant's first refresh token (`iiat`).
 */
export function refreshTokenLifetime(tier: TierConfig, initialIssuedAt: number | undefined, now = Math.floor(Date.now() / 1000)): number {
  const remaining = tier.refreshTokenAbsoluteTTL - (initialIssuedAt === undefined ? 0 : now - initialIssuedAt);
  return Math.max(1, Math.min(tier.refreshTokenIdleTTL, remaining));
}
