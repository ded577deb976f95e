import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { errors } from 'oidc-provider';

import { DEFAULT_TIERS } from '../../server/config.js';
import { checkRedirectUri, checkRegistrationRequest, registrationOrigin, unattendedScopes } from '../../server/policies/registration.js';
import { shownClientName } from '../../server/policies/display-text.js';
import type { RegistrationPolicy } from '../../server/policies/registration.js';
import { accessTokenLifetime, refreshTokenLifetime, tierOf } from '../../server/policies/tiers.js';
import { EmbeddedStorage } from '../../adapters/memory.js';
import { SharedWindowLimit } from '../../server/limits/window.js';
import { checkCodeTarget, checkRefreshTarget } from '../../server/policies/refresh-request.js';
import { shouldIssueRefreshToken } from '../../server/policies/refresh.js';

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

  test('the token-exchange grant: refused to anonymous registrations unless tokenExchange.allowAnonymous; an update keeps it where the client has it', () => {
    const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
    const withExchange = { ...policy, allowedGrantTypes: [...policy.allowedGrantTypes, EXCHANGE] as RegistrationPolicy['allowedGrantTypes'] };
    const body = { redirect_uris: [], response_types: [], grant_types: [EXCHANGE], token_endpoint_auth_method: 'none' };
    expect(refusal(() => checkRegistrationRequest(body, withExchange, DEFAULT_TIERS.standard, anon))).toMatch(/^invalid_client_metadata: grant_types urn:ietf:params:oauth:grant-type:token-exchange is not available to clients registered without an initial access token on this server \(the operator enables it with tokenExchange.allowAnonymous\)/);
    expect(checkRegistrationRequest(body, { ...withExchange, anonymousTokenExchange: true }, DEFAULT_TIERS.standard, anon).grant_types).toEqual([EXCHANGE]);
    expect(checkRegistrationRequest(body, withExchange, DEFAULT_TIERS.standard, vouched).grant_types).toEqual([EXCHANGE]);
    // An anonymous client may not add it by an update; one that has it (registered while it was allowed) keeps it when
    // it sends its metadata back to change something else (RFC 7592 section 2.2).
    const without = { redirect_uris: [], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], agentauth_registration: 'anonymous' };
    expect(refusal(() => checkRegistrationRequest({ ...body, client_id: 'x' }, withExchange, DEFAULT_TIERS.standard, { update: true, current: without }))).toMatch(/token-exchange is not available/);
    const had = { ...without, response_types: [], grant_types: [EXCHANGE] };
    expect(checkRegistrationRequest({ ...body, client_id: 'x' }, withExchange, DEFAULT_TIERS.standard, { update: true, current: had }).grant_types).toEqual([EXCHANGE]);
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

  test.each([
    ['a trailing newline', 'https://client.example.com/cb\n', /printable ASCII.*"\\n" \(U\+000A\)/],
    ['a NUL character', 'https://client.example.com/c\u0000b', /printable ASCII.*\(U\+0000\)/],
    ['a tab inside the host', 'https://client.exa\tmple.com/cb', /printable ASCII.*\(U\+0009\)/],
    ['a space', 'https://client.example.com/my cb', /printable ASCII.*\(U\+0020\)/],
    ['full-width host characters', 'https://\uff43lient.example.com/cb', /printable ASCII.*xn--.*\(U\+FF43\)/],
    ['a non-ASCII path', 'https://client.example.com/caf\u00e9', /printable ASCII.*\(U\+00E9\)/],
    ['a malformed percent-escape', 'https://client.example.com/%ZZ', /malformed percent-escape at "%ZZ"/],
    ['a lone percent sign at the end', 'https://client.example.com/cb%', /malformed percent-escape at "%"/],
    ['an upper-case host', 'https://Client.Example.com/cb', /normalised form: register "https:\/\/client\.example\.com\/cb"/],
    ['an upper-case scheme', 'HTTPS://client.example.com/cb', /normalised form: register "https:\/\/client\.example\.com\/cb"/],
    ['the default port', 'https://client.example.com:443/cb', /normalised form: register "https:\/\/client\.example\.com\/cb"/],
    ['no path', 'https://client.example.com', /normalised form: register "https:\/\/client\.example\.com\/"/],
    ['dot segments', 'https://client.example.com/a/../cb', /normalised form: register "https:\/\/client\.example\.com\/cb"/],
    ['backslashes', 'https:\\\\client.example.com\\cb', /normalised form: register "https:\/\/client\.example\.com\/cb"/],
    ['a decimal IPv4 loopback', 'http://2130706433/cb', /normalised form: register "http:\/\/127\.0\.0\.1\/cb"/],
  ])('a redirect URI with %s is refused, naming the problem', (_label, uri, description) => {
    const why = refusal(() => checkRedirectUri('redirect_uris', uri));
    expect(why).toMatch(/^invalid_redirect_uri: redirect_uris /);
    expect(why).toMatch(description);
  });

  test.each([
    'https://client.example.com/cb?x=%2F&y=1',
    'https://xn--caf-dma.example/cb',
    'http://[::1]:8080/cb',
    'https://client.example.com/',
  ])('a normalised printable-ASCII redirect URI is accepted: %s', (uri) => {
    expect(() => checkRedirectUri('redirect_uris', uri)).not.toThrow();
  });

  test('post_logout_redirect_uris meet the same rules at registration', () => {
    expect(refusal(() => checkRegistrationRequest({ ...ok, post_logout_redirect_uris: ['https://client.example.com/bye\n'] }, policy, DEFAULT_TIERS.standard, anon))).toMatch(
      /^invalid_redirect_uri: post_logout_redirect_uris must be printable ASCII/,
    );
    expect(refusal(() => checkRegistrationRequest({ ...ok, redirect_uris: ['https://client.example.com/%zz'] }, policy, DEFAULT_TIERS.standard, anon))).toMatch(
      /^invalid_redirect_uri: redirect_uris contains a malformed percent-escape/,
    );
  });
});

describe('registration policy: an initial access token\'s limits (pure)', () => {
  const FIELD = 'agentauth_registration_limits';
  const machine = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' };
  const code = { grant_types: ['authorization_code', 'refresh_token'], redirect_uris: ['https://client.example.com/cb'], token_endpoint_auth_method: 'none' };
  const limited = (grantTypes: string[] | undefined, scope: string | undefined) => ({
    ...vouched,
    limits: { ...(grantTypes ? { grant_types: grantTypes } : {}), ...(scope ? { scope } : {}) },
  });

  test('grant types outside the limits are refused by name, each grant of a list (refresh_token too)', () => {
    expect(refusal(() => checkRegistrationRequest(code, policy, DEFAULT_TIERS.standard, limited(['authorization_code'], undefined)))).toBe(
      "invalid_client_metadata: grant_types may only contain authorization_code: the initial access token this client registers with allows only those (got \"refresh_token\")",
    );
    expect(checkRegistrationRequest(code, policy, DEFAULT_TIERS.standard, limited(['authorization_code', 'refresh_token'], undefined)).grant_types).toEqual(['authorization_code', 'refresh_token']);
  });

  test('a registration without scope gets the limits\' scopes (only those this server still defines); one with scope stays within them', () => {
    expect(checkRegistrationRequest(machine, policy, DEFAULT_TIERS.standard, limited(undefined, 'read write')).scope).toBe('read write');
    expect(checkRegistrationRequest(machine, policy, DEFAULT_TIERS.standard, limited(undefined, 'read gone')).scope).toBe('read');
    expect(refusal(() => checkRegistrationRequest(machine, policy, DEFAULT_TIERS.standard, limited(undefined, 'gone')))).toMatch(/^invalid_client_metadata: scope cannot be given: .* no resource server of this authorization server defines any of those any more$/);
    expect(checkRegistrationRequest({ ...machine, scope: 'write' }, policy, DEFAULT_TIERS.standard, limited(undefined, 'read write')).scope).toBe('write');
    expect(refusal(() => checkRegistrationRequest({ ...machine, scope: 'read write' }, policy, DEFAULT_TIERS.standard, limited(undefined, 'read')))).toMatch(/scope contains "write": the initial access token this client registers with allows only read/);
  });

  test('an update is held to the limits stored on the client; a reordered echo of them is the same value, a changed one is refused', () => {
    const current = { ...machine, scope: 'read', agentauth_registration: 'initial_access_token', [FIELD]: { grant_types: ['client_credentials'], scope: 'read' } };
    const update = (body: Record<string, unknown>) => checkRegistrationRequest(body, policy, DEFAULT_TIERS.standard, { update: true, current });
    const echoed = update({ ...machine, scope: 'read', [FIELD]: { scope: 'read', grant_types: ['client_credentials'] } });
    expect(echoed).not.toHaveProperty(FIELD); // kept as stored, never from the body
    expect(update({ ...machine }).scope).toBe('read'); // left out: the limits' scope, not "any"
    expect(refusal(() => update({ ...machine, scope: 'read write' }))).toMatch(/the initial access token this client registered with allows only read/);
    expect(refusal(() => update({ ...machine, [FIELD]: { grant_types: ['client_credentials'], scope: 'read write' } }))).toMatch(/is assigned by the authorization server and cannot be changed/);
    expect(refusal(() => checkRegistrationRequest(machine, policy, DEFAULT_TIERS.standard, { update: true, current: { ...current, [FIELD]: { grant_types: 'x' } } }))).toMatch(
      /^invalid_client_metadata: agentauth_registration_limits stored for this client cannot be read/,
    );
  });

  test('the client never names limits of its own, and a client without limits gets none', () => {
    expect(refusal(() => checkRegistrationRequest({ ...machine, [FIELD]: { scope: 'read' } }, policy, DEFAULT_TIERS.standard, vouched))).toMatch(/is set by the authorization server from the initial access token/);
    expect(checkRegistrationRequest(machine, policy, DEFAULT_TIERS.standard, vouched)).not.toHaveProperty(FIELD);
  });
});

describe('registration policy: types, URLs, algorithms and lists (pure)', () => {
  const ok = { redirect_uris: ['https://client.example.com/cb'], token_endpoint_auth_method: 'none' };
  const check = (body: Record<string, unknown>) => checkRegistrationRequest({ ...ok, ...body }, policy, DEFAULT_TIERS.standard, anon);
  const p256 = { kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' };
  const pkjwt = { token_endpoint_auth_method: 'private_key_jwt', grant_types: ['client_credentials'], redirect_uris: [], jwks: { keys: [p256] } };
  const vouchedCheck = (body: Record<string, unknown>) => checkRegistrationRequest({ ...ok, ...body }, policy, DEFAULT_TIERS.standard, vouched);

  // An object here reached oidc-provider, which turned it into a string and failed with a 500.
  test.each([
    ['id_token_signed_response_alg', { toString: 1 }, /^invalid_client_metadata: id_token_signed_response_alg must be one of ES256, EdDSA \(got \{"toString":1\}\)$/],
    ['id_token_signed_response_alg', 'RS256', /must be one of ES256, EdDSA \(got "RS256"\)/],
    ['token_endpoint_auth_signing_alg', { toString: 1 }, /^invalid_client_metadata: token_endpoint_auth_signing_alg must be one of ES256, ES384, EdDSA, PS256, RS256/],
    ['token_endpoint_auth_signing_alg', 'HS256', /must be one of ES256, ES384, EdDSA, PS256, RS256 \(got "HS256"\)/],
  ])('%s = %j is refused, naming the field', (field, value, description) => {
    expect(refusal(() => vouchedCheck({ ...pkjwt, [field]: value }))).toMatch(description);
  });

  test('token_endpoint_auth_signing_alg must be one a registered key signs with, and only with private_key_jwt', () => {
    expect(vouchedCheck({ ...pkjwt, token_endpoint_auth_signing_alg: 'ES256' }).token_endpoint_auth_signing_alg).toBe('ES256');
    for (const alg of ['RS256', 'ES384', 'EdDSA']) {
      expect(refusal(() => vouchedCheck({ ...pkjwt, token_endpoint_auth_signing_alg: alg }))).toBe(
        `invalid_client_metadata: token_endpoint_auth_signing_alg is ${alg}, which none of the keys in jwks can sign with: the client could never authenticate`,
      );
    }
    // A key that names its alg counts for that alg only.
    expect(refusal(() => vouchedCheck({ ...pkjwt, jwks: { keys: [{ ...p256, alg: 'ES256' }] }, token_endpoint_auth_signing_alg: 'ES384' }))).toMatch(/none of the keys/);
    expect(refusal(() => check({ token_endpoint_auth_signing_alg: 'ES256' }))).toBe('invalid_client_metadata: token_endpoint_auth_signing_alg is only used with private_key_jwt');
  });

  test.each([
    ['https:example.com', /^invalid_client_metadata: client_uri must be an https URL$/],
    [' \thttps://example.com/ ', /must be an https URL$/],
    ['https://exa\nmple.com/', /must be printable ASCII without spaces .* it contains "\\n" \(U\+000A\)$/],
    ['https://example.com/\u0000', /contains "\\u0000" \(U\+0000\)$/],
    ['https://example.com/\u202egpj.exe', /contains "\u202e" \(U\+202E\)$/],
    ['https://user:pass@example.com/', /must not contain user credentials$/],
    [`https://example.com/${'a'.repeat(2000)}`, /must be at most 2000 characters \(it has 2020\)$/],
  ])('client_uri %j is refused', (uri, description) => {
    expect(refusal(() => check({ client_uri: uri }))).toMatch(description);
    for (const field of ['logo_uri', 'tos_uri', 'policy_uri']) expect(refusal(() => check({ [field]: uri }))).toMatch(new RegExp(`^invalid_client_metadata: ${field} `));
  });

  test('an https URL is kept as the client wrote it', () => {
    expect(check({ client_uri: 'https://agent.example.com', logo_uri: 'https://agent.example.com/logo.png?v=2' })).toMatchObject({ client_uri: 'https://agent.example.com', logo_uri: 'https://agent.example.com/logo.png?v=2' });
  });

  test('lists: no entry twice, grant_types not empty, at most 20 redirect URIs of each kind', () => {
    expect(refusal(() => check({ redirect_uris: ['https://client.example.com/cb', 'https://client.example.com/cb'] }))).toBe('invalid_redirect_uri: redirect_uris lists "https://client.example.com/cb" twice');
    expect(refusal(() => check({ grant_types: ['authorization_code', 'authorization_code'] }))).toMatch(/grant_types lists "authorization_code" twice/);
    expect(refusal(() => check({ response_types: ['code', 'code'] }))).toMatch(/response_types lists "code" twice/);
    expect(refusal(() => check({ grant_types: [] }))).toMatch(/grant_types must contain at least one grant type/);
    const uris = (n: number) => Array.from({ length: n }, (_, i) => `http://127.0.0.1:${8000 + i}/cb`);
    expect(check({ redirect_uris: uris(20) }).redirect_uris).toHaveLength(20);
    expect(refusal(() => check({ redirect_uris: uris(21) }))).toBe('invalid_redirect_uri: redirect_uris may list at most 20 URIs (got 21)');
    expect(refusal(() => check({ post_logout_redirect_uris: uris(21) }))).toBe('invalid_redirect_uri: post_logout_redirect_uris may list at most 20 URIs (got 21)');
  });
});

describe('SharedWindowLimit (on the store\'s atomic counter)', () => {
  test('counts per subject within an epoch-aligned window, says when the window ends, and starts over in the next', async () => {
    const storage = new EmbeddedStorage({ dataDir: mkdtempSync(join(tmpdir(), 'agentauth-limit-')) });
    await storage.init();
    const l = new SharedWindowLimit(storage.nonces, 'test', { max: 2, windowSeconds: 60 });
    const t0 = 1_800_000_000_000 - (1_800_000_000_000 % 60_000); // the start of a window
    expect(await l.hit('a', t0)).toEqual({ allowed: true, retryAfter: 60 });
    expect((await l.hit('a', t0 + 1000)).allowed).toBe(true);
    expect(await l.hit('a', t0 + 2000)).toEqual({ allowed: false, retryAfter: 58 });
    expect((await l.hit('b', t0 + 2000)).allowed).toBe(true);
    expect((await l.hit('a', t0 + 60_000)).allowed).toBe(true);
    await storage.close();
  });

  test('max 0 turns the limit off without touching the store', async () => {
    const store = { takeAttempt: () => Promise.reject(new Error('must not be called')) };
    const l = new SharedWindowLimit(store, 'off', { max: 0, windowSeconds: 60 });
    expect(l.enabled).toBe(false);
    expect((await l.hit('a')).allowed).toBe(true);
  });

  test('a storage error propagates (callers fail closed)', async () => {
    const store = { takeAttempt: () => Promise.reject(new Error('down')) };
    await expect(new SharedWindowLimit(store, 'down', { max: 5, windowSeconds: 60 }).hit('a')).rejects.toThrow('down');
  });
});

describe('refresh request target (pure)', () => {
  const A = 'https://a.example.com';
  const B = 'https://b.example.com';

  test.each([
    ['the granted resource', A, A],
    ['no resource on a single-resource token', undefined, A],
    ['no resource on a token without resources', undefined, undefined],
    ['one of several granted resources', B, [A, B]],
  ])('naming %s is accepted', (_label, requested, granted) => {
    expect(() => checkRefreshTarget({ requested, granted, oidcScopesOnly: false })).not.toThrow();
  });

  test('a resource the token was not granted is invalid_target, naming both', () => {
    expect(refusal(() => checkRefreshTarget({ requested: B, granted: A, oidcScopesOnly: false }))).toBe(
      `invalid_target: resource ${B} was not granted to this refresh token; it covers ${A}`,
    );
    expect(refusal(() => checkRefreshTarget({ requested: A, granted: undefined, oidcScopesOnly: false }))).toMatch(/covers no resource$/);
  });

  test('a code exchange: one resource the code covers, or none; another, or several, are refused naming what it covers', () => {
    expect(() => checkCodeTarget({ requested: A, granted: [A, B] })).not.toThrow();
    expect(() => checkCodeTarget({ requested: undefined, granted: [A, B] })).not.toThrow();
    expect(refusal(() => checkCodeTarget({ requested: B, granted: [A] }))).toBe(`invalid_target: resource ${B} was not part of the authorization request; this authorization code covers ${A}`);
    // A code of no resource (openid alone): said so, not an empty list.
    expect(refusal(() => checkCodeTarget({ requested: A, granted: [] }))).toMatch(/this authorization code covers no resource$/);
    expect(refusal(() => checkCodeTarget({ requested: [A, A], granted: [A] }))).toBe(`invalid_target: name one resource per token request (got 2); this authorization code covers ${A}`);
  });

  test('more than one resource in one refresh is invalid_target', () => {
    expect(refusal(() => checkRefreshTarget({ requested: [A, B], granted: [A, B], oidcScopesOnly: false }))).toMatch(/^invalid_target: name one resource per refresh request \(got 2\)/);
  });

  test('a token for several resources needs the resource named, unless only OpenID scopes are asked for', () => {
    expect(refusal(() => checkRefreshTarget({ requested: undefined, granted: [A, B], oidcScopesOnly: false }))).toMatch(/^invalid_target: this refresh token covers several resources/);
    expect(() => checkRefreshTarget({ requested: undefined, granted: [A, B], oidcScopesOnly: true })).not.toThrow();
  });

  test('refusals are oidc-provider InvalidTarget errors (400)', () => {
    expect.assertions(2);
    try {
      checkRefreshTarget({ requested: B, granted: A, oidcScopesOnly: false });
    } catch (err) {
      expect(err).toBeInstanceOf(errors.InvalidTarget);
      expect((err as { statusCode: number }).statusCode).toBe(400);
    }
  });
});

describe('refresh-token issuance (pure)', () => {
  const client = (clientAuthMethod: string, refresh = true) => ({ clientAuthMethod, grantTypeAllowed: (t: string) => refresh || t !== 'refresh_token' });

  test('a public client without DPoP gets a rotating bearer refresh token only where its tier says rotate', () => {
    expect(shouldIssueRefreshToken(client('none'), false, 'rotate')).toBe(true);
    expect(shouldIssueRefreshToken(client('none'), false, 'dpop')).toBe(false);
    expect(shouldIssueRefreshToken(client('none'), false)).toBe(false);
  });

  test('a DPoP-bound public client and an authenticating client always get one; a client not allowed the grant never', () => {
    expect(shouldIssueRefreshToken(client('none'), true, 'dpop')).toBe(true);
    expect(shouldIssueRefreshToken(client('private_key_jwt'), false, 'dpop')).toBe(true);
    expect(shouldIssueRefreshToken(client('none', false), true, 'rotate')).toBe(false);
    expect(shouldIssueRefreshToken(client('client_secret_basic', false), false, 'rotate')).toBe(false);
  });

  test('the shipped tiers: standard rotates bearer public refresh with a 5 s grace; strict demands DPoP and has no grace', () => {
    expect(DEFAULT_TIERS.standard).toMatchObject({ publicClientRefresh: 'rotate', refreshGraceSeconds: 5 });
    expect(DEFAULT_TIERS.strict).toMatchObject({ publicClientRefresh: 'dpop', refreshGraceSeconds: 0 });
  });
});

describe('names shown to people (pure)', () => {
  test('a client_name registration accepts is shown; anything else (a legacy record) is replaced by the client id', () => {
    expect(shownClientName('Nightly report agent', 'c1')).toBe('Nightly report agent');
    expect(shownClientName('Agent \u{1F916}', 'c1')).toBe('Agent \u{1F916}');
    for (const bad of ['Bank\u202E tneilC', 'a\nURI: https://evil.test', 'x\u200B', '\u3164', '', 'a'.repeat(201), 42, undefined]) {
      expect(shownClientName(bad, 'c1')).toBe('c1');
    }
  });
});

describe('a public client sending its code to the person\'s own machine is approved each time (pure)', () => {
  const ctx = (redirect: string, method = 'none', consent?: object) =>
    ({ oidc: { client: { clientAuthMethod: method }, params: { redirect_uri: redirect, response_type: 'code' }, result: consent ? { consent } : undefined } }) as never;

  test.each([
    'http://127.0.0.1:65000/callback',
    'http://[::1]:8080/cb',
    'http://localhost/cb',
    'https://127.0.0.2:8443/cb',
    'https://agent.localhost/cb',
    'http://localhost./cb',
  ])('%s: asked', async (redirect) => {
    const { loopbackConsentNeeded } = await import('../../server/policies/authorization-scope.js');
    expect(loopbackConsentNeeded(ctx(redirect))).toBe(true);
  });

  test('not for a redirect elsewhere, a confidential client, or a request whose consent was just given', async () => {
    const { loopbackConsentNeeded } = await import('../../server/policies/authorization-scope.js');
    expect(loopbackConsentNeeded(ctx('https://agent.example.com/cb'))).toBe(false);
    expect(loopbackConsentNeeded(ctx('http://127.0.0.1:65000/callback', 'client_secret_basic'))).toBe(false);
    expect(loopbackConsentNeeded(ctx('http://127.0.0.1:65000/callback', 'private_key_jwt'))).toBe(false);
    expect(loopbackConsentNeeded(ctx('http://127.0.0.1:65000/callback', 'none', { grantId: 'g' }))).toBe(false);
  });
});
