import type { Provider } from 'oidc-provider';
import { errors } from 'oidc-provider';

/**
 * A form body (`application/x-www-form-urlencoded`) must be UTF-8, before and after percent-decoding (RFC 6749
 * Appendix B). The parsers this server's endpoints use, oidc-provider's (Node's querystring: token, introspection,
 * revocation, PAR, logout) and URLSearchParams (the login and consent pages, /wallet/nonce), read bytes that are not
 * UTF-8, raw or percent-encoded, as U+FFFD, the replacement character: `%FF`, `%FE` and a raw 0xFF byte were one
 * value, and a parameter could be spelled in more ways than one without the server seeing a difference. A value
 * holding U+FFFD is refused with 400 invalid_request instead: whatever was sent, it is not the text the client meant
 * (RFC 6749's parameters are ASCII; a client that sends anything else must send UTF-8). U+FFFD itself, sent as UTF-8,
 * is refused with them: the parsed value cannot tell it from a replacement, and no parameter needs it (client names
 * refuse it too, server/policies/client-text.ts).
 *
 * The check reads the values the parser produced, as the endpoint receives them: for oidc-provider, the body it
 * parsed, where it stores it (`ctx.oidc.body`, an accessor on its request context's prototype), so no spelling of a
 * route or of the media type passes it by. A check of the raw bytes as they stream in was built first and measured
 * at 40-80 µs of CPU per request (an async generator around the request stream); this costs a scan of the values.
 */
export class NotUtf8FormBody extends errors.InvalidRequest {
  constructor() {
    super(NOT_UTF8);
    this.error_description = NOT_UTF8;
  }
}

export const NOT_UTF8 =
  'the request body is not valid UTF-8: a value decodes to U+FFFD, which replaces bytes that are not UTF-8 (send UTF-8, percent-encoding the bytes of each character: U+00E9 is %C3%A9)';

const REPLACEMENT = '\uFFFD';

/** Whether a parsed value (a string, or the array of a repeated parameter) holds U+FFFD. */
const replaced = (value: unknown): boolean =>
  typeof value === 'string' ? value.includes(REPLACEMENT) : Array.isArray(value) && value.some((v) => typeof v === 'string' && v.includes(REPLACEMENT));

/** Refuses a parsed form (its names and values) holding U+FFFD, with NotUtf8FormBody. */
export function refuseReplacedText(entries: Iterable<[string, unknown]>): void {
  if (holdsReplacement(entries)) throw new NotUtf8FormBody();
}

function holdsReplacement(entries: Iterable<[string, unknown]>): boolean {
  for (const [name, value] of entries) if (name.includes(REPLACEMENT) || replaced(value)) return true;
  return false;
}

const BODY = Symbol('agentauth form body');

/**
 * Checks every body oidc-provider parses as it stores it: a form holding U+FFFD fails the parse (its body parser
 * catches the error and answers "failed to parse the request body" with it as the cause, which
 * server/http/body-parse-errors.ts turns into this description). JSON bodies (registration) are checked by their own
 * parser (server/request-body.ts). Call once per provider, before it serves.
 */
export function refuseReplacedFormValues(provider: Provider): void {
  const proto = (provider as unknown as { OIDCContext: { prototype: object } }).OIDCContext.prototype;
  Object.defineProperty(proto, 'body', {
    configurable: true,
    get(this: Record<symbol, unknown>) {
      return this[BODY];
    },
    set(this: Record<symbol, unknown> & { ctx: { is(type: string): string | false | null } }, value: unknown) {
      // The media type is asked only of a body holding U+FFFD (type-is parses the header): not on every request.
      if (value && typeof value === 'object' && !Array.isArray(value) && holdsReplacement(Object.entries(value)) && this.ctx.is('application/x-www-form-urlencoded')) {
        throw new NotUtf8FormBody();
      }
      this[BODY] = value;
    },
  });
}
