import { ParsedMessage } from '@spruceid/siwe-parser';

import { SiweVerificationError } from './errors.js';
import { MAX_MESSAGE_LENGTH, outlineSiweMessage } from './outline.js';
import type { SiweOutline } from './outline.js';

export { MAX_MESSAGE_LENGTH };

/** The fields of an EIP-4361 message, for building one. Dates are written as RFC 3339 in UTC. */
export interface SiweMessageFields {
  /** Optional URI scheme of the requesting origin (`https://example.com wants you to ...`). */
  scheme?: string;
  /** RFC 3986 authority (host[:port]) of the site asking for the sign-in. */
  domain: string;
  /** EIP-55 checksummed address. A lowercase address is not a valid EIP-4361 message. */
  address: string;
  /** One line of text; EIP-4361 excludes line breaks and a few characters (`"`, `%`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`). */
  statement?: string;
  uri: string;
  version?: '1';
  chainId: number;
  nonce: string;
  issuedAt: Date;
  expirationTime?: Date;
  notBefore?: Date;
  requestId?: string;
  resources?: string[];
}

/** An EIP-4361 message as parsed: the fields of the text, with the times as dates. */
export interface SiweMessage {
  scheme?: string;
  domain: string;
  address: string;
  statement?: string;
  uri: string;
  version: string;
  chainId: number;
  nonce: string;
  issuedAt: Date;
  expirationTime?: Date;
  notBefore?: Date;
  requestId?: string;
  resources: string[];
}

/** The exact EIP-4361 text for these fields. Throws a TypeError when they do not form a valid message. */
export function buildSiweMessage(fields: SiweMessageFields): string {
  const prefix = fields.scheme === undefined ? '' : `${fields.scheme}://`;
  const lines = [
    `${prefix}${fields.domain} wants you to sign in with your Ethereum account:`,
    fields.address,
    '',
    ...(fields.statement === undefined ? [] : [fields.statement]),
    '',
    `URI: ${fields.uri}`,
    `Version: ${fields.version ?? '1'}`,
    `Chain ID: ${fields.chainId}`,
    `Nonce: ${fields.nonce}`,
    `Issued At: ${fields.issuedAt.toISOString()}`,
  ];
  if (fields.expirationTime) lines.push(`Expiration Time: ${fields.expirationTime.toISOString()}`);
  if (fields.notBefore) lines.push(`Not Before: ${fields.notBefore.toISOString()}`);
  if (fields.requestId !== undefined) lines.push(`Request ID: ${fields.requestId}`);
  if (fields.resources !== undefined) lines.push('Resources:', ...fields.resources.map((r) => `- ${r}`));
  const message = lines.join('\n');
  try {
    parseSiweMessage(message);
  } catch (err) {
    throw new TypeError(`buildSiweMessage: ${(err as Error).message}`);
  }
  return message;
}

/**
 * Parses EIP-4361 text with @spruceid/siwe-parser (an ABNF parser of the EIP's grammar, including the EIP-55 address
 * checksum and calendar-valid dates), after the size and line-structure checks of outline.ts, which it never skips:
 * no text over the cap or out of shape reaches the parser. Anything refused, or that cannot be represented (a leap
 * second, a chain id beyond 2^53), is a `message-format` SiweVerificationError. `outline` is the message's outline
 * when the caller has already taken it.
 */
export function parseSiweMessage(message: unknown, outline?: SiweOutline): SiweMessage {
  const lines = outline ?? outlineSiweMessage(message);
  const text = message as string;
  let parsed: ParsedMessage;
  try {
    parsed = new ParsedMessage(text);
  } catch (err) {
    // The address line as written (the outline's): it passed the line check only, so it may not be checksummed.
    throw formatError(`the message is not a valid EIP-4361 message: ${describeParserError(err)}`, lines.address);
  }
  // The outline read these fields off the same lines; the cheap checks relied on them, so they must agree.
  if (parsed.domain !== lines.domain || parsed.uri !== lines.uri || parsed.nonce !== lines.nonce || parsed.scheme !== lines.scheme ||
    parsed.requestId !== lines.requestId) {
    throw formatError('the message parses to other domain, URI, nonce or Request ID values than its lines show', parsed.address);
  }
  if (!Number.isSafeInteger(parsed.chainId)) {
    // As signed: the parser's number is already rounded (9007199254740993 reads as ...992).
    const written = /^Chain ID: (\S{1,40})$/m.exec(text)?.[1] ?? String(parsed.chainId);
    throw formatError(`Chain ID ${written} is not a usable chain id (at most ${Number.MAX_SAFE_INTEGER})`, parsed.address);
  }
  const issuedAt = toDate('Issued At', parsed.issuedAt, parsed.address);
  const out: SiweMessage = {
    domain: parsed.domain,
    address: parsed.address,
    uri: parsed.uri,
    version: parsed.version,
    chainId: parsed.chainId,
    nonce: parsed.nonce,
    issuedAt,
    resources: parsed.resources ?? [],
  };
  if (parsed.scheme !== undefined) out.scheme = parsed.scheme;
  if (parsed.statement) out.statement = parsed.statement;
  if (parsed.expirationTime !== undefined) out.expirationTime = toDate('Expiration Time', parsed.expirationTime, parsed.address);
  if (parsed.notBefore !== undefined) out.notBefore = toDate('Not Before', parsed.notBefore, parsed.address);
  if (parsed.requestId !== undefined) out.requestId = parsed.requestId;
  return out;
}

function formatError(message: string, address?: string): SiweVerificationError {
  return new SiweVerificationError('message-format', message, address);
}

function toDate(field: string, value: string, address: string): Date {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw formatError(`${field} "${value}" is not a representable date-time`, address);
  return date;
}

/**
 * The parser throws one Error whose message lists its findings line by line ("line 2: invalid EIP-55 address - ..."),
 * followed by a JSON dump of the parser state; keep the findings.
 */
function describeParserError(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const findings = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('Invalid message: {'));
  const specific = findings.filter((l) => !l.startsWith('invalid message: max line number'));
  if (specific.length > 0) return findings.join('; ');
  const where = findings.length > 0 ? ` (${findings.join('; ')})` : '';
  return `it does not match the EIP-4361 grammar${where}; check that lines end in LF (not CRLF), the blank lines around the statement, and that there is no trailing newline`;
}
