import { errors } from 'oidc-provider';
import { describingStep, insertBeforeInAuthorizationActions } from './authorization-steps.js';

/**
 * oidc-provider refuses a `request` parameter (request objects are off: discovery has no
 * `request_parameter_supported`) with `request_not_supported`, and a `request_uri` it did not issue itself
 * (`request_uri_parameter_supported` is false) with `request_uri_not_supported`, both without an `error_description`:
 * the client learnt the code and nothing of what to send instead. What this server takes instead is the pushed
 * authorization request endpoint (RFC 9126, advertised as `pushed_authorization_request_endpoint`): the parameters
 * are pushed there, and the `request_uri` it answers is sent to the authorization endpoint.
 *
 * The refusals come from `rejectUnsupported` (at the authorization endpoint, GET and POST, and at PAR) and
 * `loadPushedAuthorizationRequest` (a request_uri at the authorization endpoint that is not PAR's). A step in front of
 * `rejectUnsupported` in both action lists gives the error its description before the route's error handler reads
 * it, so the description goes wherever the error goes: the JSON body, the error page, and the redirect to the client.
 */

const ANCHOR = 'rejectUnsupported';

/** The description for a request_not_supported or request_uri_not_supported refusal at `ctx.oidc.route`. */
export function requestObjectRefusal(route: string | undefined, error: 'request_not_supported' | 'request_uri_not_supported', parUrl: string): string {
  const atPar = route === 'pushed_authorization_request';
  if (error === 'request_not_supported') {
    return atPar
      ? 'request objects (the request parameter) are not supported by this authorization server: push the authorization parameters themselves, as form parameters of this request (RFC 9126 section 2.1)'
      : `request objects (the request parameter) are not supported by this authorization server: send the authorization parameters themselves, or push them to the pushed authorization request endpoint ${parUrl} and send the request_uri it returns (RFC 9126)`;
  }
  return atPar
    ? 'request_uri is not accepted at the pushed authorization request endpoint: push the authorization parameters themselves; this endpoint answers with the request_uri to send to the authorization endpoint (RFC 9126 section 2.1)'
    : `request_uri must be one issued by this server's pushed authorization request endpoint ${parUrl} (RFC 9126): a request_uri pointing to a request object elsewhere is not supported (request_uri_parameter_supported is false)`;
}

const describe = describingStep('describeRequestObjectRefusals', (ctx, err) => {
  const e = err as { error_description?: unknown };
  if (e.error_description === undefined && (err instanceof errors.RequestNotSupported || err instanceof errors.RequestUriNotSupported)) {
    const code = err instanceof errors.RequestNotSupported ? 'request_not_supported' : 'request_uri_not_supported';
    e.error_description = requestObjectRefusal(ctx.oidc.route, code, ctx.oidc.urlFor('pushed_authorization_request'));
  }
});

/**
 * Puts the step in front of `rejectUnsupported` in the authorization and PAR action lists, once per process (throws
 * when an upgrade of oidc-provider removed it). Call before `new Provider(...)`.
 */
export function prepareRequestObjectErrors(): void {
  insertBeforeInAuthorizationActions(ANCHOR, describe, 'server/http/request-object-errors.ts');
}
