import { KeyObject, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { webcrypto } from 'node:crypto';

import { bytesOf, ownData, syncDigestName } from './sync-digest.js';

/**
 * WebCrypto's `sign` and `verify` for ECDSA and Ed25519 computed at once on the calling thread, instead of as a job on
 * libuv's thread pool.
 *
 * Why: every token agentauth issues is a JWT that jose signs with `crypto.subtle.sign` (ES256 by default), and every
 * DPoP proof is a JWT that jose verifies with `crypto.subtle.verify`; so does every JWT access token agentauth
 * introspects. Node runs each as a thread-pool job: the signature itself (about 20 µs to sign, 50 µs to verify a
 * P-256 signature on this project's 2-core machine) plus a job, a hand-off to another thread and a promise settled
 * from it, about 15 µs of CPU more per call (bench/inline-signatures.mjs measures both). The answer is the same either
 * way: Node's WebCrypto computes these with the same OpenSSL calls (`ieee-p1363` signatures for ECDSA, as WebCrypto
 * defines them), and a signature is a pure function of key and input (ECDSA's per-signature nonce aside, which
 * differs between any two calls anyway).
 *
 * What is computed here: `verify(algorithm, key, signature, data)` and `sign(algorithm, key, data)` where
 * - `algorithm` is `{ name: 'ECDSA', hash }` with `hash` SHA-256, SHA-384 or SHA-512 (a string or `{ name }`, any
 *   letter case) or `{ name: 'Ed25519' }` / 'Ed25519', read as own data members only;
 * - `key` is a CryptoKey of that same algorithm, of the right type (public to verify, private to sign) and allowed
 *   that usage;
 * - `signature` and `data` are an ArrayBuffer or a view of one (not shared memory).
 * Anything else (other algorithms, a key of another algorithm or type or without the usage, a wrong argument count,
 * a getter where a member should be) goes to WebCrypto's own method, which answers or rejects as it always did; so
 * does any call Node's synchronous functions refuse. A signature of the wrong length or encoding verifies as false,
 * as in WebCrypto (Node's `verify` answers false for an `ieee-p1363` signature that is not exactly r ‖ s). Results
 * are a boolean and a fresh ArrayBuffer, and nothing throws: errors reject the promise.
 *
 * When: only where it saves what matters. Inline, a signature costs less CPU in all (bench/inline-signatures.mjs:
 * 22 against 34 µs to sign, 53 against 70 to verify an ES256 JWT), but all of it lands on the event loop, which the
 * thread pool would have spared by running it on another core. A server process whose event loop is its bottleneck
 * and that has cores to spare answers fewer tokens inline (one process on 2 cores: about 7 % fewer DPoP tokens per
 * second, with 11 % less CPU per token; docs/performance.md, eleventh round). So `boot()` installs this only when
 * the server's processes are at least as many as the cores (`signaturesInline`): `--workers N` with N ≥ cores, or
 * one process on one core, where every core already runs an event loop and the thread pool's extra CPU comes out of
 * theirs.
 */

type Subtle = webcrypto.SubtleCrypto;
type CryptoKey = webcrypto.CryptoKey;

interface Inline {
  /** Node's digest name for ECDSA; null for Ed25519 (no separate hash). */
  hash: string | null;
  /** The key algorithm's name as WebCrypto stores it on the key. */
  keyAlgorithm: 'ECDSA' | 'Ed25519';
}

/** What this module computes for `algorithm`, or undefined when WebCrypto must answer. */
export function inlineAlgorithm(algorithm: unknown): Inline | undefined {
  if (typeof algorithm === 'string') return /^ed25519$/i.test(algorithm) ? { hash: null, keyAlgorithm: 'Ed25519' } : undefined;
  if (typeof algorithm !== 'object' || algorithm === null || Array.isArray(algorithm)) return undefined;
  const name = ownData(algorithm, 'name');
  if (typeof name !== 'string') return undefined;
  if (/^ed25519$/i.test(name)) return { hash: null, keyAlgorithm: 'Ed25519' };
  if (!/^ecdsa$/i.test(name)) return undefined;
  const hash = syncDigestName(ownData(algorithm, 'hash'));
  return hash === undefined ? undefined : { hash, keyAlgorithm: 'ECDSA' };
}

/** WebCrypto's CryptoKey class (a global in Node; `webcrypto.CryptoKey` is not exported). */
const CryptoKeyClass = (globalThis as unknown as { CryptoKey: abstract new () => CryptoKey }).CryptoKey;

/** The KeyObject behind each CryptoKey seen (held as long as the CryptoKey is). */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();

/** The key's KeyObject when `key` is a CryptoKey for `inline`, of `type`, allowed `usage`; else undefined. */
function keyFor(key: unknown, inline: Inline, type: 'public' | 'private', usage: 'sign' | 'verify'): KeyObject | undefined {
  if (!(key instanceof CryptoKeyClass)) return undefined;
  if (key.type !== type || key.algorithm.name !== inline.keyAlgorithm || !key.usages.includes(usage)) return undefined;
  let keyObject = keyObjects.get(key);
  if (!keyObject) {
    keyObject = KeyObject.from(key);
    keyObjects.set(key, keyObject);
  }
  return keyObject;
}

/**
 * Whether signatures should be computed inline by a server of `processes` processes on a machine with `cores` cores
 * (`os.availableParallelism()`): when no core is left for the thread pool to use.
 */
export function signaturesInline(processes: number, cores: number = availableParallelism()): boolean {
  return processes >= cores;
}

const INSTALLED = Symbol.for('agentauth.inlineSignatures');
type Patched = Subtle & { [INSTALLED]?: true };

/** Whether `subtle` (the process-wide one unless given) has the inline methods installed. */
export function inlineSignaturesInstalled(subtle: Subtle = globalThis.crypto.subtle): boolean {
  return (subtle as Patched)[INSTALLED] === true;
}

/**
 * Replaces `subtle.sign` and `subtle.verify` (the process-wide `globalThis.crypto.subtle` unless given) once; a second
 * call changes nothing. Called at server start, before any request. Returns whether this call installed them.
 */
export function installInlineSignatures(subtle: Subtle = globalThis.crypto.subtle): boolean {
  const patched = subtle as Patched;
  if (patched[INSTALLED]) return false;
  const originalSign = subtle.sign.bind(subtle) as (...args: unknown[]) => Promise<ArrayBuffer>;
  const originalVerify = subtle.verify.bind(subtle) as (...args: unknown[]) => Promise<boolean>;

  function verify(...args: unknown[]): Promise<boolean> {
    const inline = args.length === 4 ? inlineAlgorithm(args[0]) : undefined;
    const key = inline && keyFor(args[1], inline, 'public', 'verify');
    const signature = key && bytesOf(args[2]);
    const data = signature && bytesOf(args[3]);
    if (!inline || !key || !signature || !data) return originalVerify(...args);
    try {
      return Promise.resolve(inline.hash === null ? nodeVerify(null, data, key, signature) : nodeVerify(inline.hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature));
    } catch {
      return originalVerify(...args);
    }
  }

  function sign(...args: unknown[]): Promise<ArrayBuffer> {
    const inline = args.length === 3 ? inlineAlgorithm(args[0]) : undefined;
    const key = inline && keyFor(args[1], inline, 'private', 'sign');
    const data = key && bytesOf(args[2]);
    if (!inline || !key || !data) return originalSign(...args);
    try {
      const out = inline.hash === null ? nodeSign(null, data, key) : nodeSign(inline.hash, data, { key, dsaEncoding: 'ieee-p1363' });
      return Promise.resolve(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) as ArrayBuffer);
    } catch {
      return originalSign(...args);
    }
  }

  Object.defineProperty(subtle, 'sign', { value: sign as Subtle['sign'], configurable: true, writable: true, enumerable: false });
  Object.defineProperty(subtle, 'verify', { value: verify as Subtle['verify'], configurable: true, writable: true, enumerable: false });
  Object.defineProperty(subtle, INSTALLED, { value: true, configurable: true });
  return true;
}
