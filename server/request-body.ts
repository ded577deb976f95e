import type Koa from 'koa';
import { parse as parseJson, traverse } from '@humanwhocodes/momoa';
import type { ObjectNode } from '@humanwhocodes/momoa';
import { errors } from 'oidc-provider';

import { jsonDepthExceeds, MAX_METADATA_DEPTH } from './policies/json-depth.js';

/** RFC 9110 §15.5.14: the request content is larger than the server is willing to process. */
export const CONTENT_TOO_LARGE = 413;

const tooLarge = (limit: number) =>
  new errors.InvalidRequest(`the request body exceeds the ${limit} bytes this endpoint accepts`, CONTENT_TOO_LARGE);

/**
 * Reads a request body as text, refusing more than `limit` bytes with 413 invalid_request: at once when the declared
 * Content-Length says so, else as soon as the count passes the limit. A refused body is left unread, not destroyed,
 * so the connection can still carry the answer (see server/http/body-limit.ts for what happens to the rest).
 */
export async function readBodyText(ctx: Koa.Context, limit: number): Promise<string> {
  const declared = ctx.request.length;
  if (declared !== undefined && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of ctx.req.iterator({ destroyOnReturn: false })) {
      size += (chunk as Buffer).length;
      if (size > limit) throw tooLarge(limit);
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof errors.OIDCProviderError) throw err;
    // The client closed the connection mid-body (Node's "aborted", ECONNRESET): a bad request that nobody is left to
    // read the answer of, not a server error, so it is neither a 500 nor an error line in the log.
    throw new errors.InvalidRequest('the request body was not received whole: the client closed the connection');
  }
  try {
    return UTF8.decode(Buffer.concat(chunks));
  } catch {
    // Replacement characters in place of what was sent would change the text (a signed message among it) unseen.
    throw new errors.InvalidRequest('the request body is not valid UTF-8');
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The deepest nesting a JSON request body may have (the pages' bodies are flat; client metadata nests 4 deep). */
const MAX_BODY_DEPTH = MAX_METADATA_DEPTH;

/**
 * Parses JSON text, refusing malformed input with invalid_request, and an object that names a member twice
 * (RFC 8259 §4 leaves the outcome to each parser; I-JSON, RFC 7493 §2.3, forbids it): which of two values counts is
 * not for the server to guess, as with a form parameter sent twice.
 */
export function parseJsonBody(text: string, options: { deepForCaller?: boolean } = {}): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch {
    throw new errors.InvalidRequest('the request body is not valid JSON');
  }
  // Before the member-name check, whose parser recurses: a 10 KB body of nested arrays overflowed its stack (a 500).
  // With deepForCaller, such a body is handed on unchecked for names, to a caller whose own rule refuses it.
  if (jsonDepthExceeds(value, MAX_BODY_DEPTH)) {
    if (options.deepForCaller) return value;
    throw new errors.InvalidRequest(`the request body nests deeper than ${MAX_BODY_DEPTH} levels`);
  }
  const twice = nameGivenTwice(text);
  if (twice !== undefined) throw new errors.InvalidRequest(`the request body names ${JSON.stringify(twice.slice(0, 100))} twice in one object`);
  return value;
}

/** The first member name that an object of `text` (valid JSON, within MAX_BODY_DEPTH) gives twice, if any. */
export function nameGivenTwice(text: string): string | undefined {
  let found: string | undefined;
  traverse(parseJson(text, { mode: 'json' }), {
    enter(node) {
      if (found !== undefined || node.type !== 'Object') return;
      const seen = new Set<string>();
      for (const member of (node as ObjectNode).members) {
        const name = member.name.type === 'String' ? member.name.value : member.name.name;
        if (seen.has(name)) {
          found = name;
          return;
        }
        seen.add(name);
      }
    },
  });
  return found;
}
