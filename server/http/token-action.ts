import type { KoaContextWithOIDC } from 'oidc-provider';
import tokenSteps from 'oidc-provider/lib/actions/token.js';

/** A step of oidc-provider's token action (every spelling of the token route runs them in order). */
export type TokenStep = ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<unknown>) & { name: string };

/** A token step with the name the internals test and the pipeline's order checks find it by. */
export function namedTokenStep(name: string, fn: (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<unknown>): TokenStep {
  return Object.defineProperty(fn, 'name', { value: name }) as TokenStep;
}

/**
 * Inserts `step` into oidc-provider's token action just before its step named `anchor`, once per process (idempotent
 * by `marker`). Throws, naming `purpose`, when an upgrade of oidc-provider removed the anchor. Call before
 * `new Provider(...)`.
 */
export function insertTokenStep(step: TokenStep, anchor: string, marker: symbol, purpose: string): void {
  const list = tokenSteps as TokenStep[];
  const marks = list as unknown as Record<symbol, boolean>;
  if (marks[marker]) return;
  const i = list.findIndex((h) => h.name === anchor);
  if (i < 0) throw new Error(`oidc-provider's token action no longer has a "${anchor}" step; ${purpose} must be updated for this oidc-provider version`);
  list.splice(i, 0, step);
  marks[marker] = true;
}
