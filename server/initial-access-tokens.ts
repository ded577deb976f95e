import type { AuditEventInput } from './audit/chain.js';
import type { Agentauth } from './boot.js';
import { ConfigError } from './config.js';
import type { Config } from './config.js';
import { tierPolicyName } from './policies/tiers.js';
import { initialAccessTokenFingerprint, MAX_INITIAL_ACCESS_TOKEN_USES, recordUseLimit } from './initial-access-token-uses.js';

export interface CreatedInitialAccessToken {
  token: string;
  /** Its fingerprint, as `clients iat list` and the audit log name it. */
  id: string;
  expiresIn: number;
  tier: string;
  /** How many registrations it allows; undefined for any number. */
  uses?: number;
}

export interface InitialAccessTokenRequest {
  tier: string;
  expiresIn: number;
  uses?: number;
}

/** How a request names its settings in refusals: the CLI's options, or the admin API's JSON members. */
export interface RequestNames {
  tier: string;
  expiresIn: string;
  uses: string;
}

const CLI_NAMES: RequestNames = { tier: '--tier', expiresIn: '--expires-in', uses: '--uses' };

/**
 * Checks a request before anything is opened (so a refused run never touches storage or generates keys). `inProcess`:
 * the token is made by the server itself (the admin API), which the memory store serves too.
 */
export function checkInitialAccessTokenRequest(
  config: Config,
  opts: { tier?: string | undefined; expiresIn?: string | undefined; uses?: string | undefined },
  { names = CLI_NAMES, inProcess = false }: { names?: RequestNames; inProcess?: boolean } = {},
): InitialAccessTokenRequest {
  if (config.registration.mode !== 'token') {
    // Without a configuration file the mode is the default: the likely mistake is a command run without the server's AGENTAUTH_CONFIG.
    const hint = inProcess ? '' : ', the default: AGENTAUTH_CONFIG is not set, so no configuration file was read; run the command with the server\'s AGENTAUTH_CONFIG';
    const where = config.configFile === undefined ? hint : ` in ${config.configFile}`;
    throw new ConfigError(`registration.mode: initial access tokens are only used in "token" mode (it is "${config.registration.mode}"${where})`);
  }
  if (config.store === 'memory' && !inProcess) {
    throw new ConfigError('AGENTAUTH_STORE: initial access tokens must be stored where the server reads them; the memory store lives inside the server process');
  }
  const tier = opts.tier ?? config.registration.defaultTier;
  if (!Object.hasOwn(config.tiers, tier)) throw new ConfigError(`${names.tier}: no tier named ${tier} (tiers: ${Object.keys(config.tiers).join(', ')})`);
  const expiresIn = opts.expiresIn === undefined ? config.registration.initialAccessTokenTTL : /^[0-9]{1,8}$/.test(opts.expiresIn) ? Number(opts.expiresIn) : NaN;
  if (!Number.isInteger(expiresIn) || expiresIn < 1 || expiresIn > 30 * 86400) {
    throw new ConfigError(`${names.expiresIn}: must be a whole number of seconds from 1 to 2592000 (30 days)`);
  }
  if (opts.uses === undefined) return { tier, expiresIn };
  const uses = /^[0-9]{1,4}$/.test(opts.uses) ? Number(opts.uses) : NaN;
  if (!Number.isInteger(uses) || uses < 1 || uses > MAX_INITIAL_ACCESS_TOKEN_USES) {
    throw new ConfigError(`${names.uses}: must be a whole number of registrations from 1 to ${MAX_INITIAL_ACCESS_TOKEN_USES}`);
  }
  return { tier, expiresIn, uses };
}

/**
 * Mints an initial access token (RFC 7591 §3) that expires, assigns its client a tier and, with `uses`, allows that many
 * registrations, and records `registration.iat_created` (by its fingerprint, never the token) through `record`. The
 * limit and the record are written after the token is stored (its fingerprint is the token's): if either fails, the
 * token is deleted again and never returned, so no one holds a token that is unrecorded or should have had a limit.
 */
export async function createInitialAccessToken(
  agentauth: Pick<Agentauth, 'provider' | 'storage'>,
  { tier, expiresIn, uses }: InitialAccessTokenRequest,
  record: (event: AuditEventInput) => Promise<unknown>,
  actor: Record<string, unknown> = { actor: 'cli' },
): Promise<CreatedInitialAccessToken> {
  const IAT = agentauth.provider.InitialAccessToken as unknown as new (init: { expiresIn: number; policies: string[] }) => {
    save(): Promise<string>;
    destroy(): Promise<void>;
    exp?: number;
  };
  const iat = new IAT({ expiresIn, policies: [tierPolicyName(tier)] });
  const token = await iat.save();
  const fingerprint = initialAccessTokenFingerprint(token);
  try {
    if (uses !== undefined) await recordUseLimit(agentauth.storage.nonces, fingerprint, uses, expiresIn);
    const expiresAt = new Date((iat.exp ?? Math.floor(Date.now() / 1000) + expiresIn) * 1000).toISOString();
    await record({ type: 'registration.iat_created', details: { ...actor, iat_id: fingerprint, tier, expires_at: expiresAt, uses: uses ?? null } });
  } catch (err) {
    await iat.destroy().catch(() => undefined);
    throw err;
  }
  return uses === undefined ? { token, id: fingerprint, expiresIn, tier } : { token, id: fingerprint, expiresIn, tier, uses };
}
