import { SiweVerificationError } from './errors.js';

/**
 * Longest sign-in message accepted, in characters (the grammar admits only ASCII, so also in bytes). A realistic
 * message at its largest (a scheme and a long host, a 200-character statement such as the login page writes, a
 * 300-character URI, all optional fields, 8 resource servers and 12 signed scopes as resources) is about 2 KiB; see
 * test/unit/siwe-limits.test.ts. The full EIP-4361 parse costs several microseconds per character of URI-like text,
 * so the cap also bounds what one attempt can cost: measured worst inputs at the cap parse in about 25 ms.
 */
export const MAX_MESSAGE_LENGTH = 4096;
/** At most this many `- <uri>` lines under `Resources:` (resource servers plus `urn:agentauth:scope:` entries). */
export const MAX_RESOURCES = 32;
/** Longest `[scheme://]domain` on the first line: an RFC 1035 host name (253) with a port. */
export const MAX_DOMAIN_LENGTH = 260;
/** Longest nonce: agentauth issues 24 characters; EIP-4361 asks for at least 8 alphanumerics. */
export const MAX_NONCE_LENGTH = 64;

const PREAMBLE = ' wants you to sign in with your Ethereum account:';
const PRINTABLE_ASCII_LINES = /^[\x20-\x7e\n]*$/;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const NONCE = /^[A-Za-z0-9]+$/;
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
const NO_SPACE = /^[^ ]+$/;

/** The fields the cheap checks need, read off the message's lines without the grammar parse. */
export interface SiweOutline {
  scheme?: string;
  domain: string;
  address: string;
  uri: string;
  nonce: string;
  requestId?: string;
  resources: string[];
}

/**
 * Checks a sign-in message's size and line structure and reads the fields that the cheap checks need. Linear in the
 * input and free of backtracking: one character-class test, a split on LF, and fixed prefixes per line in the order
 * EIP-4361 prescribes. It refuses (`message-format`) what the grammar would refuse on these grounds, so the expensive
 * grammar parse only ever sees a bounded, well-shaped message; it does not replace that parse.
 */
export function outlineSiweMessage(message: unknown): SiweOutline {
  if (typeof message !== 'string') throw formatError(`the message must be a string, got ${typeof message}`);
  if (message.length > MAX_MESSAGE_LENGTH) {
    throw formatError(`the message is ${message.length} characters long; at most ${MAX_MESSAGE_LENGTH} are accepted`);
  }
  if (!PRINTABLE_ASCII_LINES.test(message)) {
    throw formatError('the message may contain only printable ASCII characters and LF line ends (no CR, tabs or non-ASCII text)');
  }
  if (message.endsWith('\n')) {
    throw formatError('the message ends with a newline: an EIP-4361 message ends with its last line; remove the trailing newline');
  }
  const lines = message.split('\n');
  let i = 0;
  const line = (): string | undefined => lines[i];
  const fail = (expected: string): SiweVerificationError => {
    const got = line();
    return formatError(`line ${i + 1}: expected ${expected}, got ${got === undefined ? 'the end of the message' : `"${clip(got)}"`}`);
  };

  const first = line() ?? '';
  if (!first.endsWith(PREAMBLE)) throw fail(`"<domain>${PREAMBLE}"`);
  let domain = first.slice(0, -PREAMBLE.length);
  let scheme: string | undefined;
  const sep = domain.indexOf('://');
  if (sep >= 0) {
    scheme = domain.slice(0, sep);
    domain = domain.slice(sep + 3);
    if (!SCHEME.test(scheme)) throw fail('a URI scheme before "://"');
  }
  if (domain.length === 0 || domain.length > MAX_DOMAIN_LENGTH || !NO_SPACE.test(domain)) {
    throw fail(`a domain of 1 to ${MAX_DOMAIN_LENGTH} characters without spaces`);
  }
  i += 1;
  const address = line() ?? '';
  if (!ADDRESS.test(address)) throw fail('an 0x-prefixed 20-byte hex address');
  i += 1;
  if (line() !== '') throw fail('an empty line after the address');
  i += 1;
  if (line() !== '') {
    // The statement, one line, of the characters the grammar's `statement` rule allows (siwe-parser's ABNF: letters,
    // digits, space and !#$&'()*+,-./:;=?@[]_~): named here, where the parser would only say the message does not match.
    const refused = STATEMENT_REFUSED.exec(line()!);
    if (refused) {
      throw formatError(`line ${i + 1}: the statement holds ${JSON.stringify(refused[0])}, which EIP-4361 does not allow in a statement (only letters, digits, spaces and ! # $ & ' ( ) * + , - . / : ; = ? @ [ ] _ ~)`);
    }
    i += 1;
    if (line() !== '') throw fail('an empty line after the statement (the statement is one line)');
  }
  i += 1;

  const field = (tag: string, optional = false): string | undefined => {
    const l = line();
    if (l === undefined || !l.startsWith(tag)) {
      if (optional) return undefined;
      throw fail(`"${tag}..."`);
    }
    i += 1;
    return l.slice(tag.length);
  };
  const uri = field('URI: ')!;
  if (!NO_SPACE.test(uri)) throw formatError(`line ${i}: the URI must be non-empty and contain no spaces`);
  field('Version: ');
  field('Chain ID: ');
  const nonce = field('Nonce: ')!;
  if (!NONCE.test(nonce) || nonce.length < 8 || nonce.length > MAX_NONCE_LENGTH) {
    throw formatError(`line ${i}: the nonce must be 8 to ${MAX_NONCE_LENGTH} letters and digits`);
  }
  field('Issued At: ');
  field('Expiration Time: ', true);
  field('Not Before: ', true);
  const requestId = field('Request ID: ', true);
  const resources: string[] = [];
  if (line() === 'Resources:') {
    i += 1;
    while (line() !== undefined) {
      const r = field('- ')!;
      resources.push(r);
      if (resources.length > MAX_RESOURCES) throw formatError(`line ${i}: at most ${MAX_RESOURCES} resources are accepted`);
    }
  }
  if (line() !== undefined) throw fail('"Expiration Time: ", "Not Before: ", "Request ID: " or "Resources:" (in that order), or the end of the message');

  const out: SiweOutline = { domain, address, uri, nonce, resources };
  if (scheme !== undefined) out.scheme = scheme;
  if (requestId !== undefined) out.requestId = requestId;
  return out;
}

/** A character the EIP-4361 grammar does not allow in a statement (the printable ASCII ones outside its `statement` rule). */
const STATEMENT_REFUSED = /[^A-Za-z0-9 !#$&'()*+,\-./:;=?@[\]_~]/;

function formatError(message: string): SiweVerificationError {
  return new SiweVerificationError('message-format', message);
}

const clip = (s: string): string => (s.length > 80 ? `${s.slice(0, 80)}…` : s);
