import { randomUUID } from 'node:crypto';

import type { NonceStore } from '../adapters/types.js';

/** What a person decided on a consent page. */
export type ConsentDecision = 'approve' | 'deny';

/** The outcome of claiming a request for one decision: whether this one was first, and the decision that holds. */
export interface ConsentClaim {
  won: boolean;
  decision: ConsentDecision;
}

/**
 * One decision per authorization request, on every instance: the first Approve or Deny sent for interaction `uid`
 * claims it (NonceStore.claim, atomic in the store), and every later one learns at once which decision holds, also
 * while the winner is still saving its grant. Each claim carries a value of its own, so a claim whose write went in
 * although the store reported otherwise is still known as this one's. The mark outlives the interaction (600 s).
 */
export function consentClaims(nonces: Pick<NonceStore, 'claim'>, ttlSeconds = 3600): (uid: string, decision: ConsentDecision) => Promise<ConsentClaim> {
  return async (uid, decision) => {
    const mine = `${decision}.${randomUUID()}`;
    const held = await nonces.claim(`consent:${uid}`, mine, ttlSeconds);
    return { won: held === mine, decision: held.startsWith('approve.') ? 'approve' : 'deny' };
  };
}
