import type Koa from 'koa';
import { errors } from 'oidc-provider';

/** Reads a request body as text, refusing more than `limit` bytes with invalid_request. */
export async function readBodyText(ctx: Koa.Context, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new errors.InvalidRequest('request body too large');
    chunks.push(chunk as Buffer);
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
