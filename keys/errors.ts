/** Key material is missing, sealed under another key-encryption key, or unreadable. The server refuses to start. */
export class KeyMaterialError extends Error {
  readonly code: string = 'key_material';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KeyMaterialError';
  }
}

/**
 * A key record or transition in storage failed its integrity check (keys/integrity.ts): written without the KEK,
 * altered, or injected. The message names the record. Nothing from that key set is trusted.
 */
export class KeyIntegrityError extends KeyMaterialError {
  override readonly code = 'key_integrity';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KeyIntegrityError';
  }
}
