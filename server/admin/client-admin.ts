import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import type { AdapterPayload, ModelName, Storage } from '../../adapters/types.js';
import { isValidKey } from '../../adapters/validate.js';
import { credentialFingerprint, destroyListed, FINGERPRINT_FIELD } from '../../adapters/sealed-credential-ids.js';
import { useLimitOf } from '../initial-access-token-uses.js';
import { registrationLimitsOf } from '../initial-access-token-limits.js';
import type { RegistrationLimits } from '../policies/registration-limits.js';
import type { AuditEventInput } from '../audit/chain.js';
import { CLIENT_OWNED, markClientRevoked, removeClientRecords } from '../client-revocation.js';
import { RevocationMarks, clientGeneration } from '../revocation-lineage.js';
import type { ClientSecretHasher } from '../client-secrets.js';
import type { StaticClientConfig } from '../config.js';
import { REGISTRATION_FIELD } from '../policies/registration-origin.js';
import { tierFromPolicies } from '../policies/tiers.js';
import { DISABLED_AT_FIELD, DISABLED_FIELD, REVOKED_BEFORE_FIELD, isDisabled, revokedBeforeOf } from './client-fields.js';
import { ClientChangeInProgress, ClientGone, ClientWrites, REVISION_FIELD } from './client-writes.js';
import type { ClientChange, ClientDecision } from './client-writes.js';
import { conflict, invalidRequest, notFound } from './errors.js';
import type { AdminError } from './errors.js';
import { PerKeyQueue } from './per-key.js';

/** Who performed an administration action, as the audit record names it. */
export type AdminActor = { kind: 'cli' } | { kind: 'admin_api'; remoteAddress: string };

/** A client as administration shows it: its metadata without secrets (no secret, no secret hash, no tokens). */
export interface ClientView {
  client_id: string;
  /** `configuration` for clients declared in the configuration file; else how it registered. */
  source: 'configuration' | 'registered';
  disabled: boolean;
  disabled_at?: string;
  has_secret: boolean;
  metadata: Record<string, unknown>;
  /** On the answer to a disable of a client that was disabled already: nothing changed (its audit record says the same). */
  already_disabled?: true;
  /** On the answer to an enable of a client that was not disabled: nothing changed. */
  already_enabled?: true;
}

/** An initial access token as administration shows it: a fingerprint of the token, never the token. */
export interface IatView {
  id: string;
  tier: string | undefined;
  issued_at: string | undefined;
  expires_at: string | undefined;
  /** How many registrations it allows (`clients iat create --uses`); null for any number. */
  uses: number | null;
  /** The only grant types its clients may register (`--grant-types`); null for any. `[]`: its limits cannot be read, so it registers none. */
  grant_types: string[] | null;
  /** The only scopes its clients may register (`--scope`); null for any. */
  scope: string | null;
}

export interface ClientAdminDeps {
  storage: Pick<Storage, 'model' | 'revokedTokens' | 'nonces'>;
  hasher: ClientSecretHasher;
  /** Clients of the configuration file: shown, never changed here (the file is where they are defined). */
  staticClients: readonly StaticClientConfig[];
  /** Writes one audit record; resolves once it is stored (fail closed: a refused record fails the action). */
  audit(event: AuditEventInput): Promise<unknown>;
  /** How an enable waits for the last disable's second to pass (tests with a pinned clock move the clock). */
  wait?: (ms: number) => Promise<void>;
}

/** Never shown: the secret's hash, and anything that grants access. */
const HIDDEN = new Set(['client_secret', 'registration_access_token']);
/** What disabling removes: everything the client holds except its registration access token (kept for after enable). */
const DISABLE_REVOKES: readonly ModelName[] = CLIENT_OWNED.filter((m) => m !== 'RegistrationAccessToken');
const PAGE = 500;
/** The per-key queue's key for initial access token revocations (a client id never has this form). */
const IAT_REVOCATIONS = '\u0000iat';
const SECRET_AUTH_METHODS = new Set(['client_secret_basic', 'client_secret_post']);
/**
 * Past the revoked second, how much longer an enable waits: tokens are dated by the clock of whichever instance issues
 * them, and one whose clock is behind this one's by up to this much still dates its tokens after the revoked second.
 */
const CLOCK_MARGIN_MS = 250;
/** The longest an enable waits for the last disable's revocation second to pass (see ClientAdmin.enable). */
const ENABLE_WAIT_LIMIT_MS = 10_000;
/** Waits an enable makes at most (each after a disable that came during the one before). */
const ENABLE_ROUNDS = 5;

/** An enable decided before the last disable's revocation second passed: tried again from `notBefore` (epoch ms). */
class EnableTooSoon extends Error {
  constructor(readonly notBefore: number) {
    super('the client cannot be enabled yet');
  }
}

/**
 * The first instant a client may be enabled: tokens are dated in whole seconds, and those dated up to its last
 * disable's REVOKED_BEFORE_FIELD second (included) are revoked, so only from the next second is a token issued alive.
 */
function enableNotBefore(current: AdapterPayload): number {
  const revokedBefore = revokedBeforeOf(current);
  return revokedBefore !== undefined && Number.isFinite(revokedBefore) ? (revokedBefore + 1) * 1000 + CLOCK_MARGIN_MS : 0;
}

/** The handle an initial access token is listed and revoked by: a SHA-256 fingerprint (the token's id is the token). */
/** The fingerprint an initial access token is listed by: kept with it, or (stored before it was) the SHA-256 of its id, the token. */
const iatFingerprintOf = (record: { id: string; payload: AdapterPayload }): string =>
  typeof record.payload[FINGERPRINT_FIELD] === 'string' ? (record.payload[FINGERPRINT_FIELD] as string) : credentialFingerprint(record.id);

const iso = (epochSeconds: unknown) => (typeof epochSeconds === 'number' ? new Date(epochSeconds * 1000).toISOString() : undefined);

/** An initial access token is named by its fingerprint (`clients iat list`) or by itself: base64url either way. */
export function checkIatId(idOrToken: string): void {
  if (!/^[A-Za-z0-9_-]{1,256}$/.test(idOrToken)) throw invalidRequest('an initial access token id is the fingerprint `clients iat list` shows (base64url)');
}

export function checkClientId(clientId: string): void {
  if (!isValidKey(clientId)) throw invalidRequest('client id must be 1-2048 visible ASCII characters, not starting with "$"');
}

function registeredView(clientId: string, payload: AdapterPayload): ClientView {
  const metadata = Object.fromEntries(Object.entries(payload).filter(([k]) => !HIDDEN.has(k) && k !== DISABLED_FIELD && k !== DISABLED_AT_FIELD && k !== REVOKED_BEFORE_FIELD && k !== REVISION_FIELD));
  const disabledAt = payload[DISABLED_AT_FIELD];
  return {
    client_id: clientId,
    source: 'registered',
    disabled: isDisabled(payload),
    ...(isDisabled(payload) && typeof disabledAt === 'string' ? { disabled_at: disabledAt } : {}),
    has_secret: typeof payload.client_secret === 'string',
    metadata,
  };
}

function staticView(c: StaticClientConfig): ClientView {
  const metadata = Object.fromEntries(Object.entries(c).filter(([k]) => !HIDDEN.has(k)));
  return { client_id: c.client_id, source: 'configuration', disabled: false, has_secret: c.client_secret !== undefined, metadata: { ...metadata, [REGISTRATION_FIELD]: 'operator' } };
}

/** A token's limits as listed: null for none; a record that cannot be read allows no grant type (fail closed). */
function limitsView(limits: RegistrationLimits | 'damaged' | undefined): Pick<IatView, 'grant_types' | 'scope'> {
  if (limits === 'damaged') return { grant_types: [], scope: null };
  return { grant_types: limits?.grant_types ?? null, scope: limits?.scope ?? null };
}

/**
 * Client administration on the configured store, shared by the CLI (server/cli-clients.ts) and the admin API
 * (server/admin/client-routes.ts). Registered clients only: clients of the configuration file are listed and shown
 * but changed in the file (a change here would be undone by the next start of any instance).
 */
export class ClientAdmin {
  /**
   * Changes of one client made here, one after another (they would otherwise only wait for each other's claims).
   * Between processes (the CLI next to a server, other instances, the workers of `start --workers N`) and against
   * the client's own RFC 7592 updates, each change is a compare-and-set on the stored record (client-writes.ts).
   */
  readonly #changes = new PerKeyQueue();
  readonly #writes: ClientWrites;

  constructor(private readonly deps: ClientAdminDeps) {
    this.#writes = new ClientWrites(deps.storage.model('Client'), deps.storage.nonces);
  }

  #static(clientId: string): StaticClientConfig | undefined {
    return this.deps.staticClients.find((c) => c.client_id === clientId);
  }

  async #registered(clientId: string): Promise<AdapterPayload> {
    checkClientId(clientId);
    const payload = await this.deps.storage.model('Client').find(clientId);
    if (payload) return payload;
    throw this.#missing(clientId);
  }

  #missing(clientId: string): AdminError {
    if (this.#static(clientId)) {
      return conflict(`client ${clientId} is declared in the configuration file (AGENTAUTH_CONFIG clients); change or remove it there and restart`);
    }
    return notFound(`no client ${clientId}`);
  }

  /**
   * One change of a registered client, on the record as stored when it takes effect (client-writes.ts): `decide` may
   * be shown a newer record than the one first read, and `commit` (the audit record, written before the change, fail
   * closed as server/audit/log.ts asks) runs only for the change that is made.
   */
  async #change(
    clientId: string,
    decide: (current: AdapterPayload) => ClientDecision,
    commit: (current: AdapterPayload, decision: ClientDecision) => Promise<void>,
    then?: (change: ClientChange) => Promise<void>,
  ): Promise<ClientChange> {
    checkClientId(clientId);
    return this.#changes.run(clientId, async () => {
      let change: ClientChange;
      try {
        change = await this.#writes.change(clientId, decide, commit);
      } catch (err) {
        if (err instanceof ClientGone) throw this.#missing(clientId);
        if (err instanceof ClientChangeInProgress) throw conflict(err.message);
        throw err;
      }
      // What follows the write (revoking what the client held) still runs before the next change of this client here.
      await then?.(change);
      return change;
    });
  }

  /**
   * One page of clients: on the first (no `after`), the configuration file's, then up to `limit` registered clients in
   * id order after `after`; `next` is the id to ask for the page after, absent on the last. Registered clients never
   * expire and anyone may register some, so no answer holds them all: every client in one answer put hundreds of
   * megabytes in one string and held the event loop for seconds.
   */
  async listPage(after: string | undefined, limit: number): Promise<{ clients: ClientView[]; next?: string }> {
    if (after !== undefined) checkClientId(after);
    const views = after === undefined ? this.deps.staticClients.map(staticView) : [];
    const store = this.deps.storage.model('Client');
    // Reads one more than asked for, to know whether a page follows; static ids found in the store are skipped.
    let cursor = after;
    let last: string | undefined;
    let registered = 0;
    for (;;) {
      const wanted = Math.min(PAGE, limit + 1 - registered);
      const page = await store.list(cursor, wanted);
      for (const { id, payload } of page) {
        cursor = id;
        if (this.#static(id)) continue;
        if (registered === limit) return { clients: views, next: last! };
        registered += 1;
        last = id;
        views.push(registeredView(id, payload));
      }
      if (page.length < wanted) return { clients: views };
    }
  }

  async show(clientId: string): Promise<ClientView> {
    checkClientId(clientId);
    const configured = this.#static(clientId);
    if (configured) return staticView(configured);
    return registeredView(clientId, await this.#registered(clientId));
  }

  /** Stops issuance at once (every instance) and revokes the client's grants, tokens and codes. */
  async disable(clientId: string, actor: AdminActor): Promise<ClientView> {
    const change = await this.#change(
      clientId,
      (current) => {
        if (isDisabled(current)) return { keep: true };
        // Dated when decided (each round, right before the claim): JWT access tokens issued until then are refused.
        // The date is also the client's generation, which the revocation mark below names (server/revocation-lineage.ts):
        // it must move on with every disable, or a second disable within the same second would mark the generation the
        // client's tokens take after the next enable (tokens exchanged from them then inactive from birth).
        const now = new Date();
        const revokedBefore = Math.max(Math.floor(now.getTime() / 1000), clientGeneration(current) + 1);
        return { write: { ...current, [DISABLED_FIELD]: true, [DISABLED_AT_FIELD]: now.toISOString(), [REVOKED_BEFORE_FIELD]: revokedBefore } };
      },
      async (current, decision) => {
        const already = 'keep' in decision;
        await this.#audit('client.disabled', clientId, actor, { revoked: [...DISABLE_REVOKES], ...(already ? { already_disabled: true } : {}) });
        // The mark of the generation ending here first (tokens exchanged from this client's tokens go with them, see
        // server/revocation-lineage.ts), then the flag, so nothing can be issued between the revocation and the flag.
        if (!already) await new RevocationMarks(this.deps.storage.revokedTokens).client(clientId, current);
      },
      async () => {
        for (const model of DISABLE_REVOKES) await this.deps.storage.model(model).revokeByClientId(clientId);
      },
    );
    const view = registeredView(clientId, change.after ?? change.before);
    return 'keep' in change.decision ? { ...view, already_disabled: true } : view;
  }

  /**
   * Restores issuance. Grants and tokens revoked by the disable stay revoked.
   *
   * Not before the second that the last disable revoked tokens up to (REVOKED_BEFORE_FIELD, whole seconds, tokens of
   * that second included) has passed, and CLOCK_MARGIN_MS more: a token issued in it would be answered and inactive from
   * its first use. So an enable right after a disable waits for the next second (up to 1.25 s). A longer wait than ENABLE_WAIT_LIMIT_MS
   * (a disable dated ahead by a host whose clock runs ahead of this one's) is refused (409) with the time from which
   * the enable can be made. The wait runs before the change is claimed, so nothing is held meanwhile; a disable made
   * during it moves the time on, and the enable waits again.
   */
  async enable(clientId: string, actor: AdminActor): Promise<ClientView> {
    for (let round = 1; ; round += 1) {
      try {
        const change = await this.#change(
          clientId,
          (current) => {
            if (!isDisabled(current)) return { keep: true };
            const notBefore = enableNotBefore(current);
            if (Date.now() < notBefore) throw new EnableTooSoon(notBefore);
            const enabled = { ...current };
            delete enabled[DISABLED_FIELD];
            delete enabled[DISABLED_AT_FIELD];
            return { write: enabled };
          },
          (_current, decision) => this.#audit('client.enabled', clientId, actor, 'keep' in decision ? { already_enabled: true } : {}),
        );
        const view = registeredView(clientId, change.after ?? change.before);
        return 'keep' in change.decision ? { ...view, already_enabled: true } : view;
      } catch (err) {
        if (!(err instanceof EnableTooSoon)) throw err;
        const waitMs = err.notBefore - Date.now();
        if (waitMs > ENABLE_WAIT_LIMIT_MS || round === ENABLE_ROUNDS) {
          throw conflict(
            `client ${clientId} cannot be enabled before ${new Date(err.notBefore).toISOString()}: its last disable revoked its tokens up to then, later than this host's clock says now (a disable dated by a host whose clock runs ahead), and a token issued earlier would be inactive; retry then`,
          );
        }
        if (waitMs > 0) await (this.deps.wait ?? sleep)(waitMs);
      }
    }
  }

  /** Removes the client and revokes everything it held (server/client-revocation.ts), registration access tokens included. */
  async delete(clientId: string, actor: AdminActor): Promise<void> {
    await this.#change(
      clientId,
      () => ({ destroy: true }),
      // The type RFC 7592 DELETE records too: `agentauth verify` finds deleted clients by it. Recorded and marked
      // revoked before the record goes, so that no client is removed without both.
      async (current) => {
        await this.#audit('client.deleted', clientId, actor, { revoked: [...CLIENT_OWNED] });
        await markClientRevoked(this.deps.storage, clientId, current);
      },
      () => removeClientRecords(this.deps.storage, clientId),
    );
  }

  /** Replaces a confidential client's secret; the new secret is returned once and stored only as a keyed hash. */
  async rotateSecret(clientId: string, actor: AdminActor): Promise<{ client: ClientView; clientSecret: string }> {
    const clientSecret = randomBytes(64).toString('base64url');
    const hashed = this.deps.hasher.hash(clientSecret);
    const change = await this.#change(
      clientId,
      (current) => {
        const method = typeof current.token_endpoint_auth_method === 'string' ? current.token_endpoint_auth_method : 'client_secret_basic';
        if (!SECRET_AUTH_METHODS.has(method) || typeof current.client_secret !== 'string') {
          throw conflict(`client ${clientId} authenticates with ${method} and has no client secret to rotate`);
        }
        return { write: { ...current, client_secret: hashed } };
      },
      () => this.#audit('client.secret_rotated', clientId, actor, {}),
    );
    return { client: registeredView(clientId, change.after!), clientSecret };
  }

  async listIats(): Promise<IatView[]> {
    const store = this.deps.storage.model('InitialAccessToken');
    const views: IatView[] = [];
    for (let after: string | undefined; ; ) {
      const page = await store.list(after, PAGE);
      for (const record of page) {
        const { payload } = record;
        views.push(await this.#iatView(record));
      }
      if (page.length < PAGE) break;
      after = page.at(-1)!.id;
    }
    return views;
  }

  /**
   * Revokes an initial access token by its fingerprint (as listed) or by the token itself. Revocations run one at a
   * time in this process, each looking the token up once its turn comes: of several sent at once, the first records
   * and revokes, the others answer 404 as a retry does (each recorded one before).
   */
  async revokeIat(idOrToken: string, actor: AdminActor): Promise<IatView> {
    checkIatId(idOrToken);
    return this.#changes.run(IAT_REVOCATIONS, async () => {
      const store = this.deps.storage.model('InitialAccessToken');
      // Found by its fingerprint, or by the token (whose fingerprint it is): records are stored under a keyed hash of
      // the token (adapters/sealed-credential-ids.ts), so the listing is searched either way.
      const asToken = credentialFingerprint(idOrToken);
      let found: { id: string; payload: AdapterPayload } | undefined;
      for (let after: string | undefined; found === undefined; ) {
        const page = await store.list(after, PAGE);
        found = page.find((r) => iatFingerprintOf(r) === idOrToken || iatFingerprintOf(r) === asToken);
        if (page.length < PAGE) break;
        after = page.at(-1)!.id;
      }
      if (found === undefined) throw notFound('no initial access token has that id (the fingerprint `clients iat list` shows) or is that token');
      const { id: tokenId } = found;
      const view = await this.#iatView(found);
      await this.#audit('registration.iat_revoked', undefined, actor, { iat_id: view.id, ...(view.tier ? { tier: view.tier } : {}) });
      await destroyListed(store, tokenId);
      return view;
    });
  }

  /** An initial access token as listed: its fingerprint, tier, times, and the registrations it allows. */
  async #iatView(record: { id: string; payload: AdapterPayload }): Promise<IatView> {
    const { payload } = record;
    const id = iatFingerprintOf(record);
    return {
      id,
      tier: tierFromPolicies(Array.isArray(payload.policies) ? (payload.policies as string[]) : undefined),
      issued_at: iso(payload.iat),
      expires_at: iso(payload.exp),
      uses: (await useLimitOf(this.deps.storage.nonces, id)) ?? null,
      ...limitsView(await registrationLimitsOf(this.deps.storage.nonces, id)),
    };
  }

  /**
   * Written before the change (fail closed, as server/audit/log.ts asks): a refused record leaves the store as it
   * was; the log may then name an action whose write failed, never the reverse.
   */
  async #audit(type: string, clientId: string | undefined, actor: AdminActor, details: Record<string, unknown>): Promise<void> {
    const who = actor.kind === 'cli' ? { actor: 'cli' } : { actor: 'admin_api', remote_address: actor.remoteAddress };
    await this.deps.audit({ type, ...(clientId ? { client_id: clientId } : {}), details: { ...who, ...details } });
  }
}
