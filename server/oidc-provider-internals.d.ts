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
