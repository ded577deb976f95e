import { StorageUnavailableError } from './errors.js';

/**
 * Settles with `call`, or rejects with StorageUnavailableError once `ms` have passed, whichever comes first. Every
 * caller's `ms` is the configured `storage.timeoutMs`, which the message names, so that an operator who meets it
 * (a slow database, a store grown past what its server answers in time) knows which setting bounds it.
 * A database that accepts connections but never answers (hung, paused, a half-open network path) is thus a failure
 * after `ms`, not a request that waits for the driver's own socket timeouts. The abandoned call keeps running in the
 * background and may still apply a write: like any timed-out call, its outcome is unknown to the caller.
 */
export function deadline<T>(call: Promise<T>, ms: number, op: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StorageUnavailableError(`${op} timed out after ${ms} ms (storage.timeoutMs)`)), ms);
  });
  // A late failure of the abandoned call is nobody's to handle.
  call.catch(() => undefined);
  return Promise.race([call, expired]).finally(() => clearTimeout(timer));
}

/**
 * An object that forwards to `current()` (looked up on every access, so the target can be replaced), with every
 * method that returns a promise bounded by `deadline(…, ms, "<label>.<method>")`. For the storage interfaces
 * (ModelStore, KeyStore, ...): each call a request makes is then bounded as a whole, however many round trips it
 * takes inside.
 */
export function withDeadline<T extends object>(current: () => T, ms: number, label: string): T {
  return new Proxy({} as T, {
    get(_, prop) {
      const obj = current();
      const value: unknown = Reflect.get(obj, prop, obj);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]): unknown => {
        const result: unknown = Reflect.apply(value, obj, args);
        return result instanceof Promise ? deadline(result, ms, `${label}.${String(prop)}`) : result;
      };
    },
  });
}
