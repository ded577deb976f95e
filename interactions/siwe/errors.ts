/**
 * The check that refused a sign-in; one per verification step. The cheap ones come first (message-format for size
 * and line structure, attempts, domain, uri, request-id, nonce, nonce-binding), then the grammar parse
 * (message-format), then the rest in this order (see verify.ts).
 */
export type SiweRule =
  | 'message-format'
  | 'attempts'
  | 'domain'
  | 'uri'
  | 'request-id'
  | 'nonce'
  | 'nonce-binding'
  | 'version'
  | 'chain-id'
  | 'issued-at'
  | 'expiration-time'
  | 'not-before'
  | 'resources'
  | 'scope'
  | 'signature'
  | 'contract-wallet';

/**
 * A Sign-In with Ethereum message or signature was refused. `rule` names the check, the message says what was
 * expected and what was received (never the signature), and `address` is the message's address once it is known.
 */
export class SiweVerificationError extends Error {
  readonly code = 'siwe_verification_failed';

  constructor(
    readonly rule: SiweRule,
    message: string,
    readonly address?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'SiweVerificationError';
  }
}
