import type Koa from 'koa';

/**
 * RFC 6749 §5.2 (and RFC 6750 §3, RFC 7591 §3.2.2): `error_description` is printable ASCII without `"` and `\`
 * (%x20-21 / %x23-5B / %x5D-7E). Descriptions that echo what a client sent (a resource, a scope, a path) or that
 * oidc-provider wrote (some quote a parameter's name) can hold anything: a tab, a line feed, an `ü`, quotes. A client
 * library that parses the `WWW-Authenticate` challenge, or holds the description to the grammar, then reads it
 * wrongly or not at all.
 */
const RFC6749_DESCRIPTION = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
/** Longer than any description agentauth or oidc-provider writes (about 300 characters) with a bounded echo in it. */
export const MAX_DESCRIPTION_LENGTH = 600;

/**
 * The description in RFC 6749's characters: `"` becomes `'`, and every other character outside them is written as
 * the percent-escapes of its UTF-8 bytes (a tab `%09`, `\` `%5C`, `ü` `%C3%BC`), as a URL would carry it; cut to
 * MAX_DESCRIPTION_LENGTH, ending in `...` where it was cut.
 */
export function rfc6749Description(text: string): string {
  let out = RFC6749_DESCRIPTION.test(text)
    ? text
    : Array.from(text, (ch) => {
      if (ch === '"') return "'";
      if (RFC6749_DESCRIPTION.test(ch)) return ch;
      return Array.from(Buffer.from(ch, 'utf8'), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join('');
    }).join('');
  if (out.length > MAX_DESCRIPTION_LENGTH) out = `${out.slice(0, MAX_DESCRIPTION_LENGTH - 3)}...`;
  return out;
}

/** The `error_description="..."` parameter as oidc-provider writes it into a challenge (helpers/append_www_authenticate.js). */
export const challengeParameter = (description: string): string => `error_description="${description.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/**
 * Replaces a JSON error body's `error_description` with `description` (in RFC 6749's characters: rfc6749Description),
 * and the same description in the response's `WWW-Authenticate` challenges (written before the body was), so that
 * the two never disagree. A description that quotes a request (jose's message names a DPoP proof's `crit` member)
 * could otherwise hold a character Node refuses in a header, and setting the challenge threw: a 500.
 */
export function replaceDescription(ctx: Koa.Context, body: Record<string, unknown>, text: string): void {
  const description = rfc6749Description(text);
  const challenge = ctx.response.headers['www-authenticate'];
  const from = typeof body.error_description === 'string' ? challengeParameter(body.error_description) : undefined;
  // A function as the replacement: a string one would expand `$&`, `$'` and `` $` `` found in the description.
  const to = () => challengeParameter(description);
  if (from !== undefined && typeof challenge === 'string') ctx.set('WWW-Authenticate', challenge.replace(from, to));
  if (from !== undefined && Array.isArray(challenge)) ctx.set('WWW-Authenticate', challenge.map((c) => c.replace(from, to)));
  body.error_description = description;
}

/**
 * Called on every answered error (status 400 and above) by the security-headers layer (server/http/security-headers.ts),
 * which wraps every other: a JSON error body whose description is outside RFC 6749's characters, or too long, is
 * rewritten by rfc6749Description, challenge included.
 */
export function keepDescriptionInRfc6749Characters(ctx: Koa.Context): void {
  const { body } = ctx;
  if (body === null || typeof body !== 'object' || Buffer.isBuffer(body) || typeof (body as { pipe?: unknown }).pipe === 'function') return;
  const description = (body as Record<string, unknown>).error_description;
  if (typeof description !== 'string') return;
  if (description.length <= MAX_DESCRIPTION_LENGTH && RFC6749_DESCRIPTION.test(description)) return;
  replaceDescription(ctx, body as Record<string, unknown>, description);
}
