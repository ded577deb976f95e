import { decodeProtectedHeader } from 'jose';
import type { Provider } from 'oidc-provider';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

/** The client properties oidc-provider reads to choose the key that signs an ID token or an introspection response. */
const SIGNED_BY_THE_SERVER = new Set<PropertyKey>(['idTokenSignedResponseAlg', 'introspectionSignedResponseAlg']);

interface IdTokenClass {
  prototype: { client?: object; issue(...args: unknown[]): Promise<unknown> };
  validate(jwt: string, client: object): Promise<unknown>;
}

/**
 * `client` as oidc-provider's ID token code sees it: each of the two algorithms above replaced by what `alg` makes of
 * the client's own value; nothing else changes.
 */
function withAlg(client: object, alg: (own: unknown) => string): object {
  return new Proxy(client, {
    get(target, prop) {
      if (SIGNED_BY_THE_SERVER.has(prop)) return alg(Reflect.get(target, prop, target));
      // Read on the client itself: its getters and methods use private fields a proxy does not have.
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/**
 * ID tokens and signed introspection responses (RFC 9701) across a rotation to another algorithm
 * (`AGENTAUTH_KEY_ALG`). oidc-provider signs them with the first published key whose algorithm is the client's
 * `id_token_signed_response_alg` / `introspection_signed_response_alg` (registered, or the default of the key that
 * signed when the client was built), and clients check the algorithm they registered (openid-client refuses an ID
 * token of another). So while the old key is published, these go on being signed with it for such a client; once it is
 * archived there is no key of that algorithm, and every such response failed with a 500: they are then signed by the
 * active key, with its algorithm (IdToken#issue). An ID token presented back (`id_token_hint`, IdToken.validate) is
 * checked with its own algorithm when that is a published key's, so hints from before and after the rotation both
 * verify. The client's record is not changed: its registration reads back as stored.
 */
export function followActiveKeyAlg(provider: Provider, keys: { activeAlg(): string; publishedAlgs(): readonly string[] }): void {
  const IdToken = provider.IdToken as unknown as IdTokenClass;
  const issue = IdToken.prototype.issue;
  IdToken.prototype.issue = async function issueWithActiveAlg(this: { client?: object }, ...args: unknown[]) {
    const { client } = this;
    if (!client) return issue.apply(this, args);
    const published = keys.publishedAlgs();
    this.client = withAlg(client, (own) => (typeof own === 'string' && (own.startsWith('HS') || published.includes(own)) ? own : keys.activeAlg()));
    try {
      return await issue.apply(this, args);
    } finally {
      this.client = client;
    }
  };
  const validate = IdToken.validate.bind(IdToken);
  IdToken.validate = async (jwt: string, client: object) => {
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(jwt).alg;
    } catch {
      return validate(jwt, client); // oidc-provider refuses it as it always did
    }
    return typeof alg === 'string' && keys.publishedAlgs().includes(alg) ? validate(jwt, withAlg(client, () => alg as string)) : validate(jwt, client);
  };
}

/** The algorithms of the keyring's published keys, read at each call (the keyring follows rotations). */
export const publishedAlgsOf = (keyring: { readonly keys: ReadonlyArray<{ alg: string }> }) => (): string[] => keyring.keys.map((k) => k.alg);

/** The lists oidc-provider checks client metadata against and advertises, by the discovery member that shows each. */
const SIGNING_ALG_LISTS = [
  ['idTokenSigningAlgValues', 'id_token_signing_alg_values_supported'],
  ['userinfoSigningAlgValues', 'userinfo_signing_alg_values_supported'],
  ['introspectionSigningAlgValues', 'introspection_signing_alg_values_supported'],
  ['authorizationSigningAlgValues', 'authorization_signing_alg_values_supported'],
] as const;

/**
 * Clients keep loading across a rotation to another algorithm, restarts included; discovery names only what the
 * published keys sign with.
 *
 * oidc-provider adds each key's algorithm to these lists when a keystore is built (lib/helpers/initialize_keystore.js)
 * and checks every client it builds against them, on every load from storage too. Every registered client stores
 * `id_token_signed_response_alg` and `introspection_signed_response_alg` (the defaults: the key's algorithm at the
 * time). So after an ES256 → EdDSA rotation, once the ES256 key was archived and the server restarted, the lists held
 * EdDSA alone and every client registered before the rotation failed to load: `400 invalid_client_metadata
 * "id_token_signed_response_alg must be 'EdDSA'"` on its token, authorization and RFC 7592 requests. And until that
 * restart, discovery still listed the archived key's algorithm.
 *
 * Now the lists are every algorithm agentauth signs with (enabledJWA, server/provider.ts), so any client loads
 * (followActiveKeyAlg signs for one whose algorithm has no key left), and discovery's members are cut down, per request,
 * to the algorithms of the published keys (its route's handler wrapped). Registration refuses an algorithm no published key has
 * (server/policies/registration.ts), where oidc-provider refused it through the lists.
 */
export function advertisePublishedAlgs(provider: Provider, keys: { publishedAlgs(): readonly string[] }): void {
  const { configuration, router } = instance(provider);
  for (const [list] of SIGNING_ALG_LISTS) configuration[list] = [...configuration.enabledJWA[list]];
  // On the discovery routes alone (both well-known paths: the route objects oidc-provider's router runs for every
  // spelling it matches), not as a layer every request walks.
  for (const path of DISCOVERY_PATHS) {
    const route = router.match('GET', path)?.route;
    if (route?.name !== 'discovery') throw new Error(`oidc-provider no longer routes GET ${path} to discovery; server/signing-alg.ts must be updated`);
    const run = route.run;
    route.run = async (ctx, next) => {
      await run(ctx, next);
      const body = ctx.body as Record<string, unknown> | undefined;
      if (!body || typeof body !== 'object') return;
      const published = new Set(keys.publishedAlgs());
      for (const [, member] of SIGNING_ALG_LISTS) {
        const algs = body[member];
        if (Array.isArray(algs)) body[member] = algs.filter((alg) => typeof alg === 'string' && (published.has(alg) || alg.startsWith('HS')));
      }
    };
  }
}

/** The paths oidc-provider 9.13.3 serves its discovery document at (lib/helpers/initialize_app.js). */
const DISCOVERY_PATHS = ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server'];
