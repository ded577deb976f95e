// Internal modules of oidc-provider 9.13.3 (pinned exactly in package.json) that agentauth patches.
// See server/structured-tokens.ts; a test fails if their shape changes on upgrade.
declare module 'oidc-provider/lib/actions/introspection.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  type Handler = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
  const handlers: Handler[];
  export default handlers;
}
declare module 'oidc-provider/lib/actions/revocation.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  type Handler = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
  const handlers: Handler[];
  export default handlers;
}
declare module 'oidc-provider/lib/helpers/grants.js' {
  import type { KoaContextWithOIDC, Provider, ResourceServer } from 'oidc-provider';
  export interface DPoPResult {
    thumbprint: string;
    jti: string;
    iat: number;
  }
  export interface ResolvedResourceServer extends ResourceServer {
    identifier(): string;
    scope: string;
  }
  export function validateDpop(provider: Provider, ctx: KoaContextWithOIDC): Promise<DPoPResult | undefined>;
  export function checkDpopRequired(provider: Provider, ctx: KoaContextWithOIDC, dPoP: DPoPResult | undefined): void;
  export function checkDpopReplay(provider: Provider, ctx: KoaContextWithOIDC, dPoP: DPoPResult, clientId: string): Promise<void>;
  export function resolveRequestedResources(provider: Provider, ctx: KoaContextWithOIDC): Promise<ResolvedResourceServer[]>;
  export function validateClientScope(provider: Provider, ctx: KoaContextWithOIDC): Set<string>;
  export function applyRefreshTokenBindings(provider: Provider, ctx: KoaContextWithOIDC, accessToken: unknown, refreshToken: unknown): unknown;
  export function buildTokenResponse(
    provider: Provider,
    response: { accessToken: string; expiresIn: number; refreshToken?: string | undefined; scope?: string | undefined; tokenType: string },
  ): Record<string, unknown>;
}
declare module 'oidc-provider/lib/helpers/validate_dpop.js' {
  import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
  /** The DPoP proof validateDpop verified on this request (payload and protected header), if any. */
  export function getDpopJwt(provider: Provider, ctx: KoaContextWithOIDC): { payload: Record<string, unknown>; protectedHeader: Record<string, unknown> } | undefined;
  /** Verifies the request's DPoP proof once per request (later calls answer from its cache); undefined without one. */
  export default function validateDpop(provider: Provider, ctx: KoaContextWithOIDC, accessToken?: string): Promise<{ thumbprint: string; jti: string; iat: number } | undefined>;
}
declare module 'oidc-provider/lib/helpers/initialize_keystore.js' {
  import type { Provider } from 'oidc-provider';
  /** Rebuilds the provider's signing keystore and its published JWKS from a private JWK set. */
  export default function initializeKeystore(this: Provider, jwks: { keys: object[] }): void;
}
declare module 'oidc-provider/lib/actions/registration.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  type Handler = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
  /** The RFC 7591 / 7592 actions' steps (registration, client, client_update, client_delete routes). */
  export const post: Handler[];
  export const get: Handler[];
  export const put: Handler[];
  export const del: Handler[];
}
declare module 'oidc-provider/lib/actions/grants/refresh_token.js' {
  import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
  /** The built-in refresh_token grant handler, before oidc-provider binds it to the provider and its grant helpers. */
  export function handler(provider: Provider, helpers: Record<string, (...args: never[]) => unknown>, ctx: KoaContextWithOIDC): Promise<void>;
  export const parameters: Set<string>;
  export const grantType: 'refresh_token';
}
declare module 'oidc-provider/lib/actions/token.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  type Handler = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
  /** The token endpoint's steps (server/limits/token-steps.ts inserts the per-client limit after client authentication). */
  const handlers: Handler[];
  export default handlers;
}
declare module 'oidc-provider/lib/helpers/resolve_resource.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  /** The resource a token request resolves to for `model` (a code or refresh token): oidc-provider's own rule; throws InvalidTarget. */
  export default function resolveResource(ctx: KoaContextWithOIDC, model: unknown, config: { userinfo: unknown; resourceIndicators: unknown }, scopes?: Set<string>): Promise<string | undefined>;
}
declare module 'oidc-provider/lib/helpers/weak_cache.js' {
  import type { KoaContextWithOIDC, Provider } from 'oidc-provider';
  /** One route of oidc-provider's router: `run` is its composed middleware, what the router calls for a match. */
  interface RouterRoute {
    name: string;
    path: string;
    run(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void>;
  }
  interface Internals {
    /** oidc-provider's router (lib/helpers/router.js): the route a method and path resolve to, as requests are routed. */
    router: { match(method: string, path: string): { route: RouterRoute; params: Record<string, string> } | undefined };
    /**
     * The response modes (`query`, `fragment`, `form_post`, ...) by name, each sending an authorization response or error
     * to a redirect URI (lib/response_modes/, registered by lib/helpers/initialize_app.js; server/http/untrusted-redirects.ts).
     */
    responseModes: Map<string, (ctx: KoaContextWithOIDC, redirectUri: string, payload: Record<string, string>) => unknown>;
    configuration: {
      /** The algorithm lists oidc-provider checks client metadata against and advertises in discovery (server/signing-alg.ts). */
      idTokenSigningAlgValues: string[];
      userinfoSigningAlgValues: string[];
      introspectionSigningAlgValues: string[];
      authorizationSigningAlgValues: string[];
      enabledJWA: Record<'idTokenSigningAlgValues' | 'userinfoSigningAlgValues' | 'introspectionSigningAlgValues' | 'authorizationSigningAlgValues', string[]>;
      features: {
        userinfo: unknown;
        resourceIndicators: { getResourceServerInfo(ctx: KoaContextWithOIDC, resource: string, client: unknown): Promise<unknown> };
      };
    };
  }
  /** The provider's internal state (its resolved configuration among it). */
  export default function instance(provider: Provider): Internals;
}
declare module 'oidc-provider/lib/helpers/redirect_uri.js' {
  /** `uri` with `payload` added as its query (mode query) or as its fragment (mode fragment). */
  export default function redirectUri(uri: string, payload: Record<string, string>, mode: 'query' | 'fragment'): string;
}
declare module 'oidc-provider/lib/shared/client_auth.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  type Handler = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
  /** Client authentication's steps, spread into the token, introspection and revocation actions and used by PAR's. */
  const handlers: Handler[];
  export default handlers;
}
declare module 'oidc-provider/lib/actions/authorization/index.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  type Handler = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
  /**
   * The steps of one authorization route (`authorization`, `resume`, `pushed_authorization_request`, ...), built once
   * per process and cached: the list returned is the one the routes are built from (server/http/request-object-errors.ts).
   */
  export default function authorizationAction(endpoint: string): Handler[];
}
declare module 'oidc-provider/lib/actions/userinfo.js' {
  import type { KoaContextWithOIDC } from 'oidc-provider';
  type Handler = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => unknown) & { name: string };
  /** The userinfo action's steps (server/http/userinfo-errors.ts inserts one). */
  const handlers: Handler[];
  export default handlers;
}
