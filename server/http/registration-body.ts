import type { KoaContextWithOIDC } from 'oidc-provider';
import { errors } from 'oidc-provider';

import { parseJsonBody, readBodyText } from '../request-body.js';
import { PROVIDER_BODY_LIMIT } from './body-parse-errors.js';

/**
 * The body step of the RFC 7591/7592 create and update actions, in place of oidc-provider's JSON parser
 * (lib/shared/selective_body.js), which takes the last of two members with one name and turns bytes that are not
 * UTF-8 into U+FFFD: client metadata is read as strictly as the interaction pages read theirs (server/request-body.ts):
 * invalid UTF-8 and a member named twice in one object are `400 invalid_request` naming what is wrong, and nothing
 * is stored (nesting past the metadata depth stays the registration policy's `invalid_client_metadata`). Everything else is as oidc-provider's step: the same 56 KiB limit
 * (413), the same refusal of another content type, `{}` without one.
 */
export async function strictJsonBody(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  if (ctx.is('application/json')) {
    // A body nested past the metadata depth is the registration policy's to refuse (invalid_client_metadata).
    const body = parseJsonBody(await readBodyText(ctx, PROVIDER_BODY_LIMIT), { deepForCaller: true });
    (ctx.oidc as { body?: unknown }).body = body;
  } else if (ctx.get('content-type')) {
    throw new errors.InvalidRequest(`only application/json content-type bodies are supported on ${ctx.method} ${ctx.path.slice(0, 200)}`);
  } else {
    (ctx.oidc as { body?: unknown }).body = {};
  }
  await next();
}
