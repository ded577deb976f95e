import { readFileSync } from 'node:fs';

import { parse as parseJsonc, printParseErrorCode } from 'jsonc-parser';
import type { ParseError } from 'jsonc-parser';

/** What jsonc-parser's error codes mean, in words a person editing the file can act on. */
const JSON_ERRORS: Partial<Record<string, string>> = {
  InvalidSymbol: 'a value JSON does not have: strings take double quotes; true, false, null and numbers are written bare',
  InvalidNumberFormat: 'a number JSON does not accept',
  PropertyNameExpected: 'a member name in double quotes expected; JSON allows no comma after the last member',
  ValueExpected: 'a value expected; JSON allows no comma after the last element, and a file holds one value',
  ColonExpected: "':' expected",
  CommaExpected: "',' expected",
  CloseBraceExpected: "'}' expected",
  CloseBracketExpected: "']' expected",
  EndOfFileExpected: 'text after the end of the JSON document',
  InvalidCommentToken: 'a comment (JSON has none)',
  UnexpectedEndOfComment: 'a comment (JSON has none)',
  UnexpectedEndOfString: 'a string not closed on its line (or a control character in it)',
  UnexpectedEndOfNumber: 'a number cut short',
  InvalidUnicode: 'a malformed \\u escape',
  InvalidEscapeCharacter: 'a backslash escape JSON does not have',
  InvalidCharacter: 'a control character inside a string',
};

/**
 * Where the first JSON error in `text` is, as ` at line L, column C (what is wrong)`: never a piece of the text.
 * JSON.parse's own message quotes up to ten characters either side of the error, and the text may be a secret (the
 * configuration file holds client secrets, configuration.md: secrets are never echoed in these messages; `verify
 * --archive` pointed at a KEK file printed its first ten characters). jsonc-parser finds the offset (strict: no
 * comments, no trailing commas). Empty when it finds no error (JSON.parse failed on something else).
 */
export function describeJsonError(text: string): string {
  const errors: ParseError[] = [];
  parseJsonc(text, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false });
  const first = errors[0];
  if (!first) return '';
  const before = text.slice(0, first.offset);
  const line = before.split('\n').length;
  const column = first.offset - (before.lastIndexOf('\n') + 1) + 1;
  const what = JSON_ERRORS[printParseErrorCode(first.error)];
  return ` at line ${line}, column ${column}${what ? ` (${what})` : ''}`;
}

/**
 * JSON text as a person's file holds it: a leading byte order mark (some Windows editors write one; RFC 8259 §8.1 lets
 * a parser ignore it) dropped, then parsed. On failure `error` says where, as describeJsonError does, never the text.
 */
export function parseJsonFileText(text: string): { value: unknown } | { error: string } {
  const json = text.startsWith('\uFEFF') ? text.slice(1) : text;
  try {
    return { value: JSON.parse(json) as unknown };
  } catch {
    return { error: `is not valid JSON${describeJsonError(json)}` };
  }
}

/**
 * A person's JSON file (the configuration file, a key archive) read and parsed, or why not, in one phrase that names
 * the file and never quotes it: `cannot read FILE (ENOENT)`, `FILE is not valid JSON at line L, column C (...)`.
 */
export function readJsonFile(path: string): { value: unknown } | { error: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return { error: `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  const parsed = parseJsonFileText(text);
  return 'error' in parsed ? { error: `${path} ${parsed.error}` } : parsed;
}
