import type { KeyTransition, StoredKey } from '../adapters/types.js';

/**
 * Key states, derived from immutable transitions and the clock (nothing is ever updated in place, so every
 * instance computes the same answer from the same records, and writes never race):
 *
 *   next      published in JWKS, not signing yet (its activation is scheduled or pending)
 *   active    the one key that signs: the most recently activated key that is not retired
 *   retired   superseded or retired by an operator; still published until every token it could have signed has
 *             expired, plus skew (publishedUntil)
 *   archived  no longer published; kept forever so `agentauth verify` can check what it signed
 *   withdrawn taken out of JWKS by an operator before its time (a stolen key): never signs or is published again,
 *             and nothing it signed is trusted (`agentauth verify` says so); kept, like an archived key
 */
export type KeyState = 'next' | 'active' | 'retired' | 'archived' | 'withdrawn';

export interface KeyTimeline {
  kid: string;
  alg: StoredKey['alg'];
  seq: number;
  state: KeyState;
  createdAt: Date;
  /** When it starts (or started) signing; undefined while no activation is scheduled. */
  activatesAt?: Date | undefined;
  /** When it stops (or stopped) signing. */
  retiredAt?: Date | undefined;
  /** Last moment it is published in JWKS (retiredAt + grace, or when it was withdrawn if that came first). */
  publishedUntil?: Date | undefined;
  /** When an operator withdrew it (`agentauth keys withdraw`). */
  withdrawnAt?: Date | undefined;
}

export interface LifecyclePolicy {
  /** Longest-lived token a key can sign plus clock skew and JWKS cache slack, in seconds. */
  retireGraceSeconds: number;
}

export interface KeyView {
  timelines: KeyTimeline[];
  signer: KeyTimeline | undefined;
  /** The next moment any key's state changes by time alone (an activation or an archival), if any. */
  nextChange: Date | undefined;
  /** The time the view was computed for (epoch ms). */
  computedAt: number;
}

const time = (iso: string | undefined) => (iso === undefined ? undefined : new Date(iso));

export function deriveKeyView(keys: readonly StoredKey[], transitions: readonly KeyTransition[], now: Date, policy: LifecyclePolicy): KeyView {
  const byKid = (kid: string, type: KeyTransition['type']) => transitions.find((t) => t.kid === kid && t.type === type);
  const graceMs = policy.retireGraceSeconds * 1000;

  const base = keys.map((k) => {
    const hasTransitions = transitions.some((t) => t.kid === k.kid);
    // Keys from the first releases carry state 'active' and no transitions: active since creation.
    const activatesAt = time(byKid(k.kid, 'activate')?.at) ?? (!hasTransitions && k.state === 'active' ? new Date(k.createdAt) : undefined);
    // A withdrawal is recorded for the moment it is made; one dated ahead (the CLI's clock ahead of this one) counts
    // from then, and is a change the view waits for.
    const withdrawal = time(byKid(k.kid, 'withdraw')?.at);
    return { key: k, activatesAt, explicitRetire: time(byKid(k.kid, 'retire')?.at), withdrawal, withdrawnAt: withdrawal && withdrawal <= now ? withdrawal : undefined };
  });

  // Activated keys in activation order: each is implicitly retired when the next one activates. A key retired at or
  // before its activation time (a cancelled rotation) never activates, so it supersedes nothing; nor does one withdrawn
  // before it activated. A key withdrawn after it activated still superseded the keys before it: withdrawing it must
  // not bring an older key back to signing.
  const cancelled = (b: (typeof base)[number]) =>
    b.activatesAt !== undefined && ((b.explicitRetire !== undefined && b.explicitRetire <= b.activatesAt) || (b.withdrawnAt !== undefined && b.withdrawnAt <= b.activatesAt));
  const activated = base
    .filter((b) => b.activatesAt !== undefined && b.activatesAt <= now && !cancelled(b))
    .sort((a, b) => a.activatesAt!.getTime() - b.activatesAt!.getTime() || a.key.seq - b.key.seq);
  const superseded = new Map<string, Date>();
  activated.forEach((b, i) => {
    const successor = activated[i + 1];
    if (successor) superseded.set(b.key.kid, successor.activatesAt!);
  });

  const changes: Date[] = [];
  const timelines = base.map(({ key, activatesAt, explicitRetire, withdrawal, withdrawnAt }): KeyTimeline => {
    const implicit = superseded.get(key.kid);
    const retiredAt = [explicitRetire, implicit].filter((d): d is Date => d !== undefined && d <= now).sort((a, b) => a.getTime() - b.getTime())[0];
    let state: KeyState;
    let publishedUntil: Date | undefined;
    if (withdrawnAt) {
      state = 'withdrawn';
      const graceEnd = retiredAt ? new Date(retiredAt.getTime() + graceMs) : undefined;
      publishedUntil = graceEnd && graceEnd < withdrawnAt ? graceEnd : withdrawnAt;
    } else if (retiredAt) {
      publishedUntil = new Date(retiredAt.getTime() + graceMs);
      state = now < publishedUntil ? 'retired' : 'archived';
      if (state === 'retired') changes.push(publishedUntil);
    } else if (activatesAt && activatesAt <= now && !(explicitRetire && explicitRetire <= activatesAt)) {
      state = 'active';
    } else {
      state = 'next';
      if (activatesAt) changes.push(activatesAt);
    }
    if (explicitRetire && explicitRetire > now) changes.push(explicitRetire);
    if (withdrawal && withdrawal > now) changes.push(withdrawal);
    return { kid: key.kid, alg: key.alg, seq: key.seq, state, createdAt: new Date(key.createdAt), activatesAt, retiredAt: retiredAt ?? explicitRetire, publishedUntil, withdrawnAt };
  });

  const active = timelines.filter((t) => t.state === 'active');
  // More than one candidate can only come from an explicit retire of the newest key: the newest unretired signs.
  const signer = active.sort((a, b) => (b.activatesAt?.getTime() ?? 0) - (a.activatesAt?.getTime() ?? 0) || b.seq - a.seq)[0];
  for (const t of active) if (t !== signer) t.state = 'retired';
  const nextChange = changes.sort((a, b) => a.getTime() - b.getTime())[0];
  return { timelines: timelines.sort((a, b) => a.seq - b.seq), signer, nextChange, computedAt: now.getTime() };
}

/** Keys that belong in the JWKS: next, active and retired (not archived or withdrawn), the signer first. */
export function publishedKids(view: KeyView): string[] {
  const published = view.timelines.filter((t) => t.state !== 'archived' && t.state !== 'withdrawn');
  return [...(view.signer ? [view.signer.kid] : []), ...published.filter((t) => t !== view.signer).map((t) => t.kid)];
}
