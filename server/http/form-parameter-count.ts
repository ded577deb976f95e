import { syncBuiltinESMExports } from 'node:module';
import querystring from 'node:querystring';

/**
 * Node's querystring.parse reads at most 1,000 parameters unless told otherwise (its `maxKeys`), and drops the rest
 * without a word. oidc-provider parses every form body with it (lib/shared/selective_body.js, no options), so a body
 * of 1,000 filler parameters (or 1,000 bare `&`: empty pairs count) followed by `scope=write`, a second
 * `client_secret` or the `grant_type` itself was read without them: the rule that a parameter must not be sent twice
 * (RFC 6749 §3.1) and the rule of one client authentication method (§2.3) were walked around, and a parameter that
 * was sent was reported missing.
 */
export const MAX_FORM_PARAMETERS = 1000;

/** A form body with more parameters than querystring.parse reads (its cause, for server/http/body-parse-errors.ts). */
export class TooManyFormParameters extends Error {
  constructor() {
    super(`the request body has more than ${MAX_FORM_PARAMETERS} parameters`);
  }
}

/** Whether `text` holds more than MAX_FORM_PARAMETERS `&`-separated pairs (empty ones included, as querystring counts). */
export function exceedsParameterCount(text: string): boolean {
  if (text.length < MAX_FORM_PARAMETERS) return false;
  let at = -1;
  for (let separators = 0; separators < MAX_FORM_PARAMETERS; separators += 1) {
    at = text.indexOf('&', at + 1);
    if (at === -1) return false;
  }
  return true;
}

let installed = false;

/**
 * Makes querystring.parse, called as oidc-provider calls it (a string and nothing else), throw TooManyFormParameters
 * where it would have dropped parameters. It is replaced on the module itself, and syncBuiltinESMExports carries the
 * replacement into every `import * as querystring from 'node:querystring'` (oidc-provider's). Koa's query strings are
 * read with URLSearchParams, which drops nothing. Idempotent.
 */
export function refuseTruncatedForms(): void {
  if (installed) return;
  installed = true;
  const original = querystring.parse;
  const parse = (str: string, sep?: string, eq?: string, options?: querystring.ParseOptions): querystring.ParsedUrlQuery => {
    if (sep === undefined && eq === undefined && options === undefined && typeof str === 'string' && exceedsParameterCount(str)) throw new TooManyFormParameters();
    return original(str, sep, eq, options);
  };
  querystring.parse = parse as typeof querystring.parse;
  syncBuiltinESMExports();
}
