/**
 * Client metadata that people read (RFC 7591 §2: `client_name`, and the `software_id`/`software_version` shown to
 * operators), on the consent page, in the sign-in message a wallet shows (EIP-4361 statement), in `clients list`.
 * Any script is welcome; what is refused is text that does not read as it is stored:
 *   - control characters (C0, DEL, C1: `\u0000`, a newline that would start a line of its own in the wallet's
 *     message), line and paragraph separators;
 *   - the bidirectional formatting characters that make text read other than it is stored (U+202E "RIGHT-TO-LEFT
 *     OVERRIDE" turns "Evil Corp\u202E gnikcaB" into a name that reads as another's; CVE-2021-42574 class);
 *   - characters that show nothing (format and default-ignorable code points: U+200B, U+2060, U+FEFF, U+00AD, U+3164
 *     HANGUL FILLER, tag characters that spell hidden ASCII, ...), which would let two names that read the same differ
 *     or carry text a person cannot see, except those scripts and emoji need: ZWNJ and ZWJ, variation selectors, and
 *     tag characters inside an emoji flag sequence;
 *   - unassigned, private-use and noncharacter code points, U+FFFD (what a byte sequence that was not UTF-8 became),
 *     lone surrogates (not Unicode text at all; the stores would silently rewrite them);
 *   - long runs of combining marks (text that overflows the lines around it), white space at either end, and text
 *     that shows nothing at all.
 * Length is counted in user-perceived characters (grapheme clusters), so 200 means 200 in any script.
 */
const LONE_SURROGATE = /\p{Cs}/u;
const UNDISPLAYABLE = /[\p{Cc}\p{Zl}\p{Zp}\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/u;
/** An emoji tag sequence (a subdivision flag such as England's): U+1F3F4, tag characters, CANCEL TAG. */
const EMOJI_TAG_SEQUENCE = /\u{1F3F4}[\u{E0020}-\u{E007E}]+\u{E007F}/gu;
/** Invisible: format or default-ignorable, except ZWNJ, ZWJ and the variation selectors. */
const INVISIBLE = /(?![\u200C\u200D\uFE00-\uFE0F\u{E0100}-\u{E01EF}])[\p{Cf}\p{Default_Ignorable_Code_Point}]/u;
const UNASSIGNED_OR_PRIVATE = /[\p{Cn}\p{Co}]/u;
const COMBINING_RUN = /\p{M}{6,}/u;
/** Blank: nothing but white space, characters that show nothing, and U+2800 BRAILLE PATTERN BLANK. */
const BLANK = /^[\s\p{Default_Ignorable_Code_Point}\u2800]*$/u;

export const MAX_DISPLAY_TEXT = 200;
/** UTF-16 code units per allowed character, at most (a bound checked before the text is segmented). */
const UNITS_PER_CHARACTER = 5;
const graphemes = new Intl.Segmenter('und', { granularity: 'grapheme' });

/** Why `value` cannot be shown to a person, or undefined when it can. `maxLength` counts grapheme clusters. */
export function displayTextProblem(value: unknown, maxLength = MAX_DISPLAY_TEXT): string | undefined {
  const length = `must be a string of 1 to ${maxLength} characters`;
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength * UNITS_PER_CHARACTER) return length;
  if (LONE_SURROGATE.test(value)) return 'must be Unicode text (it contains a lone surrogate)';
  const bad = UNDISPLAYABLE.exec(value)?.[0];
  if (bad !== undefined) return `must not contain control, line-separator or bidirectional-formatting characters (found ${codePoint(bad)})`;
  const invisible = INVISIBLE.exec(value.replace(EMOJI_TAG_SEQUENCE, ''))?.[0];
  if (invisible !== undefined) return `must not contain invisible characters (found ${codePoint(invisible)})`;
  if (value.includes('\uFFFD')) return 'must not contain U+FFFD (a byte sequence that was not valid UTF-8 becomes it): send UTF-8';
  const odd = UNASSIGNED_OR_PRIVATE.exec(value)?.[0];
  if (odd !== undefined) return `must not contain unassigned, private-use or noncharacter code points (found ${codePoint(odd)})`;
  if (COMBINING_RUN.test(value)) return 'must not stack more than 5 combining marks on one character';
  if (BLANK.test(value)) return 'must not be blank';
  if (/^\s|\s$/u.test(value)) return 'must not begin or end with white space';
  let count = 0;
  for (const _ of graphemes.segment(value)) if (++count > maxLength) return length;
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
