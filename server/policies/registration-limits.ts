import { REGISTRABLE_GRANT_TYPES, SCOPE_TOKEN, WALLET_GRANT_TYPE } from '../config.js';

/**
 * What the clients an initial access token registers may become: which grant types they may register and which scopes
 * (`agentauth clients iat create --grant-types ... --scope ...`, `POST /admin/iats`). The limits are stored beside the
 * token (server/initial-access-token-limits.ts) and copied onto each client it registers, as this server-assigned
 * metadata field (RFC 7591 §2 extension), so that the client's own RFC 7592 updates stay within them: the token is
 * gone by then, and a registration access token (a leaked one too) must not widen what the operator allowed.
 *
 * A client's `grant_types` must be a subset of the limits' grant types, and its `scope` a subset of their scope; a
 * client that registers (or updates) without `scope` gets the limits' scope, since a client without one may request
 * any scope this server defines (oidc-provider's validateClientScope, which every grant here applies).
 */
export const LIMITS_FIELD = 'agentauth_registration_limits';

export interface RegistrationLimits {
  grant_types?: string[];
  /** Space-separated scope-tokens (RFC 6749 §3.3), as a client's `scope` metadata is written. */
  scope?: string;
}

/** Most scopes one token's limits may list. */
export const MAX_LIMIT_SCOPES = 100;

/**
 * Whether a list of grant types names refresh_token without a grant it is issued with (authorization_code, the wallet
 * grant): a registration refuses it (server/policies/registration.ts), so limits naming it so could register nothing.
 */
export const refreshTokenAlone = (grantTypes: readonly string[]): boolean =>
  grantTypes.includes('refresh_token') && !grantTypes.some((g) => g === 'authorization_code' || g === WALLET_GRANT_TYPE);

/** Why `value` is not limits this module could have written (shape only: not whether this server knows the values). */
export function registrationLimitsProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'must be an object';
  const keys = Object.keys(value);
  const unknown = keys.find((k) => k !== 'grant_types' && k !== 'scope');
  if (unknown !== undefined) return `has an unknown member ${JSON.stringify(unknown.slice(0, 40))}`;
  if (keys.length === 0) return 'must limit grant_types, scope or both';
  const { grant_types: grantTypes, scope } = value as Record<string, unknown>;
  if (grantTypes !== undefined) {
    if (!Array.isArray(grantTypes) || grantTypes.length === 0 || grantTypes.some((g) => typeof g !== 'string')) return 'grant_types must be a non-empty array of strings';
    const unsupported = grantTypes.find((g) => !(REGISTRABLE_GRANT_TYPES as readonly string[]).includes(g as string));
    if (unsupported !== undefined) return `grant_types names ${JSON.stringify(String(unsupported).slice(0, 100))}, which is not a grant type clients register here`;
    if (new Set(grantTypes).size !== grantTypes.length) return 'grant_types names a grant type twice';
  }
  if (scope !== undefined) {
    if (typeof scope !== 'string' || scope === '') return 'scope must be a non-empty string of space-separated scope-tokens';
    const scopes = scope.split(' ');
    if (scopes.some((s) => !SCOPE_TOKEN.test(s))) return 'scope must be scope-tokens separated by single spaces (RFC 6749 section 3.3)';
    if (new Set(scopes).size !== scopes.length) return 'scope names a scope twice';
    if (scopes.length > MAX_LIMIT_SCOPES) return `scope may name at most ${MAX_LIMIT_SCOPES} scopes`;
  }
  return undefined;
}

/** `value` as limits, undefined for none, `'damaged'` for anything this server never writes (read as allowing nothing). */
export function asRegistrationLimits(value: unknown): RegistrationLimits | 'damaged' | undefined {
  if (value === undefined) return undefined;
  return registrationLimitsProblem(value) === undefined ? (value as RegistrationLimits) : 'damaged';
}

/** The limits stored on a client (its metadata), if it has any. */
export const limitsOfClient = (metadata: Record<string, unknown>): RegistrationLimits | 'damaged' | undefined => asRegistrationLimits(metadata[LIMITS_FIELD]);

/**
 * The limits a registration request's initial access token carries, as the registration step read them from the
 * store, for the client metadata validator (server/provider.ts) to record on the client: from there, never from the
 * request body.
 */
const ofRequest = new WeakMap<object, RegistrationLimits>();
export const setRequestLimits = (request: object, limits: RegistrationLimits): void => void ofRequest.set(request, limits);
export const requestLimits = (request: object): RegistrationLimits | undefined => ofRequest.get(request);
