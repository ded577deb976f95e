import { hash } from 'node:crypto';

import { errors } from 'oidc-provider';

/** The id oidc-provider's ReplayDetection gives a jti used by `iss` (lib/models/replay_detection.js). */
export function replayId(iss: string, jti: string): string {
  return hash('sha256', `${iss}${jti}`, 'base64url');
}

/** A DPoP proof presented again at the token or userinfo endpoint: invalid_dpop_proof, as RFC 9449 §5 and §7.1 make it. */
export function replayedProof(): Error {
  return new errors.InvalidDpopProof('DPoP proof JWT replay detected: each proof (its jti) may be used once');
}
