import { compactVerify, createLocalJWKSet } from 'jose';
import type { JSONWebKeySet } from 'jose';
import { errors } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import introspectionSteps from 'oidc-provider/lib/actions/introspection.js';
import revocationSteps from 'oidc-provider/lib/actions/revocation.js';
import tokenSteps from 'oidc-provider/lib/actions/token.js';
import clientAuthSteps from 'oidc-provider/lib/shared/client_auth.js';

import { challengeParameter } from './error-description.js';

/**
 * RFC 6749 §5.2: a request that includes no client authentication, or whose Authorization header is not one the server
 * can read, fails client authentication: `401 invalid_client`, with a `WWW-Authenticate` challenge when the client used
 * the Authorization header ("MUST"). oidc-provider answers these `400 invalid_request` (lib/shared/client_auth.js), at
 * the token, introspection, revocation and pushed authorization request endpoints alike. Its `authenticateClient` step
 * is wrapped in each of those actions: the refusals below, thrown by the step itself (not by a later step it calls),
 * become oidc-provider's own 401 InvalidClientAuth, which its setWWWAuthenticateHeader step around it answers with
 * `WWW-Authenticate: Basic` when an Authorization header was sent. Every other refusal is unchanged: credentials sent
 * two ways at once stay `invalid_request`, as §5.2 lists them.
 */
const NOT_AUTHENTICATED = new Map<string, string>([
  [
    'no client authentication mechanism provided',
    'the request does not authenticate the client: send client_id and client_secret with HTTP Basic (or client_secret_post), a private_key_jwt client_assertion, or client_id alone for a public client',
  ],
  ['invalid authorization header value format', 'the Authorization header must be HTTP Basic with base64(client_id:client_secret) (RFC 6749 section 2.3.1)'],
  [
    'client_id and client_secret in the authorization header are not properly encoded',
    'client_id and client_secret in the Authorization header must each be application/x-www-form-urlencoded before base64 (RFC 6749 section 2.3.1)',
  ],
  ['client_secret must be provided in the Authorization header', 'the Authorization header carries no client_secret after client_id:'],
  // RFC 7523 §3.2: a client assertion that is not valid is invalid_client.
  ['invalid client_assertion format', 'client_assertion: not a JWT (RFC 7523 section 3)'],
]);

/**
 * A private_key_jwt refusal says what is wrong with the client_assertion (oidc-provider keeps it in error_detail and
 * answers "client authentication failed" whatever it was): the claims RFC 7523 §3 requires (exp, jti, iss, aud; an
 * expired assertion, one used twice), its alg. Only to the holder of the client's key: oidc-provider checks the alg
 * and several claims before the signature, so a detail given for any assertion would tell a caller without the key
 * that the client exists, authenticates with private_key_jwt, and which algorithms and keys it has. The detail is
 * given when the assertion's signature verifies under one of the client's own registered keys (checked here, on the
 * refusal path only); otherwise, and for an unknown client or one registered for another method, it stays
 * "client authentication failed".
 */
const KEPT_GENERIC = new Set(['client not found', 'the provided authentication mechanism does not match the registered client authentication method']);

/** Whether `assertion` is signed by one of the client's registered public keys (its `jwks`; jose's own key selection). */
async function signedByClient(ctx: KoaContextWithOIDC, assertion: string): Promise<boolean> {
  const jwks = (ctx.oidc.client?.metadata() as { jwks?: unknown } | undefined)?.jwks as JSONWebKeySet | undefined;
  if (!jwks || !Array.isArray(jwks.keys)) return false;
  try {
    await compactVerify(assertion, createLocalJWKSet(jwks));
    return true;
  } catch {
    return false;
  }
}

async function assertionRefusal(ctx: KoaContextWithOIDC, err: unknown): Promise<Error | undefined> {
  if (!(err instanceof errors.InvalidClientAuth) || ctx.oidc.client === undefined) return undefined;
  const assertion = (ctx.oidc.params as Record<string, unknown> | undefined)?.client_assertion;
  if (typeof assertion !== 'string') return undefined;
  const detail = (err as { error_detail?: unknown }).error_detail;
  if (typeof detail !== 'string' || detail === '' || KEPT_GENERIC.has(detail)) return undefined;
  if (!(await signedByClient(ctx, assertion))) return undefined;
  const said = detail === 'alg mismatch' ? "its alg is not one accepted for this client (its token_endpoint_auth_signing_alg, else token_endpoint_auth_signing_alg_values_supported)" : detail.slice(0, 200);
  return invalidClient(`client_assertion: ${said}`);
}

type Step = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
const STEP = 'authenticateClient';
const WRAPPED = Symbol.for('agentauth.client-auth-errors');

function invalidClient(description: string): Error {
  const err = new errors.InvalidClientAuth(description) as Error & { error_description: string };
  err.error_description = description;
  return err;
}

/**
 * RFC 9110 §15.5.2: a 401 carries at least one challenge. oidc-provider writes `WWW-Authenticate: Basic` on a client
 * authentication refusal only when the request had an Authorization header; a request with none (no credentials, or a
 * wrong client_secret_post) was a 401 without one. It gets the same challenge, in the same form (realm, error and
 * error_description, as lib/shared/client_auth.js writes them).
 */
function challengeWithoutAuthorizationHeader(ctx: KoaContextWithOIDC, err: unknown): void {
  const e = err as { statusCode?: unknown; message?: unknown; error_description?: unknown };
  if (e.statusCode !== 401 || ctx.headers.authorization !== undefined) return;
  const fields = [`realm="${ctx.oidc.provider.issuer}"`, `error="${String(e.message)}"`, ...(typeof e.error_description === 'string' ? [challengeParameter(e.error_description)] : [])];
  ctx.append('WWW-Authenticate', `Basic ${fields.join(', ')}`);
}

/** The step, with the refusals above mapped; no async frame of its own around the rest of the request. */
function wrap(authenticate: Step): Step {
  const step = (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
    let authenticated = false;
    const onward = () => {
      authenticated = true;
      return next();
    };
    return Promise.resolve(authenticate(ctx, onward)).catch(async (err: unknown) => {
      const described = !authenticated && err instanceof errors.InvalidRequest ? NOT_AUTHENTICATED.get(String(err.error_description)) : undefined;
      const refusal = described !== undefined ? invalidClient(described) : (!authenticated && (await assertionRefusal(ctx, err))) || err;
      if (!authenticated) challengeWithoutAuthorizationHeader(ctx, refusal);
      throw refusal;
    });
  };
  return Object.defineProperties(step, { name: { value: STEP }, [WRAPPED]: { value: true } }) as Step;
}

/**
 * Wraps the step in each action list, once per process. Throws, when an upgrade of oidc-provider removed it, naming
 * the list. Call before `new Provider(...)` (PAR's action list is built from `clientAuthSteps` then).
 */
export function prepareClientAuthErrors(): void {
  const lists: Array<[string, Step[]]> = [
    ['client authentication', clientAuthSteps],
    ['token', tokenSteps],
    ['introspection', introspectionSteps],
    ['revocation', revocationSteps],
  ];
  for (const [name, list] of lists) {
    const i = list.findIndex((s) => s.name === STEP);
    if (i < 0) throw new Error(`oidc-provider's ${name} steps no longer have an "${STEP}" step; server/http/client-auth-errors.ts must be updated for this oidc-provider version`);
    if (!(WRAPPED in list[i]!)) list[i] = wrap(list[i]!);
  }
}
