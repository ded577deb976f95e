/** Key material is missing, sealed under another key-encryption key, or unreadable. The server refuses to start. */
export class KeyMaterialError extends Error {
  readonly code = 'key_material';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KeyMaterialError';
  }
}
