import { InvalidStorageValueError, StorageUnavailableError, UnreadableRecordError } from '../../adapters/errors.js';
import type { AuditStore, KeyStore, ModelName, ModelStore, NonceStore, RevokedTokenStore, Storage } from '../../adapters/types.js';
import type { Metrics } from './registry.js';

/** Every async method of each store (checked against adapters/types.ts by the compiler). */
const MODEL_OPS = [
  'upsert', 'find', 'findByUid', 'findByUserCode', 'consume', 'setSuccessor', 'rotate', 'consumption', 'destroy',
  'revokeByGrantId', 'revokeByClientId', 'insertOnce', 'idsByAccount',
] as const satisfies ReadonlyArray<keyof ModelStore>;
const KEY_OPS = ['list', 'insert', 'transitions', 'addTransition', 'addKeyMac', 'addTransitionMac', 'replaceKey', 'replaceTransitionMac'] as const satisfies ReadonlyArray<keyof KeyStore>;
const REVOKED_OPS = ['revoke', 'isRevoked', 'anyRevoked'] as const satisfies ReadonlyArray<keyof RevokedTokenStore>;
const NONCE_OPS = ['issue', 'boundTo', 'consume', 'takeAttempt', 'claim'] as const satisfies ReadonlyArray<keyof NonceStore>;
const AUDIT_OPS = ['head', 'insertBatch', 'list', 'chains', 'strays'] as const satisfies ReadonlyArray<keyof AuditStore>;
const STORAGE_OPS = ['init', 'ping', 'close'] as const satisfies ReadonlyArray<keyof Storage>;

/** The error kind label: the code of agentauth's storage errors, `other` for anything else. */
export function storageErrorKind(err: unknown): string {
  if (err instanceof StorageUnavailableError || err instanceof InvalidStorageValueError || err instanceof UnreadableRecordError) return err.code;
  return 'other';
}

type AsyncMethods = Record<string, (...args: never[]) => Promise<unknown>>;

/**
 * A copy of `target` whose listed methods are timed and whose failures are counted (then rethrown unchanged).
 * Methods run on the original object, so implementations with private fields keep working.
 */
function measured<T extends object>(target: T, ops: readonly (keyof T & string)[], labels: { backend: string; store: string }, metrics: Metrics): T {
  const wrapped: AsyncMethods = {};
  for (const operation of ops) {
    wrapped[operation] = async (...args: never[]) => {
      const end = metrics.storageDuration.startTimer({ ...labels, operation });
      try {
        // Looked up on every call, never kept: a store can be a view of a replaceable target (MongoStorage's stores
        // follow its current client, which is replaced after pings kept failing). A method kept from the start went on
        // calling the first, closed client: every call failed with MongoNotConnectedError while /readyz said 200.
        return await (target as unknown as AsyncMethods)[operation]!.apply(target, args);
      } catch (err) {
        metrics.storageErrors.inc({ ...labels, operation, error: storageErrorKind(err) });
        throw err;
      } finally {
        end();
      }
    };
  }
  return new Proxy(target, {
    get(t, prop) {
      if (typeof prop === 'string' && Object.hasOwn(wrapped, prop)) return wrapped[prop];
      const value: unknown = Reflect.get(t, prop);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(t) : value;
    },
  });
}

/**
 * The same storage, with every call of the Storage contract timed by backend, store and operation, and every
 * failure counted by error kind. What the store does, and what it throws, is unchanged.
 */
export function measuredStorage(storage: Storage, metrics: Metrics): Storage {
  const backend = storage.kind;
  const models = new Map<ModelName, ModelStore>();
  const keys = measured(storage.keys, KEY_OPS, { backend, store: 'keys' }, metrics);
  const revokedTokens = measured(storage.revokedTokens, REVOKED_OPS, { backend, store: 'revoked_tokens' }, metrics);
  const nonces = measured(storage.nonces, NONCE_OPS, { backend, store: 'nonces' }, metrics);
  const audit = measured(storage.audit, AUDIT_OPS, { backend, store: 'audit' }, metrics);
  const model = (name: ModelName): ModelStore => {
    let store = models.get(name);
    if (!store) {
      store = measured(storage.model(name), MODEL_OPS, { backend, store: name }, metrics);
      models.set(name, store);
    }
    return store;
  };
  const top = measured(storage, STORAGE_OPS, { backend, store: 'storage' }, metrics);
  return new Proxy(top, {
    get(t, prop) {
      switch (prop) {
        case 'model': return model;
        case 'keys': return keys;
        case 'revokedTokens': return revokedTokens;
        case 'nonces': return nonces;
        case 'audit': return audit;
        default: return Reflect.get(t, prop);
      }
    },
  });
}
