import type { KeyState, KeyView } from '../../keys/lifecycle.js';
import type { Metrics } from './registry.js';

const STATES: readonly KeyState[] = ['next', 'active', 'retired', 'archived', 'withdrawn'];

/** Signing keys by state at `now`; every state is present (0 when no key is in it), so alerts can test for 0. */
export function keyStateCounts(view: KeyView): Record<KeyState, number> {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0])) as Record<KeyState, number>;
  for (const t of view.timelines) counts[t.state] += 1;
  return counts;
}

/** Reads the keyring's current view (keys/keyring.ts, states from keys/lifecycle.ts) at every scrape. */
export function observeKeyStates(keyring: { view(): KeyView }, metrics: Metrics): void {
  metrics.samplers.keyStates.current = () => keyStateCounts(keyring.view());
}
