/**
 * Integrity of the key store. Whoever can write storage but does not hold the KEK must not be able to add, alter or
 * re-time a key that `/jwks`, `/keys`, introspection or `agentauth verify` trust. Two checks close that:
 *
 * - Every key record and every transition carries `mac`: HMAC-SHA256, under a key derived from the KEK
 *   (HKDF label `agentauth/key-integrity`), of a canonical serialisation of the record's fields ({@link keyRecordText},
 *   {@link transitionText}). Fields outside the serialisation are never read: the trusted copy holds only these.
 * - A key's public JWK must be the public half of its sealed private key, and its `kid` the thumbprint of that public
 *   JWK ({@link checkKeyPair}). The sealed private key is bound to its `kid` (AES-GCM additional data, keys/seal.ts).
 *
 * Stores written before records carried MACs are upgraded once by a process that holds the KEK
 * ({@link upgradeKeyStore}); see docs/security.md ("Integrity of the key store") for what that upgrade trusts.
 */
import { createHmac, createPrivateKey, createPublicKey, timingSafeEqual } from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import type { JWK } from 'jose';

import type { KeyStore, KeyTransition, SealedSecret, StoredKey } from '../adapters/types.js';
import { KeyIntegrityError } from './errors.js';
import { SIGNING_ALGS } from './generate.js';
import { assertSealedUnder, deriveKey, kekId, unseal } from './seal.js';

const KEY_RECORD_V1 = 'agentauth/key-record/v1';
const TRANSITION_V1 = 'agentauth/key-transition/v1';
/** JWK members that hold private key material: none may appear in a stored public JWK. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];
/** The key type each signing algorithm must have. */
const KEY_TYPE: Record<StoredKey['alg'], { kty: string; crv: string }> = { ES256: { kty: 'EC', crv: 'P-256' }, EdDSA: { kty: 'OKP', crv: 'Ed25519' } };

const macKey = (kek: Buffer): Buffer => deriveKey(kek, 'key-integrity');
const hmac = (kek: Buffer, text: string): string => createHmac('sha256', macKey(kek)).update(text, 'utf8').digest('base64url');
const transitionId = (t: Pick<KeyTransition, 'kid' | 'type'>): string => `${t.kid}:${t.type}`;

/**
 * The KEK a key record is judged under: the fallback (the KEK being rotated away from, keys/kek-rotation.ts) when its
 * sealed private key names that one, else the KEK. A record of any third KEK is refused under the KEK, naming both.
 */
export function sealingKek(kek: Buffer, sealed: SealedSecret, fallback: Buffer | undefined): Buffer {
  return fallback !== undefined && sealed.kekId === kekId(fallback) ? fallback : kek;
}

/** The canonical text a key record's MAC covers: a versioned array of its fields in fixed order, the JWK's members sorted. */
export function keyRecordText(k: StoredKey): string {
  const jwk = Object.keys(k.publicJwk).sort().map((name) => [name, k.publicJwk[name]]);
  const { kekId, iv, ciphertext, tag } = k.sealed;
  return JSON.stringify([KEY_RECORD_V1, k.kid, k.seq, k.alg, k.state ?? null, k.createdAt, jwk, [kekId, iv, ciphertext, tag]]);
}

/** The canonical text a transition's MAC covers. */
export function transitionText(t: KeyTransition): string {
  return JSON.stringify([TRANSITION_V1, t.kid, t.type, t.at, t.recordedAt, t.reason ?? null]);
}

/** The record with its MAC, ready to store. */
export function macKeyRecord(kek: Buffer, k: StoredKey): StoredKey {
  return { ...trustedKey(k), mac: hmac(kek, keyRecordText(k)) };
}

export function macTransition(kek: Buffer, t: KeyTransition): KeyTransition {
  return { ...trustedTransition(t), mac: hmac(kek, transitionText(t)) };
}

/** Whether a stored transition's MAC verifies under `kek` (constant time). */
export function transitionMacVerifies(kek: Buffer, t: KeyTransition): boolean {
  return macMatches(kek, transitionText(t), t.mac);
}

function macMatches(kek: Buffer, text: string, mac: unknown): boolean {
  if (typeof mac !== 'string') return false;
  const expected = Buffer.from(hmac(kek, text));
  const given = Buffer.from(mac);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isTime = (v: unknown): v is string => isString(v) && !Number.isNaN(Date.parse(v));
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const label = (v: unknown): string => (isString(v) ? v : JSON.stringify(v) ?? String(v));

/** Only the fields agentauth reads, from a record whose shape has been checked. */
function trustedKey(k: StoredKey): StoredKey {
  const { kekId, iv, ciphertext, tag } = k.sealed;
  const sealed: SealedSecret = { kekId, iv, ciphertext, tag };
  return { kid: k.kid, seq: k.seq, alg: k.alg, ...(k.state !== undefined ? { state: k.state } : {}), createdAt: k.createdAt, publicJwk: { ...k.publicJwk }, sealed };
}

function trustedTransition(t: KeyTransition): KeyTransition {
  return { kid: t.kid, type: t.type, at: t.at, recordedAt: t.recordedAt, ...(t.reason !== undefined ? { reason: t.reason } : {}) };
}

/** Refuses a key record whose shape is not one agentauth writes (before anything reads its fields). */
function checkKeyShape(raw: unknown): StoredKey {
  const k = raw as Partial<StoredKey>;
  const kid = isRecord(raw) ? label(raw.kid) : '(not a record)';
  const bad = (what: string) => new KeyIntegrityError(`stored key ${kid} is refused: ${what}; the key store was altered (see docs/operations.md, "Integrity of the key store")`);
  if (!isRecord(raw) || !isString(k.kid) || k.kid.length === 0) throw bad('it has no kid');
  if (k.unreadable !== undefined) throw bad(isString(k.unreadable) ? k.unreadable : 'it could not be read');
  if (!Number.isSafeInteger(k.seq) || k.seq! < 1) throw bad('its seq is not a positive integer');
  if (!SIGNING_ALGS.includes(k.alg as StoredKey['alg'])) throw bad(`its alg ${label(k.alg)} is not one agentauth uses`);
  if (k.state !== undefined && k.state !== 'active') throw bad('its legacy state is not "active"');
  if (!isTime(k.createdAt)) throw bad('its createdAt is not a time');
  if (!isRecord(k.publicJwk) || !Object.values(k.publicJwk).every(isString)) throw bad('its public JWK is not a JWK of string members');
  if (!isRecord(k.sealed) || ![k.sealed.kekId, k.sealed.iv, k.sealed.ciphertext, k.sealed.tag].every(isString)) throw bad('its sealed private key is malformed');
  return k as StoredKey;
}

function checkTransitionShape(raw: unknown): KeyTransition {
  const t = raw as Partial<KeyTransition>;
  const id = isRecord(raw) ? `${label(raw.kid)}:${label(raw.type)}` : '(not a record)';
  const bad = (what: string) => new KeyIntegrityError(`key transition ${id} is refused: ${what}; the key store was altered (see docs/operations.md, "Integrity of the key store")`);
  if (isRecord(raw) && raw.unreadable !== undefined) throw bad(isString(raw.unreadable) ? raw.unreadable : 'it could not be read');
  if (!isRecord(raw) || !isString(t.kid) || (t.type !== 'activate' && t.type !== 'retire' && t.type !== 'withdraw')) throw bad('it names no key or no known transition type');
  if (!isTime(t.at) || !isTime(t.recordedAt)) throw bad('its times are not times');
  if (t.reason !== undefined && !isString(t.reason)) throw bad('its reason is not text');
  return t as KeyTransition;
}

/**
 * Checks that a key record's public JWK is the public half of its sealed private key: unseals it (which proves the
 * KEK sealed it for this `kid`), derives the public key, and compares; the `kid` must be the RFC 7638 thumbprint of
 * the public JWK, and the key type must be the one its `alg` needs. Returns the private JWK.
 */
export async function checkKeyPair(current: Buffer, k: StoredKey, fallback?: Buffer): Promise<JWK> {
  const kek = sealingKek(current, k.sealed, fallback);
  const refuse = (what: string) =>
    new KeyIntegrityError(`stored key ${k.kid} is refused: ${what}; the key store was altered (see docs/operations.md, "Integrity of the key store")`);
  const present = PRIVATE_MEMBERS.filter((m) => m in k.publicJwk);
  if (present.length > 0) throw refuse(`its public JWK holds private members (${present.join(', ')})`);
  const want = KEY_TYPE[k.alg];
  if (k.publicJwk.kty !== want.kty || k.publicJwk.crv !== want.crv) throw refuse(`its public JWK is not an ${want.kty} ${want.crv} key, as ${k.alg} needs`);
  if (k.publicJwk.kid !== undefined && k.publicJwk.kid !== k.kid) throw refuse(`its public JWK names kid ${k.publicJwk.kid}`);
  if (k.publicJwk.alg !== undefined && k.publicJwk.alg !== k.alg) throw refuse(`its public JWK names alg ${k.publicJwk.alg}`);
  let thumbprint: string;
  try {
    thumbprint = await calculateJwkThumbprint(k.publicJwk as JWK, 'sha256');
  } catch (cause) {
    throw new KeyIntegrityError(`stored key ${k.kid} is refused: its public JWK is not a valid key`, { cause });
  }
  if (thumbprint !== k.kid) throw refuse(`its kid is not the thumbprint of its public JWK (${thumbprint})`);

  assertSealedUnder(kek, k.sealed, k.kid); // another KEK is a configuration error, reported as such
  let text: string;
  try {
    text = unseal(kek, k.sealed, k.kid);
  } catch (err) {
    throw new KeyIntegrityError(`stored key ${k.kid} is refused: ${(err as Error).message}`, { cause: err });
  }
  let privateJwk: JWK;
  let derived: JsonWebKey;
  try {
    privateJwk = JSON.parse(text) as JWK;
    derived = createPublicKey(createPrivateKey({ key: privateJwk as JsonWebKey, format: 'jwk' })).export({ format: 'jwk' });
  } catch (cause) {
    throw new KeyIntegrityError(`stored key ${k.kid} is refused: its sealed private key is not a usable JWK`, { cause });
  }
  if (privateJwk.kid !== k.kid) throw refuse('its sealed private key belongs to another kid');
  for (const member of ['kty', 'crv', 'x', 'y'] as const) {
    if (derived[member] !== k.publicJwk[member]) throw refuse('its public JWK does not match its sealed private key');
  }
  return privateJwk;
}

export interface VerifiedKeySet {
  /** Key records whose MAC verified, holding only the fields agentauth reads, by seq. */
  keys: StoredKey[];
  transitions: KeyTransition[];
}

/**
 * Checks every record's shape and MAC under `kek`; throws a KeyIntegrityError naming the first record refused. Key
 * pairs are not unsealed here: callers run {@link checkKeyPair} on keys they have not checked before.
 */
export function verifyKeySet(current: Buffer, keys: readonly unknown[], transitions: readonly unknown[], fallback?: Buffer): VerifiedKeySet {
  const trustedKeys = keys.map((raw) => {
    const k = checkKeyShape(raw);
    const kek = sealingKek(current, k.sealed, fallback);
    // The usual cause of a MAC that does not verify is a KEK that is not the one the store was written with: say so.
    if (k.mac !== undefined) assertSealedUnder(kek, k.sealed, k.kid);
    if (!macMatches(kek, keyRecordText(k), k.mac)) {
      throw new KeyIntegrityError(
        `stored key ${k.kid} is refused: ${k.mac === undefined ? 'it carries no integrity MAC' : 'its integrity MAC does not verify under this KEK'}; ` +
          'the key store was altered, or written under another KEK (see docs/operations.md, "Integrity of the key store")',
      );
    }
    return trustedKey(k);
  });
  const trustedTransitions = transitions.map((raw) => {
    const t = checkTransitionShape(raw);
    const text = transitionText(t);
    if (!macMatches(current, text, t.mac) && !(fallback !== undefined && macMatches(fallback, text, t.mac))) {
      throw new KeyIntegrityError(
        `key transition ${transitionId(t)} is refused: ${t.mac === undefined ? 'it carries no integrity MAC' : 'its integrity MAC does not verify under this KEK'}; ` +
          'the key store was altered, or written under another KEK (see docs/operations.md, "Integrity of the key store")',
      );
    }
    return trustedTransition(t);
  });
  // Each record is genuine; the set must be too: a genuine record copied into a second place (the same kid or seq
  // twice, a transition twice) would make a key retire itself or another key's windows.
  const repeated = (values: readonly string[]) => values.find((v, i) => values.indexOf(v) !== i);
  const twiceKid = repeated(trustedKeys.map((k) => k.kid));
  const twiceSeq = repeated(trustedKeys.map((k) => String(k.seq)));
  const twiceTransition = repeated(trustedTransitions.map((t) => transitionId(t)));
  if (twiceKid !== undefined || twiceSeq !== undefined || twiceTransition !== undefined) {
    const what = twiceKid !== undefined ? `key ${twiceKid}` : twiceSeq !== undefined ? `key seq ${twiceSeq}` : `key transition ${twiceTransition}`;
    throw new KeyIntegrityError(`${what} is stored twice; the key store was altered (see docs/operations.md, "Integrity of the key store")`);
  }
  return { keys: trustedKeys.sort((a, b) => a.seq - b.seq), transitions: trustedTransitions };
}

/** Reads the key store and verifies every record's MAC (no key pair is unsealed). */
export async function readVerifiedKeys(store: KeyStore, kek: Buffer, fallback?: Buffer): Promise<VerifiedKeySet> {
  const [keys, transitions] = await Promise.all([store.list(), store.transitions()]);
  return verifyKeySet(kek, keys, transitions, fallback);
}

/** Reads the key store, verifies every record's MAC and every key pair: what the CLI trusts. */
export async function readCheckedKeys(store: KeyStore, kek: Buffer, fallback?: Buffer): Promise<VerifiedKeySet> {
  const set = await readVerifiedKeys(store, kek, fallback);
  for (const k of set.keys) await checkKeyPair(kek, k, fallback);
  return set;
}

export interface UpgradeReport {
  /** Keys that had no MAC: their key pair was checked against the sealed private key, then the MAC written. */
  keys: string[];
  /** Transitions (`kid:type`) that had no MAC, taken as found (only in a store where no key had a MAC yet). */
  transitions: string[];
}

/**
 * The one-time upgrade of a key store written before records carried MACs, run by a process that holds the KEK
 * (every start, and every `agentauth keys` command that writes, before anything else).
 *
 * - A key without a MAC is upgraded only after {@link checkKeyPair} proves it genuine: its private key unseals under
 *   this KEK for its `kid` and matches its public JWK. Someone without the KEK cannot make such a record.
 * - A transition without a MAC cannot prove anything: it is upgraded only while no key in the store has a MAC (a
 *   store from before this version). Once any key has a MAC, a transition without one is refused by
 *   {@link verifyKeySet}. Transitions are upgraded before keys, so an upgrade interrupted half-way resumes at the
 *   next start.
 *
 * A record that already has a MAC is never rewritten. Returns what was upgraded (empty lists when nothing was).
 */
export async function upgradeKeyStore(store: KeyStore, kek: Buffer): Promise<UpgradeReport> {
  const [rawKeys, rawTransitions] = await Promise.all([store.list(), store.transitions()]);
  const keys = (rawKeys as unknown[]).map(checkKeyShape);
  const transitions = (rawTransitions as unknown[]).map(checkTransitionShape);
  const legacyStore = keys.every((k) => k.mac === undefined);
  const bare = keys.filter((x) => x.mac === undefined);
  // Every key is checked before anything is written: a refused key leaves the store as it was.
  for (const k of bare) {
    if (!legacyStore && k.state !== undefined) {
      throw new KeyIntegrityError(`stored key ${k.kid} is refused: it carries no integrity MAC and a legacy state in a store whose keys have MACs; the key store was altered`);
    }
    await checkKeyPair(kek, k);
  }
  const report: UpgradeReport = { keys: [], transitions: [] };
  if (legacyStore) {
    for (const t of transitions.filter((x) => x.mac === undefined)) {
      await store.addTransitionMac(t.kid, t.type, macTransition(kek, t).mac!);
      report.transitions.push(transitionId(t));
    }
  }
  for (const k of bare) {
    await store.addKeyMac(k.kid, macKeyRecord(kek, k).mac!);
    report.keys.push(k.kid);
  }
  return report;
}
