import type Koa from 'koa';
import { errors } from 'oidc-provider';

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
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses JSON text, refusing malformed input with invalid_request. */
export function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new errors.InvalidRequest('the request body is not valid JSON');
  }
}
