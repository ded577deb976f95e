import { revokeGrantFamily } from '../adapters/oidc-adapter.js';
import { checksumAddress } from '../interactions/siwe/eth.js';
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

/** A wallet subject (interactions/siwe/verify.ts): the address part is stored in its EIP-55 case. */
const WALLET_SUBJECT = /^(did:pkh:eip155:[0-9]{1,20}:)(0x[0-9a-fA-F]{40})$/;

/**
 * The subject `sub` names, as it is stored, or why it cannot name one. A wallet subject's address may be given in
 * any one case (lower case, as many tools print it, or upper case) and is matched in its EIP-55 form, which is how
 * every wallet subject is stored: the same account, whichever way it is written. A mixed-case address must be the
 * EIP-55 form itself, since a wrong mixed case is what a mistyped address looks like. Anything else is matched
 * exactly, as it appears in the tokens' `sub` claim.
 */
export function parseSubject(sub: string): { sub: string } | { problem: string } {
  if (sub.length === 0 || sub.length > MAX_SUB_LENGTH || /[\u0000-\u001f\u007f]/.test(sub)) {
    return { problem: `the subject must be 1 to ${MAX_SUB_LENGTH} characters without control characters, as it appears in the tokens' sub claim` };
  }
  const wallet = WALLET_SUBJECT.exec(sub);
  if (!wallet) return { sub };
  const [, prefix, address] = wallet as unknown as [string, string, string];
  const checksummed = checksumAddress(address);
  const digits = address.slice(2);
  if (digits !== digits.toLowerCase() && digits !== digits.toUpperCase() && address !== checksummed) {
    return { problem: `the address ${address} has a mixed case that is not its EIP-55 checksum (${checksummed}): check it for a typo, or give it in lower case` };
  }
  return { sub: `${prefix}${checksummed}` };
}

/** Ids of the live records of `store` whose `accountId` is `sub`, a page at a time (through the store's account index). */
async function recordsOf(store: ModelStore, sub: string): Promise<string[]> {
  const ids: string[] = [];
  for (let after: string | undefined; ; ) {
    const page = await store.idsByAccount(sub, after, PAGE);
    ids.push(...page.ids);
    if (page.next === undefined) return ids;
    after = page.next;
  }
}

/**
 * Revokes everything person `sub` has granted, across every client: each grant whose account is `sub` goes with every
 * token and code issued from it (its revocation mark first, so that a JWT access token, or a token exchanged from one,
 * is refused at introspection from then on), and each of the person's sign-in sessions is ended, so that the next
 * authorization request asks them to sign in and consent again. Grants made after this are not touched. They are found
 * through the store's index of grants and sessions by account, not by reading every one.
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
