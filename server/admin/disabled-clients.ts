import { errors, Provider } from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

import { failClosedInProvider } from '../../adapters/oidc-adapter.js';
import type { AdapterPayload, ModelStore, NonceStore } from '../../adapters/types.js';
import { isValidKey } from '../../adapters/validate.js';
import { clientChangeEvent } from '../audit/provider-events.js';
import { auditNow } from '../audit/trail.js';
import { beforeClientWrite } from './client-write-hook.js';
import { ClientChangeInProgress, ClientGone, ClientWrites } from './client-writes.js';
import type { ClientDecision } from './client-writes.js';

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
  adapter: {
    find(id: string): Promise<AdapterPayload | undefined>;
    upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void>;
    destroy(id: string): Promise<void>;
  };
  find(id: unknown): Promise<unknown>;
}

/** The administration fields of a stored record, to carry over into what oidc-provider writes. */
const adminFields = (stored: AdapterPayload) => Object.fromEntries(ADMIN_FIELDS.flatMap((f) => (stored[f] === undefined ? [] : [[f, stored[f]]])));

/**
 * What an RFC 7592 update writes, given what oidc-provider built (`update`, from the client it read when the request
 * began, of which `read` holds the secret) and the record as stored now (`stored`): the update, with what
 * administration may have changed since taken from `stored`: the administration fields (which oidc-provider does not
 * know, so no update clears them), and the secret, unless the update itself replaced it (oidc-provider generates one
 * when a client moves to a secret method) or moved to a method without one (then no secret is kept at all).
 */
export function clientUpdateOnStored(update: AdapterPayload, read: { client_secret?: unknown } | undefined, stored: AdapterPayload): AdapterPayload {
  const written: AdapterPayload = { ...update, ...adminFields(stored) };
  // oidc-provider carries the secret over into a client that no longer authenticates with it; kept, it would work
  // again after a move back to a secret method (which would then get no new secret).
  if (!SECRET_METHODS.has(String(update.token_endpoint_auth_method ?? 'client_secret_basic'))) {
    delete written.client_secret;
    delete written.client_secret_expires_at;
    return written;
  }
  const secretKept = read !== undefined && update.client_secret === read.client_secret && stored.client_secret !== undefined;
  return secretKept ? { ...written, client_secret: stored.client_secret } : written;
}

/** The methods a client authenticates with its secret (agentauth does not offer client_secret_jwt). */
const SECRET_METHODS = new Set(['client_secret_basic', 'client_secret_post']);

/** A change of a client's record made inside oidc-provider's pipeline: its outcomes as OAuth errors. */
async function inProvider(fn: () => Promise<unknown>, health?: { markDown(err: unknown): void }): Promise<void> {
  try {
    await failClosedInProvider(fn, health);
  } catch (err) {
    if (err instanceof ClientGone) {
      // Its registration access token went with it (RFC 7592 §2.1: 401 invalid_token), said so for the developer.
      const gone = new errors.InvalidToken('client deleted');
      gone.error_description = 'the client was deleted while this request was being answered';
      throw gone;
    }
    if (err instanceof ClientChangeInProgress) {
      const busy = new errors.TemporarilyUnavailable(err.message);
      Object.assign(busy, { status: 503, statusCode: 503 });
      throw busy;
    }
    throw err;
  }
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
 *
 * oidc-provider's own writes of a client (an RFC 7592 update or delete) go through `ClientWrites` (client-writes.ts),
 * as administration's do: an update that read the record before a disable, a delete or a rotate-secret in any process
 * decides again on the record as it is after it, so it never undoes one.
 */
export function installDisabledClientCheck(provider: Provider, clients: ModelStore, claims: Pick<NonceStore, 'takeAttempt'>, health?: { markDown(err: unknown): void }): void {
  const Client = provider.Client as unknown as ClientModel;
  const adapter = Client.adapter;
  // Reads from the store itself; writes through oidc-provider's adapter (adapters/oidc-adapter.ts), which
  // hashes a client secret before it is stored.
  const writes = new ClientWrites(
    { find: (id) => clients.find(id), upsert: (id, payload, expiresIn) => adapter.upsert(id, payload, expiresIn), destroy: (id) => adapter.destroy(id) },
    claims,
  );
  const hiding = Object.create(adapter) as ClientModel['adapter'];
  hiding.find = async (id: string) => {
    const payload = await adapter.find(id);
    return isDisabled(payload) ? undefined : payload;
  };
  // oidc-provider writes a client back from the metadata it knows (an RFC 7592 update), built from the client it read
  // when the request began (ctx.oidc.client); written onto the record as stored when the write happens
  // (clientUpdateOnStored).
  hiding.upsert = async (id: string, payload: AdapterPayload, expiresIn?: number) => {
    const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
    // A registration and an RFC 7592 update are recorded in the audit log just before their write (as administrative
    // changes are, server/admin/client-admin.ts): one the store applies after its request was answered 503 is still
    // recorded, and one whose record cannot be written is not made.
    if (ctx?.oidc?.route === 'registration') {
      return inProvider(async () => {
        // A step of the registration's own (one use of its initial access token) runs first: refused, nothing is recorded.
        await beforeClientWrite(ctx)?.();
        await auditNow(ctx, clientChangeEvent('client.registered', id, payload));
        await writes.create(id, payload, expiresIn);
      }, health);
    }
    const client = ctx?.oidc?.client;
    const read = client?.clientId === id ? { client_secret: client.clientSecret } : undefined;
    const before = beforeClientWrite(ctx);
    const commit = async (current: AdapterPayload, decision: ClientDecision) => {
      if (ctx?.oidc?.route === 'client_update' && 'write' in decision) await auditNow(ctx, clientChangeEvent('client.updated', id, decision.write));
      await before?.(current);
    };
    return inProvider(() => writes.change(id, (stored) => ({ write: clientUpdateOnStored(payload, read, stored) }), commit), health);
  };
  hiding.destroy = async (id: string) => {
    const before = beforeClientWrite(Provider.ctx as KoaContextWithOIDC | undefined);
    return inProvider(
      () => writes.change(id, () => ({ destroy: true }), async (current) => before?.(current)).catch(async (err: unknown) => {
        if (!(err instanceof ClientGone)) throw err;
        // Deleted meanwhile, which is what was asked; but by this request only if its token is still unused (two
        // deletes sent with one token: one succeeds, the other is told the token was used).
        await before?.();
      }),
      health,
    );
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
    // RFC 7592 management of a disabled client with its own registration access token: refused, and the token kept
    // (oidc-provider destroys a token whose client it cannot find, as for a leaked one; enabling the client must
    // give it back its management). A token of another client is left to oidc-provider's rule.
    if (route && MANAGEMENT_ROUTES.has(route) && (await registrationTokenOwner(ctx)) === id) throw disabledManagementError(id);
    return undefined;
  };
}

/** RFC 7592 client configuration endpoint routes (oidc-provider's names). */
const MANAGEMENT_ROUTES = new Set(['client', 'client_update', 'client_delete']);

/** The client id of the registration access token the request presents, if it is one that exists. */
async function registrationTokenOwner(ctx: KoaContextWithOIDC): Promise<string | undefined> {
  let presented: string;
  try {
    presented = ctx.oidc.getAccessToken();
  } catch {
    return undefined;
  }
  const token = await ctx.oidc.provider.RegistrationAccessToken.find(presented);
  return token?.clientId;
}

function disabledManagementError(id: string): Error {
  const err = new errors.InvalidToken('client is disabled');
  err.error_description = `client ${id.slice(0, 300)} is disabled by the operator of this authorization server; its registration access token works again once it is enabled`;
  return err;
}
