import type { KeyTransition, StoredKey } from '../../adapters/types.js';
import { deriveKeyView, publishedKids } from '../../keys/lifecycle.js';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000);
const key = (kid: string, seq: number, createdS = 0): StoredKey => ({
  kid, seq, alg: 'ES256', createdAt: at(createdS).toISOString(), publicJwk: {}, sealed: { kekId: 'k', iv: 'i', ciphertext: 'c', tag: 't' },
});
const tr = (kid: string, type: KeyTransition['type'], s: number): KeyTransition => ({ kid, type, at: at(s).toISOString(), recordedAt: at(s).toISOString() });
const policy = { retireGraceSeconds: 100 };
const states = (keys: StoredKey[], transitions: KeyTransition[], s: number) =>
  Object.fromEntries(deriveKeyView(keys, transitions, at(s), policy).timelines.map((t) => [t.kid, t.state]));

describe('key lifecycle (derived from transitions and time)', () => {
  const keys = [key('k1', 1), key('k2', 2, 50)];
  const rotation = [tr('k1', 'activate', 0), tr('k2', 'activate', 60)];

  test('next → active → retired → archived, with the activation of the successor retiring the predecessor', () => {
    expect(states(keys, rotation, 55)).toEqual({ k1: 'active', k2: 'next' });
    expect(states(keys, rotation, 60)).toEqual({ k1: 'retired', k2: 'active' });
    expect(states(keys, rotation, 159)).toEqual({ k1: 'retired', k2: 'active' });
    expect(states(keys, rotation, 160)).toEqual({ k1: 'archived', k2: 'active' });
    const view = deriveKeyView(keys, rotation, at(55), policy);
    expect(view.signer?.kid).toBe('k1');
    expect(publishedKids(view)).toEqual(['k1', 'k2']);
    expect(view.nextChange).toEqual(at(60));
    expect(publishedKids(deriveKeyView(keys, rotation, at(200), policy))).toEqual(['k2']);
  });

  test('a scheduled key that is cancelled (retired before it activates) never supersedes the signer', () => {
    const cancelled = [...rotation, tr('k2', 'retire', 55)];
    expect(states(keys, cancelled, 61)).toEqual({ k1: 'active', k2: 'retired' });
    expect(deriveKeyView(keys, cancelled, at(61), policy).signer?.kid).toBe('k1');
    expect(states(keys, cancelled, 200)).toEqual({ k1: 'active', k2: 'archived' });
  });

  test('an immediate rotation during a scheduled one: the immediate key signs, before and after the cancelled key\'s time', () => {
    const k3 = key('k3', 3, 55);
    const transitions = [...rotation, tr('k2', 'retire', 55), tr('k3', 'activate', 55)];
    expect(states([...keys, k3], transitions, 56)).toEqual({ k1: 'retired', k2: 'retired', k3: 'active' });
    expect(deriveKeyView([...keys, k3], transitions, at(61), policy).signer?.kid).toBe('k3');
    expect(deriveKeyView([...keys, k3], transitions, at(1000), policy).signer?.kid).toBe('k3');
  });

  test('keys from the first releases (state active, no transitions) are active since creation', () => {
    const legacy = { ...key('old', 1), state: 'active' as const };
    expect(deriveKeyView([legacy], [], at(10), policy).signer?.kid).toBe('old');
  });

  test('retiring the signer explicitly leaves no signer rather than reviving an older key', () => {
    const transitions = [...rotation, tr('k2', 'retire', 70)];
    const view = deriveKeyView(keys, transitions, at(80), policy);
    expect(view.signer).toBeUndefined();
    expect(states(keys, transitions, 80)).toEqual({ k1: 'retired', k2: 'retired' });
  });

  describe('withdrawn keys (agentauth keys withdraw)', () => {
    test('a retired key withdrawn mid-grace leaves JWKS at once, is published until then, and stays withdrawn forever', () => {
      const transitions = [...rotation, tr('k1', 'withdraw', 70)];
      expect(states(keys, transitions, 69)).toEqual({ k1: 'retired', k2: 'active' });
      expect(states(keys, transitions, 70)).toEqual({ k1: 'withdrawn', k2: 'active' });
      expect(states(keys, transitions, 10_000)).toEqual({ k1: 'withdrawn', k2: 'active' });
      const view = deriveKeyView(keys, transitions, at(70), policy);
      expect(publishedKids(view)).toEqual(['k2']);
      expect(view.signer?.kid).toBe('k2');
      expect(view.timelines.find((t) => t.kid === 'k1')).toMatchObject({ retiredAt: at(60), publishedUntil: at(70), withdrawnAt: at(70) });
      // Before the withdrawal the view waits for it: a cached view must not keep publishing the key past it.
      expect(deriveKeyView(keys, transitions, at(65), policy).nextChange).toEqual(at(70));
    });

    test('an archived key withdrawn keeps the end of its grace as published_until', () => {
      const transitions = [...rotation, tr('k1', 'withdraw', 500)];
      expect(deriveKeyView(keys, transitions, at(600), policy).timelines.find((t) => t.kid === 'k1')).toMatchObject({ state: 'withdrawn', publishedUntil: at(160), withdrawnAt: at(500) });
    });

    test('a scheduled key withdrawn before its activation never activates and supersedes nothing', () => {
      const transitions = [...rotation, tr('k2', 'withdraw', 55)];
      for (const s of [56, 61, 1000]) {
        const view = deriveKeyView(keys, transitions, at(s), policy);
        expect(view.signer?.kid).toBe('k1');
        expect(publishedKids(view)).toEqual(['k1']);
      }
      expect(states(keys, transitions, 61)).toEqual({ k1: 'active', k2: 'withdrawn' });
    });

    test('a signer withdrawn (which the CLI refuses) leaves no signer: never an older key signing again', () => {
      const transitions = [...rotation, tr('k2', 'withdraw', 70)];
      const view = deriveKeyView(keys, transitions, at(80), policy);
      expect(view.signer).toBeUndefined();
      expect(states(keys, transitions, 80)).toEqual({ k1: 'retired', k2: 'withdrawn' });
      expect(publishedKids(view)).toEqual(['k1']);
    });
  });
});
