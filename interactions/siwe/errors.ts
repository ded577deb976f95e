/** The EIP-4361 check that refused a sign-in; one per verification step (message-format, then nonce, then the rest in this order). */
export type SiweRule =
  | 'message-format'
  | 'domain'
  | 'uri'
  | 'version'
  | 'chain-id'
  | 'nonce'
  | 'issued-at'
  | 'expiration-time'
  | 'not-before'
  | 'resources'
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
