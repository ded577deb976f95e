import type { AdapterPayload } from '../../adapters/types.js';

/**
 * A step an oidc-provider request runs once it holds a client's record and before it writes it
 * (server/admin/client-writes.ts `commit`): the RFC 7592 steps (server/http/registration-steps.ts) use up the
 * registration access token there, so a request that never gets to write (it waited too long for another change, or
 * the client was deleted meanwhile) keeps its token, and of two requests with one token exactly one writes.
 */
const KEY = 'agentauthBeforeClientWrite';

type State = { state: Record<string, unknown> };

/** The step: given the client's record as stored when the write was decided (undefined: deleted meanwhile). */
export type BeforeClientWrite = (current?: AdapterPayload) => Promise<void>;

export function setBeforeClientWrite(ctx: State, step: BeforeClientWrite): void {
  let ran = false;
  ctx.state[KEY] = (async (current) => {
    if (ran) return;
    ran = true;
    await step(current);
  }) satisfies BeforeClientWrite;
}

/** The step set for this request, if any (it runs once however often it is called). */
export function beforeClientWrite(ctx: State | undefined): BeforeClientWrite | undefined {
  return ctx?.state[KEY] as BeforeClientWrite | undefined;
}
