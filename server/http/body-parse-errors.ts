import type { KoaContextWithOIDC, Provider } from 'oidc-provider';

import { CONTENT_TOO_LARGE } from '../request-body.js';
import { ERROR_EVENTS } from '../metrics/provider-events.js';
import { NOT_UTF8, NotUtf8FormBody } from './form-body-utf8.js';
import { MAX_FORM_PARAMETERS, TooManyFormParameters } from './form-parameter-count.js';
import { replaceDescription } from './error-description.js';

/** oidc-provider 9.13.3's body limit (LIMIT in lib/shared/selective_body.js) on every route it parses a body for. */
export const PROVIDER_BODY_LIMIT = 56 * 1024;

/** The one description oidc-provider gives every body it cannot read (lib/shared/selective_body.js). */
const PARSE_FAILURE = 'failed to parse the request body';

/**
 * What a client developer can act on, for each reason oidc-provider's body parser fails (the error's `cause`, set by
 * lib/shared/selective_body.js): its own Error messages, JSON.parse's SyntaxError, TextDecoder's RangeError for a
 * charset it does not know. The status oidc-provider gives (400) is kept except for a body over the limit, which is
 * RFC 9110 §15.5.14's 413, as every other endpoint of this server answers.
 */
function explain(cause: unknown): { status?: number; description: string } | undefined {
  if (!(cause instanceof Error)) return undefined;
  if (cause.message === 'request entity too large') {
    return { status: CONTENT_TOO_LARGE, description: `the request body exceeds the ${PROVIDER_BODY_LIMIT} bytes this endpoint accepts` };
  }
  if (cause.message === 'request size did not match content length') {
    return { description: 'the request body is not as long as its Content-Length header says' };
  }
  if (cause instanceof SyntaxError) return { description: 'the request body is not valid JSON' };
  if (cause instanceof NotUtf8FormBody) return { description: NOT_UTF8 };
  if (cause instanceof TooManyFormParameters) return { description: `the request body has more than ${MAX_FORM_PARAMETERS} parameters, the most this server reads: send each parameter once, and nothing else` };
  if (cause instanceof RangeError) return { description: 'the request body\'s charset is not supported: send it as utf-8' };
  return undefined;
}

/**
 * Replaces "failed to parse the request body" with why, on every route oidc-provider parses a body for (token,
 * introspection, revocation, registration, PAR, logout, userinfo): its error handler has already set the status and
 * the JSON body when it emits the route's error event, so the listener rewrites both in place. An HTML error page
 * (rendered for a browser) keeps its text; only its status changes.
 */
export function explainBodyParseErrors(provider: Provider): void {
  for (const event of ERROR_EVENTS) {
    (provider as unknown as NodeJS.EventEmitter).on(event, (ctx: KoaContextWithOIDC, err: { error_description?: unknown; cause?: unknown }) => {
      if (err.error_description !== PARSE_FAILURE) return;
      const why = explain(err.cause);
      if (!why) return;
      if (why.status !== undefined) ctx.status = why.status;
      const body = ctx.body as Record<string, unknown> | undefined;
      // The challenge too, where the route wrote one first (userinfo: a Bearer challenge around its body parser).
      if (body && typeof body === 'object' && !Buffer.isBuffer(body) && body.error_description === PARSE_FAILURE) replaceDescription(ctx as never, body, why.description);
    });
  }
}
