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
