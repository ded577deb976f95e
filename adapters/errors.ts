import { misshapenField } from './payload-shape.js';

/**
 * Storage could not be read or written (unreachable, timed out, or answered with an error we cannot act on).
 * Callers fail closed on it: nothing is issued or accepted, and HTTP answers 503 `temporarily_unavailable`.
 */
export class StorageUnavailableError extends Error {
  readonly code = 'storage_unavailable';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageUnavailableError';
  }
}

/** A value that would reach a storage query failed validation (wrong type, characters outside RFC 6749 classes, `$` prefix, too long). */
export class InvalidStorageValueError extends Error {
  readonly code = 'invalid_storage_value';

  constructor(readonly field: string, reason: string) {
    super(`${field}: ${reason}`);
    this.name = 'InvalidStorageValueError';
  }
}

/**
 * A stored record whose payload is not a JSON object, or a token or code whose `field` is not of the type
 * oidc-provider writes it as (adapters/payload-shape.ts): the file or the database was damaged or edited outside the
 * server. It is never handed to oidc-provider; its readers treat it as absent (fail closed: the token, code or client
 * it was is refused) and say so. `id` is named only where a listing for an operator found it (stored ids of credential
 * models are keyed hashes, adapters/sealed-credential-ids.ts, not credentials).
 */
export class UnreadableRecordError extends Error {
  readonly code = 'unreadable_record';

  constructor(readonly model: string, readonly id?: string, readonly field?: string) {
    super(
      `a stored ${model} record${id === undefined ? '' : ` (id ${JSON.stringify(id)})`} ${field === undefined ? 'is not a JSON object' : `has a ${JSON.stringify(field)} of the wrong type`}: the database was damaged or edited outside agentauth`,
    );
    this.name = 'UnreadableRecordError';
  }
}

/** A stored oidc-provider payload, decoded: a JSON object, or UnreadableRecordError. */
export function decodeStoredPayload<T extends object>(text: unknown, model: string, id?: string): T {
  let value: unknown;
  try {
    value = typeof text === 'string' ? JSON.parse(text) : undefined;
  } catch {
    value = undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UnreadableRecordError(model, id);
  // A token whose fields are not of the types oidc-provider writes would be echoed as they are (introspection).
  const field = misshapenField(model, value as Record<string, unknown>);
  if (field !== undefined) throw new UnreadableRecordError(model, id, field);
  return value as T;
}

/** Told of a stored record a lookup found unreadable and answered as absent (a store's `onUnreadable` option). */
export type UnreadableListener = (err: UnreadableRecordError) => void;

/**
 * A lookup's answer where the record found is not readable: absent (fail closed: whatever it was is refused as an
 * unknown one is, never a 500, and storage is not marked down for it), with `listener` told.
 */
export function absentIfUnreadable<T>(read: () => T, listener: UnreadableListener | undefined): T | undefined {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof UnreadableRecordError)) throw err;
    listener?.(err);
    return undefined;
  }
}

/**
 * A stored audit checkpoint (where a pruned chain starts) that is not what `agentauth audit prune` writes: a
 * verification cannot know where the chain starts, so it fails rather than guess.
 */
export class AuditCheckpointError extends Error {
  readonly code = 'audit_checkpoint_altered';

  constructor(readonly chain: string) {
    super(`the audit checkpoint of ${chain === '' ? 'the default chain' : `chain ${chain}`} is not what agentauth audit prune writes (edited, or damaged)`);
    this.name = 'AuditCheckpointError';
  }
}
