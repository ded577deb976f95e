import { errors, Provider } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

import { failClosedInProvider } from '../../adapters/oidc-adapter.js';
import type { AdapterPayload, ModelStore } from '../../adapters/types.js';
import { isValidKey } from '../../adapters/validate.js';

export { DISABLED_AT_FIELD, DISABLED_FIELD, REVOKED_BEFORE_FIELD, isDisabled, tokensRevokedBefore } from './client-fields.js';
import { DISABLED_AT_FIELD, DISABLED_FIELD, REVOKED_BEFORE_FIELD, isDisabled } from './client-fields.js';

function disabledClientError(route: string, id: string): Error {
  const description = `client ${id.slice(0, 300)} is disabled by the operator of this authorization server`;
  if (route === 'authorization' || route === 'resume') return new errors.InvalidClient(description, 'client is disabled');
  // Where the client authenticates: the same 401 invalid_client as a failed authentication, with the reason given.
  const err = new errors.InvalidClientAuth('client is disabled');
  err.error_description = description;
  return err;
}

/** Routes where a thrown OAuth error reaches the client that asked (the caller, before it is authenticated). */
const CALLER_ROUTES = new Set([
  'token', 'authorization', 'pushed_authorization_request', 'introspection', 'revocation', 'backchannel_authentication',
  'device_authorization', 'resume', 'end_session', 'end_session_confirm',
]);

/** The fields only administration writes. */
const ADMIN_FIELDS = [DISABLED_FIELD, DISABLED_AT_FIELD, REVOKED_BEFORE_FIELD] as const;

interface ClientModel {
  adapter: { find(id: string): Promise<AdapterPayload | undefined>; upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> };
  find(id: unknown): Promise<unknown>;
}

/**
 * Makes a disabled client unknown to oidc-provider, wherever it looks it up:
 *   - the Client model's adapter does not hand a disabled client's record to oidc-provider, so no instance of it is
 *     built: no grant (every grant type, agentauth's own included, authenticates the client first), no registration
 *     management, no sign-in;
 *   - `Client.find` (the one lookup every endpoint uses) tells a caller that it is disabled: a disabled client
 *     calling the token, authorization, PAR, introspection or revocation endpoint gets `invalid_client` saying so,
 *     where an unknown one gets "client authentication failed";
 *   - where the client looked up is a token's owner (introspection and revocation by someone else, JWT
 *     introspection in server/structured-tokens.ts), it is simply not found, so its tokens introspect inactive.
 * Disabling also removes the client's grants and tokens (server/admin/client-admin.ts), so enabling it again
 * restores issuance only.
 */
export function installDisabledClientCheck(provider: Provider, clients: ModelStore, health?: { markDown(err: unknown): void }): void {
  const Client = provider.Client as unknown as ClientModel;
  const adapter = Client.adapter;
  const hiding = Object.create(adapter) as ClientModel['adapter'];
  hiding.find = async (id: string) => {
    const payload = await adapter.find(id);
    return isDisabled(payload) ? undefined : payload;
  };
  // oidc-provider writes a client back from the metadata it knows (an RFC 7592 update), which has none of these
  // fields: carry them over from the stored record, so no update by the client clears them.
  hiding.upsert = async (id: string, payload: AdapterPayload, expiresIn?: number) => {
    const stored = await failClosedInProvider(() => clients.find(id), health);
    const kept = Object.fromEntries(ADMIN_FIELDS.flatMap((f) => (stored?.[f] === undefined ? [] : [[f, stored[f]]])));
    return adapter.upsert(id, { ...payload, ...kept }, expiresIn);
  };
  Object.defineProperty(Client, 'adapter', { configurable: true, get: () => hiding });

  const find = Client.find.bind(Client);
  Client.find = async (id: unknown) => {
    const client = await find(id);
    if (client !== undefined || !isValidKey(id)) return client;
    // Not found: only then is the record read again, to tell a disabled client from an unknown one.
    if (!isDisabled(await failClosedInProvider(() => clients.find(id), health))) return undefined;
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    const route = ctx?.oidc?.route;
    if (route && CALLER_ROUTES.has(route) && !ctx.oidc.entities.Client) throw disabledClientError(route, id);
    return undefined;
  };
}
