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

export const MAX_DISPLAY_TEXT = 200;

/** Why `value` cannot be shown to a person, or undefined when it can. */
export function displayTextProblem(value: unknown, maxLength = MAX_DISPLAY_TEXT): string | undefined {
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength) return `must be a string of 1 to ${maxLength} characters`;
  if (LONE_SURROGATE.test(value)) return 'must be Unicode text (it contains a lone surrogate)';
  const bad = UNDISPLAYABLE.exec(value)?.[0];
  if (bad !== undefined) {
    return `must not contain control, line-separator or bidirectional-formatting characters (found U+${bad.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')})`;
  }
  if (value.trim().length === 0) return 'must not be blank';
  return undefined;
}
