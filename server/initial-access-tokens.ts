import type { AuditEventInput } from './audit/chain.js';
import type { Agentauth } from './boot.js';
import { ConfigError, WALLET_GRANT_TYPE, knownScopes } from './config.js';
import type { Config } from './config.js';
import { tierPolicyName } from './policies/tiers.js';
import { MAX_LIMIT_SCOPES, refreshTokenAlone, registrationLimitsProblem } from './policies/registration-limits.js';
import type { RegistrationLimits } from './policies/registration-limits.js';
import { initialAccessTokenFingerprint, MAX_INITIAL_ACCESS_TOKEN_USES, recordUseLimit } from './initial-access-token-uses.js';
import { MAX_LIMITS_LENGTH, recordRegistrationLimits } from './initial-access-token-limits.js';

export interface CreatedInitialAccessToken {
  token: string;
  /** Its fingerprint, as `clients iat list` and the audit log name it. */
  id: string;
  expiresIn: number;
  tier: string;
  /** How many registrations it allows; undefined for any number. */
  uses?: number;
  /** The grant types and scopes its clients may register; undefined for any the server allows. */
  limits?: RegistrationLimits;
}

export interface InitialAccessTokenRequest {
  tier: string;
  expiresIn: number;
  uses?: number;
  limits?: RegistrationLimits;
}

/** How a request names its settings in refusals: the CLI's options, or the admin API's JSON members. */
export interface RequestNames {
  tier: string;
  expiresIn: string;
  uses: string;
  grantTypes: string;
  scope: string;
}

const CLI_NAMES: RequestNames = { tier: '--tier', expiresIn: '--expires-in', uses: '--uses', grantTypes: '--grant-types', scope: '--scope' };

/** A list for a refusal: the first few entries, and how many more. */
const listed = (values: readonly string[], max = 10) => values.slice(0, max).join(', ') + (values.length > max ? ` and ${values.length - max} more` : '');

/**
 * The limits a request asks for: `grantTypes` (the CLI's comma-separated list, or the admin API's array) among the
 * grant types `registration.allowedGrantTypes` lets clients register, `scope` (space-separated) among the scopes this
 * server defines. Undefined when it asks for none.
 */
function checkLimits(config: Config, grantTypes: string | readonly string[] | undefined, scope: string | undefined, names: RequestNames): RegistrationLimits | undefined {
  const limits: RegistrationLimits = {};
  if (grantTypes !== undefined) {
    const list = typeof grantTypes === 'string' ? grantTypes.split(',').map((g) => g.trim()) : [...grantTypes];
    if (list.length === 0 || list.some((g) => g === '')) throw new ConfigError(`${names.grantTypes}: name one or more grant types${typeof grantTypes === 'string' ? ', separated by commas' : ''}`);
    const allowed: readonly string[] = config.registration.allowedGrantTypes;
    const unknown = list.find((g) => !allowed.includes(g));
    if (unknown !== undefined) {
      throw new ConfigError(`${names.grantTypes}: ${JSON.stringify(unknown.slice(0, 100))} is not a grant type clients may register here (registration.allowedGrantTypes: ${allowed.join(', ')})`);
    }
    const twice = list.find((g, i) => list.indexOf(g) !== i);
    if (twice !== undefined) throw new ConfigError(`${names.grantTypes}: names ${twice} twice`);
    // What registration refuses whatever the token (server/policies/registration.ts): such a token could register nothing.
    if (refreshTokenAlone(list)) {
      throw new ConfigError(`${names.grantTypes}: refresh_token is only registered with authorization_code or ${WALLET_GRANT_TYPE}: name one of them too`);
    }
    limits.grant_types = list;
  }
  if (scope !== undefined) {
    const scopes = scope.split(' ');
    const known = knownScopes(config);
    if (scopes.some((s) => s === '')) throw new ConfigError(`${names.scope}: name one or more scopes, separated by single spaces`);
    const unknown = scopes.find((s) => !known.has(s));
    if (unknown !== undefined) {
      throw new ConfigError(`${names.scope}: ${JSON.stringify(unknown.slice(0, 100))} is not a scope of this server (scopes: ${listed([...known])})`);
    }
    const twice = scopes.find((s, i) => scopes.indexOf(s) !== i);
    if (twice !== undefined) throw new ConfigError(`${names.scope}: names ${twice} twice`);
    if (scopes.length > MAX_LIMIT_SCOPES) throw new ConfigError(`${names.scope}: names ${scopes.length} scopes; at most ${MAX_LIMIT_SCOPES}`);
    limits.scope = scope;
  }
  if (limits.grant_types === undefined && limits.scope === undefined) return undefined;
  if (JSON.stringify(limits).length > MAX_LIMITS_LENGTH) throw new ConfigError(`${names.scope}: the limits are too long to store (at most ${MAX_LIMITS_LENGTH} characters as JSON)`);
  // Whatever registration will read back must pass its check here, or the token would be made and never register.
  const problem = registrationLimitsProblem(limits);
  if (problem !== undefined) throw new ConfigError(`the limits cannot be recorded: ${problem}`);
  return limits;
}

/**
 * Checks a request before anything is opened (so a refused run never touches storage or generates keys). `inProcess`:
 * the token is made by the server itself (the admin API), which the memory store serves too.
 */
export function checkInitialAccessTokenRequest(
  config: Config,
  opts: {
    tier?: string | undefined;
    expiresIn?: string | undefined;
    uses?: string | undefined;
    grantTypes?: string | readonly string[] | undefined;
    scope?: string | undefined;
  },
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
  let uses: number | undefined;
  if (opts.uses !== undefined) {
    uses = /^[0-9]{1,4}$/.test(opts.uses) ? Number(opts.uses) : NaN;
    if (!Number.isInteger(uses) || uses < 1 || uses > MAX_INITIAL_ACCESS_TOKEN_USES) {
      throw new ConfigError(`${names.uses}: must be a whole number of registrations from 1 to ${MAX_INITIAL_ACCESS_TOKEN_USES}`);
    }
  }
  const limits = checkLimits(config, opts.grantTypes, opts.scope, names);
  return { tier, expiresIn, ...(uses === undefined ? {} : { uses }), ...(limits === undefined ? {} : { limits }) };
}

/**
 * Mints an initial access token (RFC 7591 §3) that expires, assigns its client a tier, with `uses` allows that many
 * registrations and with `limits` holds its clients to those grant types and scopes, and records
 * `registration.iat_created` (by its fingerprint, never the token) through `record`. The limits and the record are
 * written after the token is stored (its fingerprint is the token's): if any fails, the token is deleted again and
 * never returned, so no one holds a token that is unrecorded or should have had a limit.
 */
export async function createInitialAccessToken(
  agentauth: Pick<Agentauth, 'provider' | 'storage'>,
  { tier, expiresIn, uses, limits }: InitialAccessTokenRequest,
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
    if (limits !== undefined) await recordRegistrationLimits(agentauth.storage.nonces, fingerprint, limits, expiresIn);
    const expiresAt = new Date((iat.exp ?? Math.floor(Date.now() / 1000) + expiresIn) * 1000).toISOString();
    const details = { ...actor, iat_id: fingerprint, tier, expires_at: expiresAt, uses: uses ?? null, grant_types: limits?.grant_types ?? null, scope: limits?.scope ?? null };
    await record({ type: 'registration.iat_created', details });
  } catch (err) {
    await iat.destroy().catch(() => undefined);
    throw err;
  }
  return { token, id: fingerprint, expiresIn, tier, ...(uses === undefined ? {} : { uses }), ...(limits === undefined ? {} : { limits }) };
}
