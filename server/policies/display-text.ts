/**
 * Client metadata that people read (RFC 7591 §2: `client_name`, and the `software_id`/`software_version` shown to
 * operators), on the consent page, in the sign-in message a wallet shows (EIP-4361 statement), in `clients list`.
 *
 * Refused: control characters (C0, DEL, C1: `\u0000`, a newline that would start a line of its own in the wallet's
 * message), line and paragraph separators, and the bidirectional formatting characters that make text read other
 * than it is stored (U+202E "RIGHT-TO-LEFT OVERRIDE" turns "Evil Corp\u202E gnikcaB" into a name that reads as
 * another's; CVE-2021-42574 class). Also a string with a lone surrogate, which is not Unicode text at all and which
 * the stores would silently rewrite (BSON and SQLite keep UTF-8).
 */
/** With the `u` flag a surrogate pair is one code point, so this matches lone surrogates only. */
const LONE_SURROGATE = /\p{Cs}/u;
const UNDISPLAYABLE = /[\p{Cc}\p{Zl}\p{Zp}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/u;
/**
 * Other format characters, which show nothing (U+200B ZERO WIDTH SPACE, U+2060 WORD JOINER, U+FEFF, U+00AD SOFT
 * HYPHEN, ...) and would let two names that read the same differ. Kept: U+200C/U+200D (ZWNJ, ZWJ), which some scripts
 * and emoji sequences need, and the tag characters U+E0020-U+E007F of emoji flag sequences.
 */
const INVISIBLE = /(?![\u200C\u200D\u{E0020}-\u{E007F}])\p{Cf}/u;
/** Blank: nothing but white space and characters that show nothing (U+3164 HANGUL FILLER, U+115F, ...). */
const BLANK = /^[\s\p{Default_Ignorable_Code_Point}]*$/u;

export const MAX_DISPLAY_TEXT = 200;

/** Why `value` cannot be shown to a person, or undefined when it can. */
export function displayTextProblem(value: unknown, maxLength = MAX_DISPLAY_TEXT): string | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength) return `must be a string of 1 to ${maxLength} characters`;
  if (LONE_SURROGATE.test(value)) return 'must be Unicode text (it contains a lone surrogate)';
  const bad = UNDISPLAYABLE.exec(value)?.[0];
  if (bad !== undefined) return `must not contain control, line-separator or bidirectional-formatting characters (found ${codePoint(bad)})`;
  const invisible = INVISIBLE.exec(value)?.[0];
  if (invisible !== undefined) return `must not contain invisible format characters (found ${codePoint(invisible)})`;
  if (BLANK.test(value)) return 'must not be blank';
  return undefined;
}

const codePoint = (c: string) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

/**
 * The name to show a person for a client: its `client_name` when registration would accept it today, else its id.
 * Clients stored before this rule (or written to the store by other means) never put a control or bidirectional
 * character on a page or in a wallet's sign-in message.
 */
export function shownClientName(clientName: unknown, clientId: string): string {
  return typeof clientName === 'string' && displayTextProblem(clientName) === undefined ? clientName : clientId;
}
