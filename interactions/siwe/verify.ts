
import type { NonceStore } from '../../adapters/types.js';
import { SiweVerificationError } from './errors.js';
import { checksumAddress, eip191Digest, toHex } from './eth.js';
import { hasHighS, NonCanonicalV, recoverSigner } from './recover.js';
import type { SiweRule } from './errors.js';
import { describeBinding, signedScopes } from './binding.js';
import { parseSiweMessage } from './message.js';
import type { SiweMessage } from './message.js';
import { outlineSiweMessage } from './outline.js';
import type { SiweOutline } from './outline.js';

export { SiweVerificationError };
export type { SiweRule };

export interface SiweRules {
  /** Allowed `domain` values (RFC 3986 authority: host[:port]); compared case-insensitively. */
  domains: readonly string[];
  /** Allowed origins for `uri` (and for `scheme://domain` when the message names a scheme). */
  origins: readonly string[];
  chainIds: readonly number[];
  /** How far in the past `Issued At` may be. */
  issuedAtWindowSeconds: number;
  /** Tolerance for `Issued At` in the future, for `Expiration Time` and for `Not Before`. */
  clockSkewSeconds: number;
}

/**
 * EIP-1271 check of a contract wallet's signature over `digest` (the EIP-191 `hashMessage` of the message).
 * Resolves false when the contract refuses it; throws SiweVerificationError('contract-wallet') when it cannot ask
 * (no JSON-RPC endpoint for the chain, or the call fails or times out).
 */
export interface Eip1271Verifier {
  (chainId: number, address: string, digest: string, signature: string): Promise<boolean>;
}

export interface VerifiedSiwe {
  /** EIP-55 checksummed. */
  address: string;
  chainId: number;
  /** `did:pkh:eip155:<chainId>:<EIP-55 address>` */
  sub: string;
  resources: string[];
  /** The scopes the message signs (`urn:agentauth:scope:<scope>` resources). */
  scopes: string[];
  statement?: string;
  nonce: string;
  issuedAt: Date;
  expirationTime?: Date;
  requestId?: string;
  method: 'eip191' | 'eip1271';
}

export interface SiweInput {
  message: string;
  /** 0x-prefixed hex: a 65-byte EOA signature, or a contract wallet's signature bytes. */
  signature: string;
  /** What the message's nonce must have been issued for (the nonce store's binding, see binding.ts). */
  nonceBinding: string;
  /** When set, a `Request ID` in the message must equal it (the login page's interaction uid). */
  requestId?: string;
  /** Resources the message must list: signing it is the user's consent to them. */
  requiredResources?: readonly string[];
  /** Scopes about to be granted: each must be signed as a `urn:agentauth:scope:<scope>` resource. */
  requiredScopes?: readonly string[];
}

export interface SiweDeps {
  nonces: NonceStore;
  eip1271?: Eip1271Verifier;
  now?: () => Date;
}

/** Longest signature accepted (contract wallets' signatures can hold several owners' signatures). */
export const MAX_SIGNATURE_BYTES = 16 * 1024;

const EOA_SIGNATURE = /^0x[0-9a-fA-F]{130}$/;
const HEX_BYTES = /^0x(?:[0-9a-fA-F]{2})+$/;

/** Attempts one nonce allows (each one that gets past the cheap checks takes one); then the nonce is burnt. */
export const MAX_ATTEMPTS_PER_NONCE = 5;
/** How long attempt counters are kept: longer than any nonce (`nonceTTL` is at most 3600 s) or interaction lives. */
export const ATTEMPT_TTL_SECONDS = 3600;

/**
 * Verifies a Sign-In with Ethereum (EIP-4361) message and its signature, cheapest checks first:
 * 1. size and line structure (outline.ts: linear, no parse), then domain, URI and Request ID read off those lines,
 *    and the signature's form (0x hex, a length a signature can have);
 * 2. the nonce: issued, unexpired, and bound to `input.nonceBinding` (one storage read);
 * 3. one of the nonce's MAX_ATTEMPTS_PER_NONCE attempt slots; when none is left the nonce is burnt;
 * 4. the full grammar parse (a `message-format` failure here uses an attempt, not the nonce);
 * 5. the nonce is consumed, so every later attempt with it fails whether or not this one succeeds;
 * 6. version, chain id, times, resources and scopes against `rules` and `input`;
 * 7. last the signature: EIP-191 for an externally owned account, else EIP-1271 through `deps.eip1271`.
 * Steps 1 and 2 consume nothing.
 */
export async function verifySiwe(input: SiweInput, rules: SiweRules, deps: SiweDeps): Promise<VerifiedSiwe> {
  const outline = outlineSiweMessage(input.message);
  const early = (rule: SiweRule, message: string) => new SiweVerificationError(rule, message, outline.address);
  checkDomain(outline, rules, early);
  checkUri(outline, rules, early);
  if (input.requestId !== undefined && outline.requestId !== undefined && outline.requestId !== input.requestId) {
    throw early('request-id', `Request ID ${outline.requestId} names another sign-in request than this one (${input.requestId}); sign the message this page builds`);
  }
  // A signature that cannot be one, or an address nobody signs for, is refused before the nonce is looked at: it uses
  // no attempt and no nonce.
  checkSignatureForm(input.signature, early);
  checkNotReserved(outline.address, early);

  const boundTo = await deps.nonces.boundTo(outline.nonce);
  if (boundTo === undefined) {
    throw early('nonce', `nonce ${outline.nonce} was not issued by this server or has expired; request a new nonce and sign again`);
  }
  if (boundTo !== input.nonceBinding) {
    throw early(
      'nonce-binding',
      `nonce ${outline.nonce} was issued for another ${boundTo.startsWith('client:') ? 'client' : 'sign-in request'}, not for ` +
        `${describeBinding(input.nonceBinding)}; a nonce is redeemed only where it was requested`,
    );
  }
  // Past the limit the nonce is spent: the counter outlives it (ATTEMPT_TTL_SECONDS ≥ any nonceTTL), so no later
  // attempt gets this far. It is not consumed here, which would take it from an attempt already past this check
  // whose signature is good (of 50 concurrent uses of one signed message, none then succeeded).
  if (!(await deps.nonces.takeAttempt(`nonce:${outline.nonce}`, MAX_ATTEMPTS_PER_NONCE, ATTEMPT_TTL_SECONDS))) {
    throw early('attempts', `nonce ${outline.nonce} has been tried ${MAX_ATTEMPTS_PER_NONCE} times and is now used up; request a new nonce and sign again`);
  }

  const msg = parseSiweMessage(input.message, outline);
  const fail = (rule: SiweRule, message: string) => new SiweVerificationError(rule, message, msg.address);

  if (!(await deps.nonces.consume(msg.nonce))) {
    throw fail('nonce', `nonce ${msg.nonce} was already used; request a new nonce and sign again`);
  }

  if (msg.version !== '1') throw fail('version', `Version is '${msg.version}'; expected '1'`);
  if (!rules.chainIds.includes(msg.chainId)) {
    throw fail('chain-id', `Chain ID ${msg.chainId} is not accepted; expected one of: ${list(rules.chainIds.map(String))}`);
  }
  checkTimes(msg, rules, deps.now?.() ?? new Date(), fail);
  const missing = (input.requiredResources ?? []).filter((r) => !msg.resources.includes(r));
  if (missing.length > 0) {
    throw fail(
      'resources',
      `the message's Resources must list ${list(missing)} exactly (signing it is the consent to that access); ` +
        `it lists ${msg.resources.length > 0 ? list(msg.resources) : 'none'}`,
    );
  }

  const scopes = signedScopes(msg.resources);
  const unsigned = (input.requiredScopes ?? []).filter((sc) => !scopes.includes(sc));
  if (unsigned.length > 0) {
    throw fail(
      'scope',
      `the message does not sign scope ${list(unsigned)}: each scope granted must be listed in Resources as ` +
        `urn:agentauth:scope:<scope>; it signs ${scopes.length > 0 ? list(scopes) : 'no scope'}`,
    );
  }

  const method = await checkSignature(input.message, input.signature, msg, deps.eip1271, fail);
  const address = checksumAddress(msg.address);
  const out: VerifiedSiwe = {
    address,
    chainId: msg.chainId,
    sub: `did:pkh:eip155:${msg.chainId}:${address}`,
    resources: [...msg.resources],
    scopes,
    nonce: msg.nonce,
    issuedAt: msg.issuedAt,
    method,
  };
  if (msg.statement !== undefined) out.statement = msg.statement;
  if (msg.expirationTime) out.expirationTime = msg.expirationTime;
  if (msg.requestId !== undefined) out.requestId = msg.requestId;
  return out;
}

type Fail = (rule: SiweRule, message: string) => SiweVerificationError;

function checkDomain(msg: SiweOutline, rules: SiweRules, fail: Fail): void {
  const allowed = rules.domains.map((d) => d.toLowerCase());
  if (!allowed.includes(msg.domain.toLowerCase())) {
    throw fail('domain', `domain '${msg.domain}' is not accepted by this server; expected one of: ${list(rules.domains)}`);
  }
  if (msg.scheme !== undefined) {
    const origin = originOf(`${msg.scheme}://${msg.domain}`);
    if (origin === undefined || !normalizedOrigins(rules).includes(origin)) {
      throw fail('domain', `'${msg.scheme}://${msg.domain}' (scheme and domain) is not an accepted origin; expected one of: ${list(rules.origins)}`);
    }
  }
}

/**
 * A URI with an authority as RFC 3986 writes one: `scheme://`, then a non-empty authority up to the first `/`, `?` or
 * `#`. A URL parser also reads `http:localhost:3400`, `http:///localhost:3400` and `http:\\localhost:3400` as
 * `http://localhost:3400/`, but to RFC 3986, whose URIs EIP-4361 signs, they have no authority (a path such as
 * "localhost:3400"): the origin checked must be the one the signed text names, however a parser repairs it.
 */
const URI_WITH_AUTHORITY = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#\\]+)(?:[/?#]|$)/;

function checkUri(msg: SiweOutline, rules: SiweRules, fail: Fail): void {
  const written = URI_WITH_AUTHORITY.exec(msg.uri);
  if (!written) {
    throw fail('uri', `URI '${msg.uri}' has no authority; write it as an absolute URL, scheme://host[:port] then the path, on one of: ${list(rules.origins)}`);
  }
  const origin = originOf(msg.uri);
  if (origin === undefined || originOf(`${written[1]}://${written[2]}`) !== origin || !normalizedOrigins(rules).includes(origin)) {
    throw fail('uri', `URI '${msg.uri}' is not on an accepted origin (got ${origin ?? 'no origin'}); expected a URL on one of: ${list(rules.origins)}`);
  }
  // The authority as written, not only as a URL parser repairs it: WHATWG URL reads 2130706433, 0x7f.0.0.1, 127.1 and
  // 127.0.0.1. (registered names under RFC 3986 §3.2.2) as 127.0.0.1, so the wallet would show one host and the server
  // check another. Written, it must be the origin's host itself (in any letter case, with or without the default port).
  if (!sameAuthority(written[1]!, written[2]!, origin)) {
    throw fail('uri', `URI '${msg.uri}' writes its host as '${written[2]}', not as ${new URL(origin).host} itself; write the origin exactly: ${list(rules.origins)}`);
  }
}

const DEFAULT_PORTS: Record<string, string> = { http: '80', https: '443' };

/** Whether `scheme://authority`, as written, names `origin` (a serialized origin) without a parser's repairs. */
function sameAuthority(scheme: string, authority: string, origin: string): boolean {
  const expected = new URL(origin).host;
  let host = authority.toLowerCase();
  const port = DEFAULT_PORTS[scheme.toLowerCase()];
  if (port !== undefined && host.endsWith(`:${port}`)) host = host.slice(0, -(port.length + 1));
  return host === expected;
}

function checkTimes(msg: SiweMessage, rules: SiweRules, now: Date, fail: Fail): void {
  const t = now.getTime();
  const skew = rules.clockSkewSeconds * 1000;
  const issued = msg.issuedAt.getTime();
  if (issued < t - rules.issuedAtWindowSeconds * 1000) {
    throw fail(
      'issued-at',
      `Issued At ${msg.issuedAt.toISOString()} is more than ${rules.issuedAtWindowSeconds} s before the server's time ` +
        `${now.toISOString()}; sign a freshly built message`,
    );
  }
  if (issued > t + skew) {
    throw fail(
      'issued-at',
      `Issued At ${msg.issuedAt.toISOString()} is more than ${rules.clockSkewSeconds} s after the server's time ` +
        `${now.toISOString()}; check the signing device's clock`,
    );
  }
  // A message whose validity ends before it begins is never valid, whatever the clock skew lets through.
  if (msg.expirationTime && msg.expirationTime.getTime() <= issued) {
    throw fail('expiration-time', `Expiration Time ${msg.expirationTime.toISOString()} is not after Issued At ${msg.issuedAt.toISOString()}`);
  }
  if (msg.expirationTime && msg.notBefore && msg.notBefore.getTime() >= msg.expirationTime.getTime()) {
    throw fail('not-before', `Not Before ${msg.notBefore.toISOString()} is not before Expiration Time ${msg.expirationTime.toISOString()}`);
  }
  if (msg.expirationTime && t >= msg.expirationTime.getTime() + skew) {
    throw fail('expiration-time', `the message expired at ${msg.expirationTime.toISOString()} (server time ${now.toISOString()})`);
  }
  if (msg.notBefore && t < msg.notBefore.getTime() - skew) {
    throw fail('not-before', `the message is not valid before ${msg.notBefore.toISOString()} (server time ${now.toISOString()})`);
  }
}

/**
 * Addresses 0x…0000 to 0x…ffff are the chain's own (the zero address, precompiles such as 0x…01 ecrecover, 0x…02
 * SHA-256, 0x…04 identity, 0x…100 P-256): code nobody controls, which must never be asked whether a signature is
 * someone's, and no wallet's key signs for them.
 */
function checkNotReserved(address: string | undefined, fail: Fail): void {
  if (address !== undefined && /^0x0{36}[0-9a-f]{4}$/i.test(address)) {
    throw fail('signature', `${address} is a reserved system address (the zero address or a precompile), not an account anyone signs for`);
  }
}

/** What every signature this server can check looks like: EIP-191 (65 bytes) and EIP-1271 (any bytes) alike. */
export const SIGNATURE_FORM = `0x-prefixed hex bytes (65 bytes for an account key's EIP-191 signature, at most ${MAX_SIGNATURE_BYTES} for a contract wallet's EIP-1271 signature)`;

/**
 * Why `signature` cannot be a signature, as its sender can fix it; undefined when it has the form of one (`0x`, then
 * one to MAX_SIGNATURE_BYTES whole bytes in hex digits of either case). Whose key made it is another matter (rule
 * `signature` in verifySiwe). Never quotes the signature.
 */
export function signatureFormProblem(signature: unknown): string | undefined {
  let why: string | undefined;
  if (typeof signature !== 'string') why = 'it is not a string';
  else if (HEX_BYTES.test(signature)) why = signature.length > 2 + 2 * MAX_SIGNATURE_BYTES ? `it is ${(signature.length - 2) / 2} bytes long` : undefined;
  else if (!signature.startsWith('0x')) why = 'it does not start with 0x';
  else if (signature.length === 2) why = 'it has no hex digits after 0x';
  else if (!/^0x[0-9a-fA-F]*$/.test(signature)) why = 'it holds a character that is not a hex digit (0-9, a-f, A-F) after 0x';
  else why = `it has an odd number of hex digits (${signature.length - 2}); each byte is two`;
  return why === undefined ? undefined : `the signature must be ${SIGNATURE_FORM}; ${why}`;
}

function checkSignatureForm(signature: unknown, fail: Fail): asserts signature is string {
  const problem = signatureFormProblem(signature);
  if (problem !== undefined) throw fail('signature', problem);
}

/** What a high-s account-key signature is told (checkSignature). */
export const HIGH_S =
  "the signature's s is in the upper half of the secp256k1 curve order (s > n/2), which the low-s rule (EIP-2) refuses as malleable; " +
  'normalise it (s = n - s, and flip v between 27 and 28) and send it again';

/** Whose the signature is (its form and the address were checked first, in verifySiwe's step 1). */
async function checkSignature(
  message: string,
  signature: string,
  msg: SiweMessage,
  eip1271: Eip1271Verifier | undefined,
  fail: Fail,
): Promise<'eip191' | 'eip1271'> {
  let recovered: string | undefined;
  /** Why a 65-byte signature is no account key's, when its `v` says so: told to the client if nothing else accepts it. */
  let notAnAccountKey = '';
  /** What was found about the signature as an account key's, for a refusal that comes from the contract-wallet step. */
  const found = () => (recovered ? `it was made by ${recovered}` : notAnAccountKey.slice(2, -1));
  // A high-s signature (EIP-2) recovers to no one this server accepts: it is told so, not that another key made it.
  const highS = hasHighS(signature);
  if (highS) {
    if (!eip1271) throw fail('signature', HIGH_S);
  } else if (EOA_SIGNATURE.test(signature)) {
    try {
      recovered = await recoverSigner(message, signature);
    } catch (err) {
      // Not a valid secp256k1 signature (bad v, r or s); may still be a contract wallet's.
      recovered = undefined;
      if (err instanceof NonCanonicalV) notAnAccountKey = ` (${err.message})`;
    }
  }
  if (recovered !== undefined && recovered.toLowerCase() === msg.address.toLowerCase()) return 'eip191';

  if (!eip1271) {
    throw fail(
      'signature',
      `the signature does not belong to ${msg.address}${recovered ? ` (it was made by ${recovered})` : notAnAccountKey}; ` +
        `if ${msg.address} is a contract wallet, verifying it (EIP-1271) needs a JSON-RPC endpoint configured for chain ${msg.chainId}`,
    );
  }
  let valid: boolean;
  try {
    valid = await eip1271(msg.chainId, checksumAddress(msg.address), toHex(eip191Digest(message)), signature);
  } catch (err) {
    if (err instanceof SiweVerificationError) {
      if (highS && err.rule === 'signature') throw fail('signature', HIGH_S);
      // A refusal of the signature itself (no endpoint for the chain, say) keeps what the account-key check found.
      const detail = err.rule === 'signature' && found() ? `; ${found()}` : '';
      throw new SiweVerificationError(err.rule, `${err.message}${detail}`, msg.address, { cause: err.cause });
    }
    throw new SiweVerificationError(
      'contract-wallet',
      `could not ask the contract at ${msg.address} on chain ${msg.chainId} to verify the signature (EIP-1271)`,
      msg.address,
      { cause: err },
    );
  }
  if (!valid) {
    if (highS) throw fail('signature', `${HIGH_S}; the contract wallet at ${msg.address} on chain ${msg.chainId} did not accept it either (EIP-1271)`);
    throw fail(
      'signature',
      `the signature is not valid for ${msg.address}: it is not that account's key signature` +
        `${recovered ? ` (it was made by ${recovered})` : notAnAccountKey}, and the contract wallet at that address on chain ` +
        `${msg.chainId} did not accept it (EIP-1271)`,
    );
  }
  return 'eip1271';
}

function originOf(url: string): string | undefined {
  try {
    const origin = new URL(url).origin;
    return origin === 'null' ? undefined : origin;
  } catch {
    return undefined;
  }
}

function normalizedOrigins(rules: SiweRules): string[] {
  return rules.origins.map((o) => originOf(o) ?? o);
}

function list(values: readonly string[]): string {
  return values.length > 0 ? values.join(', ') : '(none configured)';
}
