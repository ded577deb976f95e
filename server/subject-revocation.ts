import { revokeGrantFamily } from '../adapters/oidc-adapter.js';
import { checksumAddress } from '../interactions/siwe/eth.js';
import type { ModelStore, RevokedTokenStore, Storage } from '../adapters/types.js';
import { MAX_REVOKED_LOOKUP } from '../adapters/types.js';
import { RevocationMarks, subjectMark } from './revocation-lineage.js';

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
  // Control characters of either set (C0, DEL, C1) and the line and paragraph separators: nothing agentauth issues
  // as a sub has them, and in a log line or a terminal they would break the line.
  if (sub.length === 0 || sub.length > MAX_SUB_LENGTH || /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(sub)) {
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

/** How long a subject mark is kept: longer than any request that could store a grant after the revocation read. */
const SUBJECT_MARK_TTL_SECONDS = 600;
/** Listings after the first: each finds what requests in flight stored meanwhile; the marks cover what comes later. */
const MAX_RELISTS = 10;

/**
 * The marks' time slots: a grant stored after a revocation's last listing is refused when its request was received
 * before the slot of the last mark ended, give or take one slot (up to 200 ms after the revocation answered: a person
 * who signs in again at once may be asked to once more).
 */
const SLOT_MS = 100;
/**
 * How far back from now a stored grant or session looks for marks: longer than any request is served. Node's HTTP
 * server ends a request that has not been received in full after `requestTimeout` (300 s by default), checked every
 * `connectionsCheckingInterval` (30 s by default), so a body may trickle in for up to 330 s; agentauth keeps both
 * defaults (test/unit/subject-revocation.test.ts checks them). Such a request still finds a revocation made when it
 * arrived. Marks live longer (SUBJECT_MARK_TTL_SECONDS).
 */
export const LOOKBACK_MS = 345_000;

const slot = (ms: number): number => Math.floor(ms / SLOT_MS);

/**
 * Revokes everything person `sub` has granted, across every client: each grant whose account is `sub` goes with every
 * token and code issued from it (its revocation mark first, so that a JWT access token, or a token exchanged from one,
 * is refused at introspection from then on), and each of the person's sign-in sessions is ended, so that the next
 * authorization request asks them to sign in and consent again. They are found through the store's index of grants
 * and sessions by account, not by reading every one.
 *
 * A request in flight (a wallet-signature grant, a consent) can store a grant for `sub` after a listing read: the
 * grants are listed again until a listing finds none, and before each listing a mark for the current time slot is
 * written (subjectMark). A wallet-signature grant stored after the last listing, by a request received before the
 * slot of a mark ended, finds it and is refused (revokedWhileServed): nothing a wallet-signature request received
 * before the revocation answered is left standing. An approval on the consent page is checked the same way after it
 * stores its grant (interactions/routes.ts): the grant goes, and the application is told access_denied. So is a
 * sign-in session a request in flight writes back (adapters/oidc-adapter.ts `sessionRevoked`): it is deleted instead.
 *
 * `record` is called with what the first listing found, before anything is revoked (the audit record: if it cannot be
 * written, nothing is revoked); what later listings find is revoked too, and is in the answer, not in the record.
 * Returns undefined, having revoked and recorded nothing (only the first mark is written), when the person has no
 * grant and no session.
 */
export async function revokeSubject(
  storage: Pick<Storage, 'model' | 'revokedTokens'>,
  sub: string,
  record: (found: { grants: number; sessions: number }) => Promise<unknown>,
  now: () => number = Date.now,
): Promise<SubjectRevocation | undefined> {
  /**
   * A mark for the slot of now, then a listing of the person's grants and sessions. A listing that finds nothing ends
   * the revocation only when it finished within a slot of its mark (`done`): a request that arrived while a slower
   * listing ran, and stored after the listing read, would come too late for that mark's slot (revokedWhileServed looks
   * back one slot from arrival) and be missed by the listing, so a fresh mark and listing cover it.
   */
  const markAndList = async () => {
    const markedAt = now();
    await storage.revokedTokens.revoke(subjectMark(sub, slot(markedAt)), Math.floor(markedAt / 1000) + SUBJECT_MARK_TTL_SECONDS);
    const found = { grants: await recordsOf(storage.model('Grant'), sub), sessions: await recordsOf(storage.model('Session'), sub) };
    const empty = found.grants.length === 0 && found.sessions.length === 0;
    return { ...found, empty, done: empty && now() - markedAt < SLOT_MS };
  };
  // A mark before the first listing too: a person with nothing stored yet may have a sign-in in flight, which stores
  // its grant after this read and is refused by the mark (the answer is still "nothing found").
  let listed = await markAndList();
  for (let listing = 1; listed.empty && !listed.done && listing <= MAX_RELISTS; listing += 1) listed = await markAndList();
  if (listed.empty) return undefined;
  await record({ grants: listed.grants.length, sessions: listed.sessions.length });
  const marks = new RevocationMarks(storage.revokedTokens);
  const revoked: string[] = [];
  let ended = 0;
  for (let listing = 1; ; listing += 1) {
    for (const grantId of listed.grants) await revokeGrantFamily(storage, grantId, { grantRevoked: (id) => marks.grant(id) });
    for (const id of listed.sessions) await storage.model('Session').destroy(id);
    revoked.push(...listed.grants);
    ended += listed.sessions.length;
    if (listing > MAX_RELISTS) break;
    listed = await markAndList();
    if (listed.done) break;
  }
  return { grants: revoked, sessions: ended };
}

/**
 * Whether person `sub` was revoked while a request received at `receivedAtMs` was being served: a subject mark in any
 * slot from the one before receipt to now (at most LOOKBACK_MS back, MAX_REVOKED_LOOKUP slots per lookup; one lookup
 * for a request served in under 6 s). Called after the request stored its grant: true means the revocation's last
 * listing may have missed it, and the grant must go.
 */
export async function revokedWhileServed(revoked: Pick<RevokedTokenStore, 'anyRevoked'>, sub: string, receivedAtMs: number, now: () => number = Date.now): Promise<boolean> {
  const last = slot(now());
  const first = Math.max(slot(receivedAtMs) - 1, slot(now() - LOOKBACK_MS));
  for (let from = last; from >= first; from -= MAX_REVOKED_LOOKUP) {
    const ids: string[] = [];
    for (let s = from; s > from - MAX_REVOKED_LOOKUP && s >= first; s -= 1) ids.push(subjectMark(sub, s));
    if (await revoked.anyRevoked(ids)) return true;
  }
  return false;
}
