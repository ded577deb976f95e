import type { KeyStore, KeyTransition } from '../adapters/types.js';
import { KeyMaterialError } from './errors.js';
import type { SigningAlg } from './generate.js';
import { macTransition, readVerifiedKeys } from './integrity.js';
import { newStoredKey } from './keyring.js';
import { deriveKeyView } from './lifecycle.js';
import type { KeyState, LifecyclePolicy } from './lifecycle.js';

export interface RotationResult {
  status: 'scheduled' | 'already-scheduled' | 'activated';
  kid: string;
  activatesAt: Date;
  /** The key that stops signing when `kid` activates. */
  replaces?: string | undefined;
  /** Keys an interrupted rotation left without an activation (never signed, never to sign), retired by this one. */
  abandoned?: string[];
}

export interface RotateOptions {
  alg: SigningAlg;
  /** Seconds between publishing the new key and signing with it (verifiers refresh their JWKS caches meanwhile). */
  publishDelaySeconds: number;
  /** Activate the new key now (key compromise); pending next keys are retired. */
  immediately?: boolean;
  reason?: string;
  now?: Date;
  /** The KEK being rotated away from: records another process has not re-sealed yet are read under it. */
  fallback?: Buffer | undefined;
}

/** How long a key stored without its activation counts as a rotation still in progress (rotateKeys). */
const IN_PROGRESS_MS = 60_000;
/** The reason recorded with the retirement of a key an interrupted rotation left without an activation. */
const ABANDONED = 'never activated: left without an activation by an interrupted rotation';

/**
 * Zero-downtime rotation: a new key is published now and activates after `publishDelaySeconds`; the current key
 * is retired at that moment by the activation itself (keys/lifecycle.ts). Writes are inserts with unique ids, so
 * concurrent rotations (two operators, or every instance's automatic rotation) create one new key, not several.
 */
export async function rotateKeys(store: KeyStore, kek: Buffer, policy: LifecyclePolicy, opts: RotateOptions): Promise<RotationResult> {
  const now = opts.now ?? new Date();
  const { keys, transitions } = await readVerifiedKeys(store, kek, opts.fallback);
  const view = deriveKeyView(keys, transitions, now, policy);
  const pending = view.timelines.filter((t) => t.state === 'next');
  if (!opts.immediately) {
    const scheduled = pending.find((t) => t.activatesAt !== undefined);
    if (scheduled) return { status: 'already-scheduled', kid: scheduled.kid, activatesAt: scheduled.activatesAt!, replaces: view.signer?.kid };
    // A rotation stores its key and then its activation, two writes: a key stored a moment ago without one is another
    // rotation in progress, not a key to rotate past (both stored a key, and the instances that saw the two activate
    // out of order refused the store from then on). One left without an activation by a crash stops being counted
    // after IN_PROGRESS_MS.
    const storing = pending.find((t) => t.activatesAt === undefined && Math.abs(now.getTime() - t.createdAt.getTime()) < IN_PROGRESS_MS);
    if (storing) {
      throw new KeyMaterialError(`another rotation is storing key ${storing.kid} right now; run \`agentauth keys list\` in a moment, and rotate again if it did not schedule one`);
    }
  }
  // With no key signing now (a store created by `keys rotate --init`), there is no cache to give time to and nothing
  // to sign with meanwhile: a server would refuse to start until the key activated. The new key signs at once.
  const immediately = opts.immediately === true || view.signer === undefined;
  const seq = Math.max(0, ...keys.map((k) => k.seq)) + 1;
  const record = await newStoredKey(kek, opts.alg, seq, now);
  if (!(await store.insert(record))) {
    throw new KeyMaterialError('another rotation stored a key at the same moment; run `agentauth keys list` and rotate again if needed');
  }
  const activatesAt = immediately ? now : new Date(now.getTime() + opts.publishDelaySeconds * 1000);
  const stamp = { recordedAt: now.toISOString(), ...(opts.reason ? { reason: opts.reason } : {}) };
  if (immediately) {
    for (const p of pending) await store.addTransition(macTransition(kek, { kid: p.kid, type: 'retire', at: now.toISOString(), ...stamp }));
  }
  await store.addTransition(macTransition(kek, { kid: record.kid, type: 'activate', at: activatesAt.toISOString(), ...stamp }));
  // Keys a crashed rotation left without an activation (past IN_PROGRESS_MS: the check above let this rotation go on)
  // never signed and nothing will activate them: retired now, they leave the JWKS after the grace instead of being
  // published as next for ever, one more after every such crash. (An immediate rotation retired them above.)
  const abandoned = immediately ? [] : pending.filter((t) => t.activatesAt === undefined).map((t) => t.kid);
  for (const kid of abandoned) await addTransitionNow(store, kek, kid, 'retire', now, ABANDONED);
  return { status: immediately ? 'activated' : 'scheduled', kid: record.kid, activatesAt, replaces: view.signer?.kid, ...(abandoned.length > 0 ? { abandoned } : {}) };
}

/** Key `kid` as the verified store has it at `now`, and whether it signs then; KeyMaterialError when there is none. */
async function keyNow(store: KeyStore, kek: Buffer, kid: string, policy: LifecyclePolicy, now: Date): Promise<{ state: KeyState; signs: boolean; activatesAt: Date | undefined }> {
  const { keys, transitions } = await readVerifiedKeys(store, kek);
  const view = deriveKeyView(keys, transitions, now, policy);
  const key = view.timelines.find((t) => t.kid === kid);
  if (!key) throw new KeyMaterialError(`no key ${kid}`);
  return { state: key.state, signs: view.signer?.kid === kid, activatesAt: key.activatesAt };
}

/**
 * What the retire and withdraw commands need beyond the lifecycle: how close to its activation a scheduled key may
 * already sign at some instance before that instance reads the command's transition (its key refresh interval, plus
 * the time the write may take: server/cli-keys.ts). A retire or withdraw is stamped with this process's time, and one
 * stamped before the key's activation cancels the rotation: an instance that had switched to the key would be told the
 * old key signs again (which it refuses as a removed record), and the others would refuse its tokens.
 */
export interface KeyCommandPolicy extends LifecyclePolicy {
  activationMarginSeconds?: number;
}

function refuseNearActivation(kid: string, key: { state: KeyState; activatesAt: Date | undefined }, policy: KeyCommandPolicy, now: Date, instead: string): void {
  const margin = (policy.activationMarginSeconds ?? 0) * 1000;
  if (key.state !== 'next' || key.activatesAt === undefined || key.activatesAt.getTime() - now.getTime() > margin) return;
  throw new KeyMaterialError(
    `${kid} activates at ${key.activatesAt.toISOString()}, within ${policy.activationMarginSeconds ?? 0} s (keys.refreshIntervalSeconds + storage.timeoutMs): some instances may already sign with it; ${instead}`,
  );
}

/** The transition `type` for `kid` now, MACed under the KEK; false when one was already stored. */
function addTransitionNow(store: KeyStore, kek: Buffer, kid: string, type: KeyTransition['type'], now: Date, reason?: string): Promise<boolean> {
  return store.addTransition(macTransition(kek, { kid, type, at: now.toISOString(), recordedAt: now.toISOString(), ...(reason ? { reason } : {}) }));
}

/** Retires a key now. The signing key cannot be retired without a successor: rotate instead. */
export async function retireKey(store: KeyStore, kek: Buffer, kid: string, policy: KeyCommandPolicy, reason?: string, now = new Date()): Promise<void> {
  const key = await keyNow(store, kek, kid, policy, now);
  if (key.state === 'retired' || key.state === 'archived' || key.state === 'withdrawn') return;
  if (key.signs) {
    throw new KeyMaterialError(`${kid} is the signing key; run \`agentauth keys rotate\` (or --immediately) to replace it first`);
  }
  refuseNearActivation(kid, key, policy, now, 'wait until it signs, then run `agentauth keys rotate` to replace it');
  await addTransitionNow(store, kek, kid, 'retire', now, reason);
}

/**
 * Withdraws a key now (its private key was stolen): it leaves JWKS at every instance's next key refresh instead of
 * after the retire grace, never signs, and nothing it signed is trusted any more (introspection finds no key for it;
 * `agentauth verify` says it was withdrawn). The signing key cannot be withdrawn: `rotate --immediately` first, so that
 * a key stays to sign with. Returns false when it was already withdrawn (nothing changed).
 */
export async function withdrawKey(store: KeyStore, kek: Buffer, kid: string, policy: KeyCommandPolicy, reason?: string, now = new Date()): Promise<boolean> {
  const key = await keyNow(store, kek, kid, policy, now);
  if (key.state === 'withdrawn') return false;
  if (key.signs) {
    throw new KeyMaterialError(`${kid} is the signing key; run \`agentauth keys rotate --immediately\` to replace it first, then withdraw it`);
  }
  refuseNearActivation(kid, key, policy, now, 'run `agentauth keys rotate --immediately` first (a new key then signs everywhere), then withdraw it');
  return addTransitionNow(store, kek, kid, 'withdraw', now, reason);
}
