import { errors } from 'oidc-provider';

import { DEFAULT_TIERS } from '../../server/config.js';
import { checkRedirectUri, checkRegistrationRequest, registrationOrigin, unattendedScopes } from '../../server/policies/registration.js';
import type { RegistrationPolicy } from '../../server/policies/registration.js';
import { accessTokenLifetime, refreshTokenLifetime, tierOf } from '../../server/policies/tiers.js';
import { WindowLimiter } from '../../server/policies/rate-limit.js';

const limits = { tiers: DEFAULT_TIERS, defaultTier: 'standard', maxBearerTokenTTL: 300 };
const policy: RegistrationPolicy = {
  allowedAuthMethods: ['none', 'private_key_jwt', 'client_secret_basic'],
  allowedGrantTypes: ['authorization_code', 'refresh_token', 'client_credentials'],
  knownScopes: new Set(['openid', 'read', 'write']),
  anonymous: { clientCredentials: false, clientCredentialsScopes: [] },
};
const anon = { update: false, origin: 'anonymous' } as const;
const vouched = { update: false, origin: 'initial_access_token' } as const;

describe('tiers', () => {
  test('bearer access tokens never exceed maxBearerTokenTTL; bound ones get the tier and resource server TTL', () => {
    const bound = DEFAULT_TIERS.bound;
    expect(accessTokenLifetime(limits, bound, 3600, true)).toBe(900);
    expect(accessTokenLifetime(limits, bound, 600, true)).toBe(600);
    expect(accessTokenLifetime(limits, bound, 600, false)).toBe(300);
    expect(accessTokenLifetime({ ...limits, maxBearerTokenTTL: 60 }, bound, 600, false)).toBe(60);
    expect(accessTokenLifetime(limits, DEFAULT_TIERS.standard, undefined, true)).toBe(300);
  });

  test('refresh tokens never outlive the tier: idle lifetime, cut by the absolute lifetime from the first token', () => {
    const t = DEFAULT_TIERS.standard; // idle 1 d, absolute 7 d
    const now = 1_000_000;
    expect(refreshTokenLifetime(t, undefined, now)).toBe(86_400);
    expect(refreshTokenLifetime(t, now - 6 * 86_400, now)).toBe(86_400);
    expect(refreshTokenLifetime(t, now - 7 * 86_400 + 100, now)).toBe(100);
    expect(refreshTokenLifetime(t, now - 8 * 86_400, now)).toBe(1);
  });

  test('a client without a tier gets the default; an unknown tier fails closed', () => {
    expect(tierOf(limits, { metadata: () => ({}) }).name).toBe('standard');
    expect(tierOf(limits, { metadata: () => ({ agentauth_tier: 'strict' }) })).toMatchObject({ name: 'strict', dpopNonce: true });
    expect(() => tierOf(limits, { metadata: () => ({ agentauth_tier: 'gone' }) })).toThrow(/not configured/);
  });
});

/** The error_description a refusal carries (the Error message is the OAuth error code). */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return `${(err as Error).message}: ${(err as { error_description?: string }).error_description}`;
  }
  throw new Error('expected a refusal');
}

describe('registration policy (pure)', () => {
  const ok = { redirect_uris: ['https://client.example.com/cb'], token_endpoint_auth_method: 'none' };

  test('applies the tier default: a DPoP-requiring tier sets dpop_bound_access_tokens and refuses false', () => {
    expect(checkRegistrationRequest(ok, policy, DEFAULT_TIERS.bound, anon).dpop_bound_access_tokens).toBe(true);
    expect(refusal(() => checkRegistrationRequest({ ...ok, dpop_bound_access_tokens: false }, policy, DEFAULT_TIERS.bound, anon))).toMatch(
      /^invalid_client_metadata: dpop_bound_access_tokens must be true/,
    );
    expect(checkRegistrationRequest(ok, policy, DEFAULT_TIERS.standard, anon).dpop_bound_access_tokens).toBeUndefined();
  });

  test('update-only fields are accepted only on RFC 7592 updates', () => {
    expect(refusal(() => checkRegistrationRequest({ ...ok, client_id: 'x' }, policy, DEFAULT_TIERS.standard, anon))).toMatch(
      /^invalid_client_metadata: client_id is not a supported/,
    );
    expect(checkRegistrationRequest({ ...ok, client_id: 'x' }, policy, DEFAULT_TIERS.standard, { update: true, current: {} }).client_id).toBe('x');
  });

  test('an RFC 7592 update may send back every field the server returned, unchanged, but change none it assigns', () => {
    const current = { ...ok, client_id: 'x', require_auth_time: false, subject_type: 'public', agentauth_tier: 'standard', agentauth_registration: 'anonymous', client_id_issued_at: 5 };
    const update = { update: true, current, presentedToken: 'rat', clientUri: 'https://as.example.com/reg/x' } as const;
    const echoed = checkRegistrationRequest({ ...current, registration_access_token: 'rat', registration_client_uri: 'https://as.example.com/reg/x' }, policy, DEFAULT_TIERS.standard, update);
    for (const field of ['require_auth_time', 'subject_type', 'agentauth_tier', 'agentauth_registration', 'client_id_issued_at', 'registration_access_token', 'registration_client_uri']) {
      expect(echoed).not.toHaveProperty(field);
    }
    expect(refusal(() => checkRegistrationRequest({ ...current, require_auth_time: true }, policy, DEFAULT_TIERS.standard, update))).toMatch(/^invalid_client_metadata: require_auth_time cannot be changed/);
    expect(refusal(() => checkRegistrationRequest({ ...current, agentauth_tier: 'strict' }, policy, DEFAULT_TIERS.standard, update))).toMatch(/^invalid_client_metadata: agentauth_tier is assigned by the authorization server/);
    expect(refusal(() => checkRegistrationRequest({ ...current, agentauth_registration: 'operator' }, policy, DEFAULT_TIERS.standard, update))).toMatch(/^invalid_client_metadata: agentauth_registration is assigned/);
    expect(refusal(() => checkRegistrationRequest({ ...current, registration_access_token: 'other' }, policy, DEFAULT_TIERS.standard, update))).toMatch(/^invalid_client_metadata: registration_access_token is assigned/);
    expect(refusal(() => checkRegistrationRequest({ ...current, id_token_encrypted_response_alg: 'RSA-OAEP' }, policy, DEFAULT_TIERS.standard, update))).toMatch(/^invalid_client_metadata: id_token_encrypted_response_alg is not a supported/);
  });

  test('anonymous registrations get no client_credentials unless the operator enables it, and then only allowlisted scopes', () => {
    const cc = { token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'], scope: 'read' };
    expect(refusal(() => checkRegistrationRequest(cc, policy, DEFAULT_TIERS.standard, anon))).toMatch(/^invalid_client_metadata: grant_types client_credentials is not available to clients registered without an initial access token/);
    expect(checkRegistrationRequest(cc, policy, DEFAULT_TIERS.standard, vouched).grant_types).toEqual(['client_credentials']);
    const open = { ...policy, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } };
    expect(checkRegistrationRequest(cc, open, DEFAULT_TIERS.standard, anon).scope).toBe('read');
    expect(refusal(() => checkRegistrationRequest({ ...cc, scope: 'read write' }, open, DEFAULT_TIERS.standard, anon))).toMatch(/^invalid_client_metadata: scope contains "write", which clients registered without an initial access token may not receive/);
    // An update cannot turn an anonymous client into one with client_credentials.
    const current = { redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code'], agentauth_registration: 'anonymous' };
    expect(refusal(() => checkRegistrationRequest({ ...cc, client_id: 'x' }, policy, DEFAULT_TIERS.standard, { update: true, current }))).toMatch(/client_credentials is not available/);
  });

  test('unattended scopes: any for vouched clients, the allowlist for anonymous ones if enabled, else none', () => {
    expect(unattendedScopes('operator', policy.anonymous)).toBe('any');
    expect(unattendedScopes('initial_access_token', policy.anonymous)).toBe('any');
    expect(unattendedScopes('anonymous', policy.anonymous)).toBeUndefined();
    expect(unattendedScopes('anonymous', { clientCredentials: true, clientCredentialsScopes: ['read'] })).toEqual(new Set(['read']));
    expect(registrationOrigin({})).toBe('anonymous');
    expect(registrationOrigin({ agentauth_registration: 'bogus' })).toBe('anonymous');
    expect(registrationOrigin({ agentauth_registration: 'operator' })).toBe('operator');
  });

  test('errors carry the RFC 7591 codes', () => {
    try {
      checkRegistrationRequest({ ...ok, foo: 1 }, policy, DEFAULT_TIERS.standard, anon);
    } catch (err) {
      expect(err).toBeInstanceOf(errors.InvalidClientMetadata);
    }
    expect.assertions(1);
  });

  test.each([
    ['https://client.example.com/cb', true],
    ['http://127.0.0.1:8080/cb', true],
    ['http://[::1]/cb', true],
    ['http://localhost:3000/callback', true],
    ['http://client.example.com/cb', false],
    ['http://127.0.0.1.evil.com/cb', false],
    ['https://user:pass@client.example.com/cb', false],
    ['javascript:alert(1)', false],
    ['relative/path', false],
  ])('redirect URI %s allowed: %s', (uri, allowed) => {
    if (allowed) expect(() => checkRedirectUri('redirect_uris', uri)).not.toThrow();
    else expect(refusal(() => checkRedirectUri('redirect_uris', uri))).toMatch(/^invalid_redirect_uri: redirect_uris /);
  });
});

describe('WindowLimiter', () => {
  test('counts per key within a window and says when to retry', () => {
    const l = new WindowLimiter(2, 60);
    expect(l.hit('a', 0).allowed).toBe(true);
    expect(l.hit('a', 1000).allowed).toBe(true);
    expect(l.hit('a', 2000)).toEqual({ allowed: false, retryAfter: 58 });
    expect(l.hit('b', 2000).allowed).toBe(true);
    expect(l.hit('a', 60_000).allowed).toBe(true);
  });
});
