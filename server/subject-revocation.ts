import { revokeGrantFamily } from '../adapters/oidc-adapter.js';
import type { ModelStore, Storage } from '../adapters/types.js';
import { RevocationMarks } from './revocation-lineage.js';

/** Records read per page while looking for a person's grants and sessions. */
const PAGE = 500;
/** Longest `sub` accepted (agentauth's subjects are `did:pkh` wallet accounts and client ids). */
export const MAX_SUB_LENGTH = 512;

export interface SubjectRevocation {
  /** The grants revoked (each with every token and code issued from it). */
  grants: string[];
  /** The sign-in sessions ended. */
  sessions: number;
}

/** Why `sub` cannot name a subject, or undefined when it can. */
export function subjectProblem(sub: string): string | undefined {
  if (sub.length === 0 || sub.length > MAX_SUB_LENGTH || /[\u0000-\u001f\u007f]/.test(sub)) {
    return `the subject must be 1 to ${MAX_SUB_LENGTH} characters without control characters, as it appears in the tokens' sub claim`;
  }
  return undefined;
}

/** Ids of the live records of `store` whose `accountId` is `sub`, read a page at a time. */
async function recordsOf(store: ModelStore, sub: string): Promise<string[]> {
  const ids: string[] = [];
  for (let after: string | undefined; ; ) {
    const page = await store.list(after, PAGE);
    for (const { id, payload } of page) if (payload.accountId === sub) ids.push(id);
    if (page.length < PAGE) return ids;
    after = page.at(-1)!.id;
  }
}

/**
 * Revokes everything person `sub` has granted, across every client: each grant whose account is `sub` goes with every
 * token and code issued from it (its revocation mark first, so that a JWT access token, or a token exchanged from one,
 * is refused at introspection from then on), and each of the person's sign-in sessions is ended, so that the next
 * authorization request asks them to sign in and consent again. Grants made after this are not touched. Finding them
 * reads every stored grant and session (an operator's command, not a request's path).
 *
 * `record` is called with what was found before anything changes (the audit record: if it cannot be written, nothing
 * is revoked). Returns undefined, having changed and recorded nothing, when the person has no grant and no session.
 */
export async function revokeSubject(
  storage: Pick<Storage, 'model' | 'revokedTokens'>,
  sub: string,
  record: (found: { grants: number; sessions: number }) => Promise<unknown>,
): Promise<SubjectRevocation | undefined> {
  const grants = await recordsOf(storage.model('Grant'), sub);
  const sessions = await recordsOf(storage.model('Session'), sub);
  if (grants.length === 0 && sessions.length === 0) return undefined;
  await record({ grants: grants.length, sessions: sessions.length });
  const marks = new RevocationMarks(storage.revokedTokens);
  for (const grantId of grants) await revokeGrantFamily(storage, grantId, { grantRevoked: (id) => marks.grant(id) });
  for (const id of sessions) await storage.model('Session').destroy(id);
  return { grants, sessions: sessions.length };
}
