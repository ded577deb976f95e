import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import introspection from 'oidc-provider/lib/actions/introspection.js';
import * as registration from 'oidc-provider/lib/actions/registration.js';
import revocation from 'oidc-provider/lib/actions/revocation.js';
import * as refreshGrant from 'oidc-provider/lib/actions/grants/refresh_token.js';
import * as grants from 'oidc-provider/lib/helpers/grants.js';
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';
import * as validateDpopModule from 'oidc-provider/lib/helpers/validate_dpop.js';
import tokenSteps from 'oidc-provider/lib/actions/token.js';
import authorizationAction from 'oidc-provider/lib/actions/authorization/index.js';
import userinfoSteps from 'oidc-provider/lib/actions/userinfo.js';
import { errors } from 'oidc-provider';

import { PROVIDER_BODY_LIMIT } from '../../server/http/body-parse-errors.js';
import { prepareRegistrationSteps } from '../../server/http/registration-steps.js';
import { prepareRequestObjectErrors } from '../../server/http/request-object-errors.js';
import { prepareScopeErrors, SCOPE_NOT_ALLOWED } from '../../server/http/scope-errors.js';
import { prepareUserinfoErrors } from '../../server/http/userinfo-errors.js';
import { prepareTokenLimitStep } from '../../server/limits/token-steps.js';

/**
 * agentauth patches or calls these internals of oidc-provider (server/structured-tokens.ts, server/key-watcher.ts,
 * server/grants/wallet-signature.ts, server/grants/refresh-grace.ts). They are not public API: this test fails on any upgrade, so whoever upgrades
 * re-checks each use before changing the pinned version in package.json.
 */
describe('oidc-provider internals agentauth relies on', () => {
  test('the installed version is exactly the pinned one', () => {
    const require = createRequire(import.meta.url);
    const pkg = JSON.parse(readFileSync(join(dirname(require.resolve('oidc-provider')), '..', 'package.json'), 'utf8')) as { version: string };
    const ours = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(ours.dependencies['oidc-provider']).toBe('9.13.3');
    expect(pkg.version).toBe('9.13.3');
  });

  test('the body parser\'s limit and failure reasons are the ones server/http/body-parse-errors.ts explains', () => {
    const require = createRequire(import.meta.url);
    const source = readFileSync(join(dirname(require.resolve('oidc-provider')), 'shared', 'selective_body.js'), 'utf8');
    expect(source).toContain(`const LIMIT = ${PROVIDER_BODY_LIMIT / 1024} * 1024;`);
    expect(source).toContain("throw new Error('request entity too large')");
    expect(source).toContain("throw new Error('request size did not match content length')");
    expect(source).toContain("throw new InvalidRequest('failed to parse the request body', undefined, { cause })");
    // server/http/form-body-utf8.ts: a form is stored by assignment inside that try, through the context's `body`,
    // which the request context does not declare as a field of its own (an accessor on its prototype sees it).
    expect(source).toContain('ctx.oidc.body = querystring.parse(body.toString());');
    const context = readFileSync(join(dirname(require.resolve('oidc-provider')), 'helpers', 'oidc_context.js'), 'utf8');
    expect(context).not.toMatch(/^\s+(#?body\s*[;=]|this\.body\s*=)/m);
  });

  test('client authentication refuses missing and unreadable credentials with the descriptions server/http/client-auth-errors.ts maps', () => {
    const require = createRequire(import.meta.url);
    const source = readFileSync(join(dirname(require.resolve('oidc-provider')), 'shared', 'client_auth.js'), 'utf8');
    for (const description of [
      'no client authentication mechanism provided',
      'invalid authorization header value format',
      'client_id and client_secret in the authorization header are not properly encoded',
      'client_secret must be provided in the Authorization header',
    ]) {
      expect(source).toMatch(new RegExp(`throw new InvalidRequest\\(\\s*'${description}'`));
    }
    expect(source).toContain('export default [rejectClientAuthDupes, setWWWAuthenticateHeader, authenticateClient];');
    expect(source).toContain("if (err.statusCode === 401 && ctx.headers.authorization !== undefined) {");
  });

  test('a grant that ends with no scope is access_denied, on the condition server/policies/authorization-scope.ts refuses first', () => {
    const require = createRequire(import.meta.url);
    const lib = dirname(require.resolve('oidc-provider'));
    const source = readFileSync(join(lib, 'actions', 'authorization', 'interactions.js'), 'utf8');
    expect(source).toContain('!oidc.grant.getOIDCScopeFiltered(oidc.requestParamOIDCScopes)');
    expect(source).toContain('(resource) => !oidc.grant.getResourceScopeFiltered(resource, oidc.requestParamScopes),');
    expect(source).toContain("'authorization request resolved without requesting interactions but no scope was granted'");
    // The consent checks grant what the request names of the OpenID scopes and of each resource server's scopes.
    const consent = readFileSync(join(lib, 'helpers', 'interaction_policy', 'prompts', 'consent.js'), 'utf8');
    expect(consent).toContain('for (const scope of oidc.requestParamOIDCScopes) {');
    expect(consent).toContain('if (availableScopes.has(scope) && !encounteredScopes.has(scope)) {');
  });

  test('the introspection and revocation pipelines still have the steps that are replaced', () => {
    const names = (list: Array<{ name: string }>) => list.map((h) => h.name);
    // After patching (a Provider was built in this process or not), the replaced steps keep their names.
    expect(names(introspection)).toEqual(expect.arrayContaining(['renderTokenResponse']));
    expect(names(introspection).some((n) => n === 'rejectStructuredTokens' || n === 'acceptStructuredTokens')).toBe(true);
    expect(names(revocation)).toEqual(expect.arrayContaining(['revokeToken']));
    expect(names(revocation).some((n) => n === 'rejectStructuredTokens' || n === 'acceptStructuredTokens')).toBe(true);
  });

  test('the registration actions still have the steps agentauth inserts its own next to (server/http/registration-steps.ts)', () => {
    const names = (list: Array<{ name: string }>) => list.map((h) => h.name);
    expect(names(registration.post)).toEqual(expect.arrayContaining(['bound selectiveBody', 'validateInitialAccessToken', 'registrationResponse']));
    expect(names(registration.get)).toEqual(expect.arrayContaining(['validateRegistrationAccessToken', 'clientReadResponse']));
    expect(names(registration.put)).toEqual(expect.arrayContaining(['validateRegistrationAccessToken', 'validateJsonBody', 'equalChecks', 'clientUpdateResponse']));
    expect(names(registration.del)).toEqual(expect.arrayContaining(['validateRegistrationAccessToken', 'clientRemoveResponse']));
    // Once patched (idempotent), each step sits where the policy must run: before the step that answers.
    prepareRegistrationSteps();
    prepareRegistrationSteps();
    const post = names(registration.post);
    expect(post.filter((n) => n === 'agentauthRegistrationQuota')).toHaveLength(1);
    // oidc-provider's JSON body step is replaced by agentauth's strict one (server/http/registration-steps.ts).
    expect(post).not.toContain('bound selectiveBody');
    expect(post.filter((n) => n === 'strictJsonBody')).toHaveLength(1);
    expect(post.indexOf('agentauthRegistrationQuota')).toBe(post.indexOf('strictJsonBody') - 1);
    expect(post.indexOf('strictJsonBody')).toBe(post.indexOf('validateJsonBody') - 1);
    expect(post.indexOf('agentauthRegistrationPolicy')).toBe(post.indexOf('validateInitialAccessToken') + 1);
    expect(names(registration.get).indexOf('agentauthRotateOnRead')).toBe(names(registration.get).indexOf('clientReadResponse') - 1);
    const put = names(registration.put);
    expect(put).not.toContain('bound selectiveBody');
    expect(put.indexOf('strictJsonBody')).toBe(put.indexOf('validateRegistrationAccessToken') + 1);
    expect(put.indexOf('agentauthUpdatePolicy')).toBeLessThan(put.indexOf('equalChecks'));
    expect(put.indexOf('agentauthRotateOnUpdate')).toBe(put.indexOf('clientUpdateResponse') - 1);
    expect(names(registration.del).indexOf('agentauthRevokeOnDelete')).toBe(names(registration.del).indexOf('clientRemoveResponse') - 1);
    // The Bearer challenge for a credential in the wrong form sits inside oidc-provider's challenge step (which answers
    // 401s only), before the step that reads the token with ctx.oidc.getAccessToken.
    for (const [list, reads] of [[registration.post, 'validateInitialAccessToken'], [registration.get, 'validateRegistrationAccessToken'], [registration.put, 'validateRegistrationAccessToken'], [registration.del, 'validateRegistrationAccessToken']] as const) {
      const steps = names(list);
      expect(steps.filter((n) => n === 'agentauthBearerFormChallenge')).toHaveLength(1);
      expect(steps.indexOf('agentauthBearerFormChallenge')).toBe(steps.indexOf('setWWWAuthenticateHeader') + 1);
      expect(steps.indexOf('agentauthBearerFormChallenge')).toBeLessThan(steps.indexOf(reads));
    }
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const actions = readFileSync(join(lib, 'actions', 'registration.js'), 'utf8');
    expect(actions).toContain('const setWWWAuthenticate = getSetWWWAuthenticateHeader({ dpop: false });');
    expect(readFileSync(join(lib, 'shared', 'set_www_authenticate_header.js'), 'utf8')).toContain("if (!err.expose || (dpop === false && err.statusCode !== 401)) throw err;");
    // getAccessToken is a method of the context's class (the step wraps it per request), and says this of a DPoP scheme.
    const context = readFileSync(join(lib, 'helpers', 'oidc_context.js'), 'utf8');
    expect(context).toMatch(/^ {4}getAccessToken\(\{$/m);
    expect(context).toContain("throw new InvalidRequest('`DPoP` header not provided');");
  });

  test('the token action and the authorization code grant: where agentauth\'s token limit step (server/limits/token-steps.ts) and code checks (server/grants/code-checks.ts) go', () => {
    const names = () => (tokenSteps as Array<{ name: string }>).map((h) => h.name);
    expect(names()).toEqual(expect.arrayContaining(['stripGrantIrrelevantParams', 'callTokenHandler']));
    prepareTokenLimitStep();
    prepareTokenLimitStep();
    const list = names();
    expect(list.filter((n) => n === 'agentauthTokenRequestLimit')).toHaveLength(1);
    expect(list.indexOf('agentauthTokenRequestLimit')).toBe(list.indexOf('stripGrantIrrelevantParams') - 1);
    // The rule the step applies before the code is consumed: oidc-provider's own, in resolve_resource.js, with its error.
    const require = createRequire(import.meta.url);
    const lib = dirname(require.resolve('oidc-provider'));
    expect(readFileSync(join(lib, 'helpers', 'resolve_resource.js'), 'utf8')).toContain('if (resource && !model.resourceIndicators.has(resource)) {\n      throw new InvalidTarget();');
    // The resolution the step runs early is the one issueTokens runs after consuming the code: resolve_resource with
    // the configured userinfo and resourceIndicators and no scope, then getResourceServerInfo.
    const grantAuthorization = readFileSync(join(lib, 'helpers', 'grant_authorization.js'), 'utf8');
    expect(grantAuthorization).toContain('const resource = await resolveResource(ctx, source, { userinfo, resourceIndicators }, scope);');
    expect(grantAuthorization).toContain('await resourceIndicators.getResourceServerInfo(ctx, resource, ctx.oidc.client),');
    expect(readFileSync(join(lib, 'helpers', 'grant_common.js'), 'utf8')).toContain('await resolveAndApplyResource(ctx, source, at, grant);');
    // server/http/unmatched.ts asks the provider's router which methods a path has, as requests are routed.
    expect(readFileSync(join(lib, 'helpers', 'router.js'), 'utf8')).toContain('  match(method, path) {');
    expect(readFileSync(join(lib, 'helpers', 'initialize_app.js'), 'utf8')).toContain('instance(this).router = router;');
    // The checks issueTokens makes after the code is consumed, which the step makes before: their order and errors.
    const common = readFileSync(join(lib, 'helpers', 'grant_common.js'), 'utf8');
    const order = ["throw new InvalidGrant('missing DPoP proof JWT');", 'await applyDpopBinding(provider, ctx, dPoP, at);', "throw new InvalidGrant('DPoP proof key thumbprint does not match dpop_jkt');", 'await resolveAndApplyResource(ctx, source, at, grant);'];
    expect(order.map((s) => common.indexOf(s)).every((i, n, all) => i > 0 && (n === 0 || i > all[n - 1]!))).toBe(true);
    // The replay record's id the step looks up (server/dpop-replay.ts replayId).
    expect(readFileSync(join(lib, 'models', 'replay_detection.js'), 'utf8')).toContain("const id = crypto.hash('sha256', `${iss}${jti}`, 'base64url');");
    // validateDpop keeps its result per request, so the handler reuses the step's.
    expect(readFileSync(join(lib, 'helpers', 'validate_dpop.js'), 'utf8')).toContain('if (weakMap.has(ctx)) {');
    // The replay record lasts while the proof would be accepted (server/provider.ts dpopProofAcceptedUntil): a proof
    // without a nonce is taken while |now - iat| <= CHALLENGE_OK_WINDOW, and getDpopJwt hands back the verified proof.
    const challenge = readFileSync(join(lib, 'helpers', 'challenge.js'), 'utf8');
    expect(challenge).toContain('const STEP = 60;');
    expect(challenge).toContain('export const CHALLENGE_OK_WINDOW = STEP * 5;');
    const dpop = readFileSync(join(lib, 'helpers', 'validate_dpop.js'), 'utf8');
    expect(dpop).toContain('const diff = Math.abs(now - payload.iat);');
    // ... when it has no nonce, as oidc-provider reads that: an empty one counts as none.
    expect(dpop).toContain('    if (!payload.nonce) {\n      const now = epochTime();');
    expect(dpop).toContain('export function getDpopJwt(provider, ctx) {');
    // server/provider.ts names the URL a refused htu was compared with (dpopExpectedHtu) as validateDpop computes it,
    // and lists the accepted algorithms when jose refuses the proof's alg against that list (ERR_JOSE_ALG_NOT_ALLOWED).
    expect(dpop).toContain('const expected = new URL(ctx.oidc.urlFor(ctx.oidc.route)).href;');
    expect(dpop).toContain("throw new InvalidDpopProof('DPoP proof htu mismatch');");
    expect(dpop).toContain("jwt = await jwtVerify(proof, EmbeddedJWK, { algorithms: dPoPSigningAlgValues, typ: 'dpop+jwt' });");
    expect(typeof validateDpopModule.getDpopJwt).toBe('function');
    // A rotated refresh token takes the old one's binding, which server/grants/refresh-binding.ts fills in from the
    // proof validateDpop verified (its default export, answering from the per-request cache above).
    expect(readFileSync(join(lib, 'actions', 'grants', 'refresh_token.js'), 'utf8')).toContain('      jkt: refreshToken.jkt,');
    expect(typeof validateDpopModule.default).toBe('function');
    // The code checks run in the code's consume(), called by consumeGrantSource once the grant's own checks passed.
    expect(readFileSync(join(lib, 'helpers', 'grant_source.js'), 'utf8')).toContain('  await source.consume();\n}');
    const code = readFileSync(join(lib, 'actions', 'grants', 'authorization_code.js'), 'utf8');
    expect(code.indexOf("await consumeGrantSource(ctx, code, 'authorization code');")).toBeLessThan(code.indexOf('await issueTokens('));
  });

  test('CORS: what server/http/early-refusal-cors.ts and the storage gate read of it', () => {
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const app = readFileSync(join(lib, 'helpers', 'initialize_app.js'), 'utf8');
    // Every routed request gets ctx.oidc as an own property, before any CORS step: an answer with it is the route's.
    expect(app).toContain("Object.defineProperty(ctx, 'oidc', {");
    expect(app).toContain('router.post(name, route, ensureOIDC, ensureSessionSave, ...stack);');
    // A route served cross-origin has a `cors.<name>` preflight route on the same path, answered by the CORS step alone.
    expect(app).toContain("post('token', routes.token, error('grant.error'), CORS.clientWithDPoP, ...token);");
    expect(app).toContain("options('cors.token', routes.token, CORS.clientWithDPoP, CORS.respond);");
    expect(app).toContain('respond: () => {},');
    // oidc-provider's own CORS step: skipped when a CORS header is set already, and removes the header it set for a
    // client's disallowed origin (which the early-refusal check must then leave removed).
    const cors = readFileSync(join(lib, 'shared', 'cors.js'), 'utf8');
    expect(cors).toContain("if (headers.find((x) => x.toLowerCase().startsWith('access-control-'))) {");
    expect(cors).toContain("ctx.remove('Access-Control-Allow-Origin');");
  });

  test('PAR: the request is saved by its last step, after checkResource (server/policies/authorization-scope.ts checks it there)', () => {
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const stack = readFileSync(join(lib, 'actions', 'authorization', 'index.js'), 'utf8');
    const at = (step: string) => stack.indexOf(`use(${step},`);
    expect(at('checkResource')).toBeGreaterThan(0);
    expect(at('checkResource')).toBeLessThan(at('pushedAuthorizationRequestResponse'));
    expect(readFileSync(join(lib, 'actions', 'authorization', 'pushed_authorization_requests.js'), 'utf8')).toContain('  const id = await requestObject.save(ttl);');
  });

  test('request objects: the refusals server/http/request-object-errors.ts describes, and the step it goes in front of', () => {
    // Both come without a description of their own (the step gives one only where there is none).
    expect(new errors.RequestNotSupported().error_description).toBeUndefined();
    expect(new errors.RequestUriNotSupported().error_description).toBeUndefined();
    const names = (endpoint: string) => authorizationAction(endpoint).map((h) => h.name);
    // The request_uri of another origin is refused after rejectUnsupported, by loadPushedAuthorizationRequest (at /auth).
    expect(names('authorization').indexOf('rejectUnsupported')).toBeLessThan(names('authorization').indexOf('loadPushedAuthorizationRequest'));
    prepareRequestObjectErrors();
    prepareRequestObjectErrors();
    for (const endpoint of ['authorization', 'pushed_authorization_request']) {
      const list = names(endpoint);
      expect(list.filter((n) => n === 'describeRequestObjectRefusals')).toHaveLength(1);
      expect(list.indexOf('describeRequestObjectRefusals')).toBe(list.indexOf('rejectUnsupported') - 1);
    }
    // The same (cached) list is what the routes are built from.
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const app = readFileSync(join(lib, 'helpers', 'initialize_app.js'), 'utf8');
    expect(app).toContain("const authorization = getAuthorization('authorization');");
    expect(app).toContain("const pushedAuthorizationRequests = getAuthorization('pushed_authorization_request');");
    expect(readFileSync(join(lib, 'actions', 'authorization', 'index.js'), 'utf8')).toContain('stacks.set(endpoint, stack);');
  });

  test('scope: the refusal server/http/scope-errors.ts describes, and the step it goes in front of', () => {
    const names = (endpoint: string) => authorizationAction(endpoint).map((h) => h.name);
    prepareScopeErrors();
    prepareScopeErrors();
    for (const endpoint of ['authorization', 'pushed_authorization_request']) {
      const list = names(endpoint);
      expect(list.filter((n) => n === 'describeScopeNotAllowed')).toHaveLength(1);
      expect(list.indexOf('describeScopeNotAllowed')).toBe(list.indexOf('checkScope') - 1);
    }
    // checkScope throws the description the step (and the grant.error listener, for the token endpoint) rewrites, with
    // the refused scope as the error's `scope`.
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    expect(readFileSync(join(lib, 'actions', 'authorization', 'scopes.js'), 'utf8')).toContain("throw new InvalidScope('requested scope is not allowed', scope);");
    expect(readFileSync(join(lib, 'helpers', 'grant_authorization.js'), 'utf8')).toContain("throw new InvalidScope('requested scope is not allowed', scope);");
    expect(new errors.InvalidScope(SCOPE_NOT_ALLOWED, 'write')).toMatchObject({ error_description: SCOPE_NOT_ALLOWED, scope: 'write' });
  });

  test('userinfo: the refusals server/http/userinfo-errors.ts tells apart, and the challenge step its step goes inside', () => {
    const names = () => userinfoSteps.map((h) => h.name);
    prepareUserinfoErrors();
    prepareUserinfoErrors();
    expect(names().filter((n) => n === 'describeUserinfoRefusals')).toHaveLength(1);
    expect(names().indexOf('describeUserinfoRefusals')).toBe(names().indexOf('setWWWAuthenticateHeader') + 1);
    expect(names().indexOf('describeUserinfoRefusals')).toBeLessThan(names().indexOf('validateAccessToken'));
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const shared = readFileSync(join(lib, 'shared', 'access_token.js'), 'utf8');
    // The details it maps (InvalidToken keeps its constructor argument as error_detail, and says "invalid token provided").
    expect(shared).toContain("ctx.assert(accessToken, new InvalidToken('access token not found'));");
    expect(shared).toContain("throw new InvalidToken('failed jkt verification');");
    expect(shared).toContain("'access token is not sender-constrained but proof of possession was provided',");
    // The scope check runs before the binding is checked: a token without openid is 403 whoever sends it.
    expect(shared.indexOf('await afterFind?.(ctx, accessToken);')).toBeLessThan(shared.indexOf("throw new InvalidToken('failed jkt verification');"));
    expect(readFileSync(join(lib, 'actions', 'userinfo.js'), 'utf8')).toContain("throw new InvalidToken('token audience prevents accessing the userinfo endpoint');");
    const token = new errors.InvalidToken('access token not found') as Error & { error_description?: string; error_detail?: string };
    expect(token.error_description).toBe('invalid token provided');
    expect(token.error_detail).toBe('access token not found');
  });

  test('form bodies: the POST routes server/http/form-body-content-type.ts names read a form, and a body with no type as none', async () => {
    const { FORM_BODY_ROUTES } = await import('../../server/http/form-body-content-type.js');
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const app = readFileSync(join(lib, 'helpers', 'initialize_app.js'), 'utf8');
    for (const name of FORM_BODY_ROUTES) expect({ name, routed: app.includes(`post('${name}', `) }).toEqual({ name, routed: true });
    // Every other POST route oidc-provider can have: a JSON body (registration, credential), a feature agentauth does
    // not enable (device flow, CIBA, attestation challenge, dev interactions), or POST not enabled here
    // (enableHttpPostMethods off: authorization, end_session). A new one fails this until it is sorted.
    const others = new Set(['registration', 'credential', 'challenge', 'device_authorization', 'code_verification', 'backchannel_authentication', 'submit', 'authorization', 'end_session']);
    const posts = [...new Set([...app.matchAll(/post\('([a-z_]+)'/g)].map((m) => m[1]!))];
    expect(posts.filter((name) => !FORM_BODY_ROUTES.has(name) && !others.has(name))).toEqual([]);
    const body = readFileSync(join(lib, 'shared', 'selective_body.js'), 'utf8');
    expect(body).toContain("  } else if (ctx.get('content-type')) {");
    expect(body).toContain('    ctx.oidc.body = {};');
    for (const action of ['token', 'introspection', 'revocation', 'userinfo', 'end_session']) { // end_session.js holds end_session_confirm's steps
      expect(readFileSync(join(lib, 'actions', `${action}.js`), 'utf8')).toContain("import { urlencoded as parseBody } from '../shared/selective_body.js';");
    }
  });

  test('the grant helpers and the keystore initialiser have the shapes called', () => {
    for (const fn of ['validateDpop', 'checkDpopRequired', 'checkDpopReplay', 'resolveRequestedResources', 'validateClientScope', 'applyRefreshTokenBindings', 'buildTokenResponse'] as const) {
      expect(typeof grants[fn]).toBe('function');
    }
    expect(grants.validateDpop.length).toBeGreaterThanOrEqual(2);
    expect(grants.buildTokenResponse.length).toBe(1);
    expect(typeof initializeKeystore).toBe('function');
    expect(initializeKeystore.length).toBe(1);
  });

  test('the signing algorithm lists server/signing-alg.ts sets: built from the keys, read lazily by client validation and per request by discovery', () => {
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const read = (file: string) => readFileSync(join(lib, file), 'utf8');
    // A keystore adds its keys' algorithms to the lists (never removes any): agentauth sets them to all it signs with.
    expect(read('helpers/initialize_keystore.js')).toContain("'idTokenSigningAlgValues',");
    expect(read('helpers/initialize_keystore.js')).toContain('configuration[prop] = [...new Set([...configuration[prop], ...signingAlgs])]');
    // Every client built (registration, update, each load from storage) is checked against the list as it is then.
    expect(read('helpers/client_schema.js')).toContain('id_token_signed_response_alg: () => configuration.idTokenSigningAlgValues,');
    // Discovery reads the lists on each request; agentauth wraps the discovery routes' `run` (what the router calls for
    // a match, on every spelling) to cut them down to the published keys'.
    const router = read('helpers/router.js');
    expect(router).toContain('const route = { name, path, run: compose(middleware) };');
    expect(router).toContain('return matched.route.run(ctx, next);');
    expect(read('helpers/initialize_app.js')).toContain("const oauthDiscoveryRoute = '/.well-known/oauth-authorization-server';\n  get('discovery', oauthDiscoveryRoute,");
    expect(read('helpers/initialize_app.js')).toContain("const openidDiscoveryRoute = '/.well-known/openid-configuration';\n  get('discovery', openidDiscoveryRoute,");
    const discovery = read('actions/discovery.js');
    for (const member of ['id_token_signing_alg_values_supported = configuration.idTokenSigningAlgValues', 'introspection_signing_alg_values_supported = configuration.introspectionSigningAlgValues', 'userinfo_signing_alg_values_supported = configuration.userinfoSigningAlgValues', 'authorization_signing_alg_values_supported = configuration.authorizationSigningAlgValues']) {
      expect(discovery).toContain(`ctx.body.${member};`);
    }
  });

  test('client ID metadata documents: the experimental flag, discovery, and every client lookup through Client.find (server/client-metadata/resolver.ts)', () => {
    const lib = dirname(createRequire(import.meta.url).resolve('oidc-provider'));
    const read = (file: string) => readFileSync(join(lib, file), 'utf8');
    // The acknowledged version in server/provider.ts (ack: 'draft-02'); a new draft changes it and the ack must be re-checked.
    expect(read('helpers/features.js')).toMatch(/clientIdMetadataDocument: \{\s+name: 'OAuth Client ID Metadata Document',\s+version: 'draft-02',/);
    expect(read('actions/discovery.js')).toContain('if (features.clientIdMetadataDocument.enabled) {\n    ctx.body.client_id_metadata_document_supported = true;');
    // agentauth replaces provider.Client.find: every lookup of a client by id must go through it.
    const model = read('models/client.js');
    expect(model).toMatch(/static async find\(id\) \{/);
    expect(model).toContain('return resolveClientByMetadataDocument(provider, id);');
    const callers = ['shared/authorization_error_handler.js', 'shared/access_token.js', 'shared/client_auth.js', 'provider.js', 'actions/interaction.js', 'actions/end_session.js', 'actions/introspection.js', 'actions/code_verification.js', 'actions/authorization/client.js', 'actions/registration.js'];
    for (const file of callers) expect(read(file)).toMatch(/(provider|this)\.Client\.find\(/);
    // The built-in resolver is reached only from Client.find.
    expect(read('helpers/add_client.js')).not.toContain('resolveClientByMetadataDocument');
  });

  test('the built-in refresh_token grant that server/grants/refresh-grace.ts wraps: its export, parameters and hooks', () => {
    expect(refreshGrant.grantType).toBe('refresh_token');
    expect(refreshGrant.handler.length).toBe(3);
    expect([...refreshGrant.parameters].sort()).toEqual(['refresh_token', 'scope']);
    // The grace decision sits in RefreshToken.find and the lost race in consume: the handler must still call both,
    // find before its "already used" branch, and ask rotateRefreshToken before consuming.
    const require = createRequire(import.meta.url);
    const source = readFileSync(join(dirname(require.resolve('oidc-provider')), 'actions', 'grants', 'refresh_token.js'), 'utf8');
    const at = (s: string) => source.indexOf(s);
    expect(at('await RefreshToken.find(refreshTokenValue')).toBeGreaterThan(-1);
    expect(at('await RefreshToken.find(refreshTokenValue')).toBeLessThan(at('if (refreshToken.consumed)'));
    // server/provider.ts rewrites the reuse's error_detail (REFRESH_TOKEN_REUSED) to say the grant was revoked: the
    // branch revokes the grant, then throws that detail.
    expect(source).toContain("      revoke(ctx, refreshToken.grantId),\n    ]);\n    throw new InvalidGrant('refresh token already used');");
    expect(at('checkDpopReplay(ctx')).toBeLessThan(at('if (refreshToken.consumed)'));
    expect(at('rotateRefreshToken(ctx)')).toBeLessThan(at('await refreshToken.consume()'));
    expect(at('ctx.oidc.entity(\'RotatedRefreshToken\', refreshToken)')).toBeGreaterThan(at('await refreshToken.consume()'));
    // The rotation's consume is deferred to the successor's save: between the two, nothing awaits, and the successor
    // is the RefreshToken entity when it is saved (pendingRotation matches it by jti).
    const between = source.slice(at('await refreshToken.consume()') + 'await refreshToken.consume()'.length, at('refreshTokenValue = await refreshToken.save()'));
    expect(between.length).toBeGreaterThan(0);
    expect(between).not.toMatch(/\bawait\b/);
    expect(between).toContain("ctx.oidc.entity('RefreshToken', refreshToken);");
  });

  test('errors of the authorization endpoint reach a redirect URI only through the response modes server/http/untrusted-redirects.ts wraps, and end_session checks post_logout_redirect_uri after validating id_token_hint', () => {
    const require = createRequire(import.meta.url);
    const lib = dirname(require.resolve('oidc-provider'));
    const handler = readFileSync(join(lib, 'shared', 'authorization_error_handler.js'), 'utf8');
    expect(handler).toContain('const handler = instance(provider).responseModes.get(mode);');
    expect(handler.match(/ctx\.redirect\(/g)).toBeNull();
    const respond = readFileSync(join(lib, 'actions', 'authorization', 'respond.js'), 'utf8');
    expect(respond).toContain('instance(ctx.oidc.provider).responseModes.get(responseMode);');
    const app = readFileSync(join(lib, 'helpers', 'initialize_app.js'), 'utf8');
    expect(app).toContain("this.registerResponseMode('form_post', responseModes.form_post);");
    const endSession = readFileSync(join(lib, 'actions', 'end_session.js'), 'utf8');
    expect(endSession.indexOf('await ctx.oidc.provider.IdToken.validate(params.id_token_hint, client);')).toBeLessThan(endSession.indexOf('client.postLogoutRedirectUriAllowed(params.post_logout_redirect_uri)'));
    expect(endSession.indexOf('sessionMiddleware')).toBeLessThan(endSession.indexOf('async function endSessionChecks'));
  });
});
