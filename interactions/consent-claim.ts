import { randomUUID } from 'node:crypto';

import type { NonceStore } from '../adapters/types.js';

/** What a person decided on a consent page. */
export type ConsentDecision = 'approve' | 'deny';

/** The outcome of claiming a request for one decision: whether this one was first, and the decision that holds. */
export interface ConsentClaim {
  won: boolean;
  decision: ConsentDecision;
  /**
   * Withdraws this claim when the decision it won could not be carried out (the grant or the interaction's result
   * could not be saved), so that the person's next Approve or Deny is taken afresh instead of being sent to a resume
   * that finds no decision. Does nothing for a claim that was not won.
   */
  release(): Promise<void>;
}

/**
 * One decision per authorization request, on every instance: the first Approve or Deny sent for interaction `uid`
 * claims it (NonceStore.claim, atomic in the store), and every later one learns at once which decision holds, also
 * while the winner is still saving its grant. Each claim carries a value of its own, so a claim whose write went in
 * although the store reported otherwise is still known as this one's, and only this one can withdraw it
 * (NonceStore.release, a compare-and-delete). The mark outlives the interaction (600 s).
 */
export function consentClaims(nonces: Pick<NonceStore, 'claim' | 'release'>, ttlSeconds = 3600): (uid: string, decision: ConsentDecision) => Promise<ConsentClaim> {
  return async (uid, decision) => {
    const key = `consent:${uid}`;
    const mine = `${decision}.${randomUUID()}`;
    const held = await nonces.claim(key, mine, ttlSeconds);
    const won = held === mine;
    return {
      won,
      decision: held.startsWith('approve.') ? 'approve' : 'deny',
      release: won ? () => nonces.release(key, mine) : async () => {},
    };
  };
}
