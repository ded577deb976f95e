import type { IncomingMessage } from 'node:http';
import { decodeProtectedHeader } from 'jose';
import type Koa from 'koa';

/** What an empty or repeated DPoP header field reaches oidc-provider as: no JWT, so every route that reads one refuses it. */
const NOT_A_PROOF = '-';

/** Why a request's DPoP header fields are no proof, for the error description (server/provider.ts). */
const PROBLEMS = new WeakMap<IncomingMessage, string>();

/** The problem dpopHeaderCheck found with this request's DPoP header fields, if any. */
export function dpopHeaderProblem(req: IncomingMessage): string | undefined {
  return PROBLEMS.get(req);
}

/**
 * The `alg` of the request's DPoP proof as its header says, for an error description (only on a refusal): undefined
 * when the header is not a JWT or its `alg` is not a short algorithm name (nothing else of the request is echoed).
 */
export function dpopProofAlg(req: IncomingMessage): string | undefined {
  const value = req.headers.dpop;
  if (typeof value !== 'string') return undefined;
  try {
    const { alg } = decodeProtectedHeader(value);
    return typeof alg === 'string' && /^[A-Za-z0-9-]{1,20}$/.test(alg) ? alg : undefined;
  } catch {
    return undefined;
  }
}

/**
 * RFC 9449 §4.3 requires a request's DPoP header to be one field holding one well-formed JWT. oidc-provider reads it
 * with `ctx.get('DPoP')`: an empty field read as no proof at all (so a client that meant to send one got a bearer
 * token where its tier allows them), and several fields, which Node joins with ", ", failed as a JWS that is not
 * compact. Either is handed on as a value that is no JWT, so each route that reads DPoP (token, userinfo, PAR) refuses
 * it with invalid_dpop_proof in its own shape; the description says what is wrong with the header.
 */
export const dpopHeaderCheck: Koa.Middleware = (ctx, next) => {
  const value = ctx.req.headers.dpop;
  if (value === undefined) return next();
  let fields = 0;
  const raw = ctx.req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'dpop') fields += 1;
  const problem = fields > 1
    ? `the request has ${fields} DPoP header fields: send one DPoP proof JWT (RFC 9449 section 4.3)`
    : String(value).trim() === '' ? 'the DPoP header is empty: send one DPoP proof JWT, or no DPoP header (RFC 9449 section 4.3)' : undefined;
  if (problem !== undefined) {
    PROBLEMS.set(ctx.req, problem);
    ctx.req.headers.dpop = NOT_A_PROOF;
  }
  return next();
};
