import { errors, Provider } from 'oidc-provider';

import { temporarilyUnavailable } from '../../adapters/oidc-adapter.js';
import type { ClientMetadataDocumentsConfig, TierConfig } from '../config.js';
import type { Logger } from '../logger.js';
import { withoutUserinfo } from '../logger.js';
import type { RegistrationPolicy } from '../policies/registration.js';
import { cacheLifetime, ExpiringLru } from './cache.js';
import { checkClientIdUrl, looksLikeMetadataUrl } from './client-id-url.js';
import { fetchMetadataDocument, MetadataFetchError } from './fetch.js';
import type { FetchTestOverrides } from './fetch.js';
import { urlRefusal } from './host-policy.js';
import { checkMetadataDocument, MetadataDocumentError } from './policy.js';

export interface ClientMetadataDocumentDeps {
  settings: ClientMetadataDocumentsConfig;
  policy: RegistrationPolicy;
  /** The tier metadata-document clients get (registration.defaultTier). */
  tier: { name: string; settings: TierConfig };
  /** Client ids from the configuration file: those stay configured clients even if they look like URLs. */
  staticClientIds: ReadonlySet<string>;
  log: Logger;
  /** Test-only (see fetch.ts); never set from configuration. */
  test?: FetchTestOverrides | undefined;
}

type ClientInstance = object;
interface ClientClass {
  find(id: unknown): Promise<ClientInstance | undefined>;
  new (metadata: Record<string, unknown>): ClientInstance;
}

/**
 * Whether the client looked up is the owner of a token being checked rather than the caller: at userinfo (which has
 * no calling client), and wherever a client has already authenticated and another one is looked up (the owner of a
 * token introspected, revoked, or exchanged as a subject token). There a document that can no longer be used makes
 * the client unknown (the token is inactive), not the caller's error.
 */
function ownerLookup(ctx: { oidc?: { route?: string; client?: { clientId: string } } }, id: string): boolean {
  if (ctx.oidc?.route === 'userinfo') return true;
  const caller = ctx.oidc?.client;
  return caller !== undefined && caller.clientId !== id;
}

/** What a client is told when its document would be one fetch more than the server makes at once. */
const FETCHES_BUSY = 'the authorization server is fetching as many client ID metadata documents as it allows at once; retry shortly';

const refuse = (clientId: string, reason: string) =>
  new errors.InvalidClient(`client_id ${clientId.slice(0, 300)} is a client ID metadata document URL that cannot be used: ${reason}`);

/**
 * RFC 6749 §5.2: a client that tried to authenticate with the Authorization header is answered 401 with a challenge.
 * oidc-provider turns only its own 401 errors into one (client authentication's setWWWAuthenticateHeader step), so the
 * refusal keeps its description and becomes that error.
 */
function asAuthenticationFailure(err: InstanceType<typeof errors.InvalidClient>): Error {
  const failed = new errors.InvalidClientAuth(err.error_description) as Error & { error_description?: string };
  failed.error_description = err.error_description;
  return failed;
}

/**
 * Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document): a client_id that is an https URL is
 * resolved by fetching the document at that URL.
 *
 * oidc-provider 9.13.3 ships an experimental implementation (lib/helpers/client_id_metadata_document.js). agentauth
 * keeps its feature flag (it advertises `client_id_metadata_document_supported` in both discovery documents) but
 * replaces the resolution, because the built-in one falls short here: its fetch resolves DNS inside undici and
 * only checks the peer address after connecting, its cache ignores `no-store` and holds a fixed 100 entries, and every
 * failure reaches the client as the same "client_id metadata document fetch failed" with the reason hidden. The
 * replacement wraps `provider.Client.find`, the one lookup every endpoint uses (authorization, token, interaction,
 * logout, introspection; test/unit/oidc-provider-internals.test.ts guards that), and the built-in path stays
 * configured to refuse every fetch (`allowFetch` false) in case anything reached it.
 */
export function installClientMetadataDocuments(provider: Provider, deps: ClientMetadataDocumentDeps): void {
  const Client = provider.Client as unknown as ClientClass;
  const builtinFind = Client.find.bind(Client);
  const { settings, log } = deps;
  const cache = new ExpiringLru<ClientInstance>(settings.cache.maxEntries);
  const inflight = new Map<string, Promise<ClientInstance>>();
  // One resolution per request, whatever the document's caching headers say: oidc-provider looks a client up more
  // than once in some requests (its authorization error handler does so again after a failure).
  const thisRequest = new WeakMap<object, Map<string, Promise<ClientInstance>>>();

  async function fetchAndBuild(clientId: string, url: URL): Promise<ClientInstance> {
    try {
      const fetched = await fetchMetadataDocument(url, settings, deps.test);
      const metadata = checkMetadataDocument(fetched.body, clientId, deps.policy, deps.tier);
      let client: ClientInstance;
      try {
        client = new Client(metadata);
      } catch (err) {
        const e = err as { error_description?: string; message?: string };
        throw new MetadataDocumentError(e.error_description ?? e.message ?? 'the document is not valid client metadata');
      }
      const ttl = cacheLifetime(fetched, settings.cache, Date.now());
      cache.set(clientId, client, ttl);
      log.info({ event: 'client_metadata_document.fetched', client_id: clientId, cache_seconds: ttl }, 'client ID metadata document fetched');
      return client;
    } catch (err) {
      if (err instanceof MetadataFetchError || err instanceof MetadataDocumentError) {
        log.info({ event: 'client_metadata_document.refused', client_id: withoutUserinfo(clientId), reason: withoutUserinfo(err.reason) }, 'client ID metadata document refused');
        throw refuse(clientId, err.reason);
      }
      throw err;
    }
  }

  async function resolve(clientId: string): Promise<ClientInstance> {
    const cached = cache.get(clientId);
    if (cached) return cached;
    const checked = checkClientIdUrl(clientId);
    if ('problem' in checked) throw refuse(clientId, `the URL ${checked.problem}`);
    const hostProblem = urlRefusal(checked.url, settings);
    if (hostProblem) {
      log.info({ event: 'client_metadata_document.refused', client_id: withoutUserinfo(clientId), reason: withoutUserinfo(hostProblem) }, 'client ID metadata document refused');
      throw refuse(clientId, hostProblem);
    }
    let pending = inflight.get(clientId);
    if (!pending) {
      // Anyone can name a URL as a client_id: the fetches one process makes at once are bounded, each by timeoutMs
      // and maxBytes and together by maxConcurrentFetches. A request sharing a fetch already made waits for it.
      if (inflight.size >= settings.maxConcurrentFetches) {
        log.warn({ event: 'client_metadata_document.busy', client_id: withoutUserinfo(clientId), fetching: inflight.size }, 'client ID metadata document not fetched: as many are being fetched as clientIdMetadataDocuments.maxConcurrentFetches allows');
        throw temporarilyUnavailable(FETCHES_BUSY);
      }
      pending = fetchAndBuild(clientId, checked.url).finally(() => inflight.delete(clientId));
      inflight.set(clientId, pending);
    }
    return pending;
  }

  Client.find = async (id: unknown) => {
    if (typeof id !== 'string' || !looksLikeMetadataUrl(id) || deps.staticClientIds.has(id)) return builtinFind(id);
    const ctx = Provider.ctx as { oidc?: { route?: string; client?: { clientId: string } }; headers?: Record<string, unknown> } | undefined;
    if (!ctx) return resolve(id);
    let seen = thisRequest.get(ctx);
    if (!seen) thisRequest.set(ctx, (seen = new Map()));
    let result = seen.get(id);
    if (!result) seen.set(id, (result = resolve(id)));
    const owner = ownerLookup(ctx, id);
    const withHeader = !owner && ctx.headers?.authorization !== undefined;
    if (!owner && !withHeader) return result;
    return result.catch((err: unknown) => {
      if (!(err instanceof errors.InvalidClient)) throw err;
      if (owner) return undefined;
      throw asAuthenticationFailure(err);
    });
  };
}
