import { hash } from 'node:crypto';
import type { webcrypto } from 'node:crypto';

/**
 * WebCrypto's `digest` for the SHA-2 family computed at once on the calling thread, instead of as a job on libuv's
 * thread pool.
 *
 * Why: oidc-provider computes the RFC 7638 thumbprint of every DPoP proof's key with jose's `calculateJwkThumbprint`
 * (lib/helpers/validate_dpop.js), which hashes about a hundred bytes with `crypto.subtle.digest('SHA-256', ...)`.
 * Hashing that takes about 2 µs; sending it to the thread pool and back costs about 15 µs of CPU more (a job, a
 * thread hand-off, a promise settled from another thread), measured on this project's 2-core machine. The answer is
 * the same bytes either way: the digest is a pure function of its input.
 *
 * What is computed here: `digest(algorithm, data)` with `algorithm` 'SHA-256', 'SHA-384' or 'SHA-512' (a string or
 * `{ name }`, any letter case, as WebCrypto normalises it) and `data` an ArrayBuffer or a view of one. Anything else
 * (SHA-1, other names or spellings, a SharedArrayBuffer, a wrong argument count or type) goes to WebCrypto's own `digest`, which
 * answers or rejects as it always did. The result is a new ArrayBuffer, as WebCrypto's, and errors reject the
 * promise rather than throwing.
 */

type Subtle = webcrypto.SubtleCrypto;
type Digest = Subtle['digest'];

const NODE_NAMES: Readonly<Record<string, string>> = { 'SHA-256': 'sha256', 'SHA-384': 'sha384', 'SHA-512': 'sha512' };
const SHA2 = /^sha-(256|384|512)$/i;

/** An own data member of `object`, else undefined: a getter or an inherited member goes to WebCrypto, which reads it its way. */
export function ownData(object: object, member: string): unknown {
  const descriptor = Object.getOwnPropertyDescriptor(object, member);
  return descriptor && 'value' in descriptor ? descriptor.value : undefined;
}

/** Node's name for a WebCrypto digest algorithm this module computes itself, else undefined. */
export function syncDigestName(algorithm: unknown): string | undefined {
  const name = typeof algorithm === 'object' && algorithm !== null && !Array.isArray(algorithm) ? ownData(algorithm, 'name') : algorithm;
  // ASCII case-insensitive, as the WebCrypto specification matches names: a regular expression without the `u` flag
  // never folds a non-ASCII character into an ASCII one. Node's own WebCrypto upper-cases the whole name (so it takes
  // 'ſha-256' for 'SHA-256'); such a name goes to it, and gets its answer.
  return typeof name === 'string' && SHA2.test(name) ? NODE_NAMES[name.toUpperCase()] : undefined;
}

/** The bytes of `data` when it is an ArrayBuffer or a view of one (not shared memory), else undefined. */
export function bytesOf(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data) && data.buffer instanceof ArrayBuffer) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

const INSTALLED = Symbol.for('agentauth.syncDigest');
type Patched = Subtle & { [INSTALLED]?: true };

/**
 * Replaces `subtle.digest` (the process-wide `globalThis.crypto.subtle` unless given) once; a second call changes
 * nothing. Called at server start, before any request. Returns whether this call installed it.
 */
export function installSyncDigest(subtle: Subtle = globalThis.crypto.subtle): boolean {
  const patched = subtle as Patched;
  if (patched[INSTALLED]) return false;
  const original = subtle.digest.bind(subtle) as (...args: unknown[]) => Promise<ArrayBuffer>;

  function digest(...args: unknown[]): Promise<ArrayBuffer> {
    const nodeName = args.length === 2 ? syncDigestName(args[0]) : undefined;
    const bytes = nodeName === undefined ? undefined : bytesOf(args[1]);
    if (nodeName === undefined || bytes === undefined) return original(...args);
    try {
      const out = hash(nodeName, bytes, 'buffer');
      // A fresh ArrayBuffer holding exactly the digest (a Buffer may be a slice of a shared pool).
      return Promise.resolve(out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength) as ArrayBuffer);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  Object.defineProperty(subtle, 'digest', { value: digest as Digest, configurable: true, writable: true, enumerable: false });
  Object.defineProperty(subtle, INSTALLED, { value: true, configurable: true });
  return true;
}
