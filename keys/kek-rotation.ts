/**
 * Moving the key store from one KEK to the next (docs/operations.md, "Rotating the KEK"). While
 * AGENTAUTH_KEK_FALLBACK names the KEK being rotated away from, every record sealed or MACed under it is still read
 * (keys/integrity.ts `sealingKek`); this writes each such record again under the KEK, so that the fallback can be
 * removed. Run by every start before the keyring loads, and reported by `config check`.
 */
import type { KeyStore } from '../adapters/types.js';
import { checkKeyPair, macKeyRecord, macTransition, transitionMacVerifies, verifyKeySet } from './integrity.js';
import { kekId, seal } from './seal.js';

export interface ResealReport {
  /** Keys re-sealed (their private key sealed, and the record MACed, under the KEK). */
  keys: string[];
  /** Transitions (`kid:type`) MACed again under the KEK. */
  transitions: string[];
}

export interface FallbackUse {
  /** Keys whose private key is still sealed under the fallback. */
  keys: string[];
  /** Transitions whose MAC verifies under the fallback only. */
  transitions: string[];
}

/** What of the key store still needs the fallback KEK (nothing, once {@link resealKeyStore} has run). */
export async function keysUnderFallback(store: KeyStore, kek: Buffer, fallback: Buffer): Promise<FallbackUse> {
  const [keys, transitions] = await Promise.all([store.list(), store.transitions()]);
  // Every record must verify under one of the two before any is counted: a record of a third KEK is refused.
  verifyKeySet(kek, keys, transitions, fallback);
  const fallbackId = kekId(fallback);
  return {
    keys: keys.filter((k) => k.sealed.kekId === fallbackId).map((k) => k.kid),
    transitions: transitions.filter((t) => !transitionMacVerifies(kek, t)).map((t) => `${t.kid}:${t.type}`),
  };
}

/**
 * Re-seals every key sealed under `fallback` under `kek`, and MACs again under `kek` every transition whose MAC
 * verifies under `fallback` only. Every record is verified (MAC, and each key pair against its sealed private key)
 * before anything is written, so a store with a record of a third KEK, or an altered one, is left as it was. Each
 * write is conditional on the record's stored MAC: several processes starting at once each write whole records of
 * their own, and whichever stands verifies. Records without a MAC (a store from before MACs) are left to the upgrade
 * that the keyring runs under the KEK (keys/integrity.ts `upgradeKeyStore`).
 */
export async function resealKeyStore(store: KeyStore, kek: Buffer, fallback: Buffer): Promise<ResealReport> {
  const report: ResealReport = { keys: [], transitions: [] };
  const [keys, transitions] = await Promise.all([store.list(), store.transitions()]);
  if (keys.some((k) => k.mac === undefined) || transitions.some((t) => t.mac === undefined)) return report;
  const { keys: trusted } = verifyKeySet(kek, keys, transitions, fallback);
  const fallbackId = kekId(fallback);
  const moving = trusted.filter((k) => k.sealed.kekId === fallbackId);
  const privateJwks = new Map<string, string>();
  for (const k of moving) privateJwks.set(k.kid, JSON.stringify(await checkKeyPair(kek, k, fallback)));
  for (const t of transitions.filter((x) => !transitionMacVerifies(kek, x))) {
    if (await store.replaceTransitionMac(t.kid, t.type, t.mac!, macTransition(kek, t).mac!)) report.transitions.push(`${t.kid}:${t.type}`);
  }
  for (const k of moving) {
    const stored = keys.find((x) => x.kid === k.kid)!;
    const resealed = macKeyRecord(kek, { ...k, sealed: seal(kek, privateJwks.get(k.kid)!, k.kid) });
    if (await store.replaceKey(resealed, stored.mac!)) report.keys.push(k.kid);
  }
  return report;
}
