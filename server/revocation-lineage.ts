import { hash } from 'node:crypto';

import type { RevocationHooks } from '../adapters/oidc-adapter.js';
import type { AdapterPayload, ModelStore, RevokedTokenStore } from '../adapters/types.js';
import { MAX_REVOKED_LOOKUP } from '../adapters/types.js';
import { REVOKED_BEFORE_FIELD, isDisabled, revokedBeforeOf, revokedByDisable } from './admin/client-fields.js';
import { MAX_ACCESS_TOKEN_TTL } from './config.js';

/**
 * Cascade revocation for exchanged tokens (RFC 8693). A token made by token exchange carries its lineage: the marks
 * of every token it was derived from, each ancestor contributing three:
 *   - the token itself (`t:`), marked when it is revoked (RFC 7009, for a JWT or an opaque token);
 *   - its grant (`g:`), marked when the grant is revoked (refresh-token revocation or reuse, code reuse, logout);
 *   - its client at the generation the ancestor was issued in (`c:`), marked when the client is disabled or deleted.
 * Revoking writes the mark to the revoked-token list; a token is active only while none of its lineage's marks is
 * there. The check happens wherever the token is used (introspection, the next exchange), so a descendant that an
 * exchange in flight issues after the revocation is inactive from its first use: nothing has to find the
 * descendants, and the race between a revocation and an exchange cannot leave one active.
 *
 * A descendant never outlives the token it was exchanged from (the exchange caps its `exp`), so a mark needs to live
 * only as long as the longest access token: MARK_TTL_SECONDS, with a margin for requests in flight.
 */

export const LINEAGE_CLAIM = 'agentauth_lineage';

/** How long a mark is kept: the longest access token any configuration can issue, plus requests in flight. */
export const MARK_TTL_SECONDS = MAX_ACCESS_TOKEN_TTL + 600;

/** A mark: kind, then 128 bits of SHA-256 (base64url); hashed so that an opaque token's value is never stored or signed. */
const MARK = /^[tgc]:[A-Za-z0-9_-]{22}$/;
const mark = (kind: 't' | 'g' | 'c' | 's', ...parts: string[]): string => `${kind}:${hash('sha256', [kind, ...parts].join('\0'), 'base64url').slice(0, 22)}`;

export const tokenMark = (jti: string): string => mark('t', jti);
export const grantMark = (grantId: string): string => mark('g', grantId);
/**
 * A client's generation is the time of its last disable (0 if never): a disable or delete marks the generation in
 * force, so tokens issued under it are revoked and those issued after the client is enabled again are not.
 */
export const clientMark = (clientId: string, generation: number): string => mark('c', clientId, String(generation));

/**
 * A revocation of person `sub` (server/subject-revocation.ts) in progress during time slot `slot`: a grant stored
 * for `sub` by a request received before it is refused (never in a token's lineage).
 */
export const subjectMark = (sub: string, slot: number): string => mark('s', sub, String(slot));

export function clientGeneration(client: AdapterPayload | undefined): number {
  const value = client?.[REVOKED_BEFORE_FIELD];
  return typeof value === 'number' && Number.isSafeInteger(value) ? value : 0;
}

/** The deepest lineage a token can carry: what one denylist lookup takes, less the token's own jti and grant. */
export const MAX_LINEAGE = MAX_REVOKED_LOOKUP - 2;

/**
 * A token's lineage from its claim (JWT) or stored `extra` (opaque): [] for a token that was not exchanged,
 * undefined for a malformed one (which is then treated as revoked: agentauth signed or stored it, so it is a fault).
 */
export function lineageOf(value: unknown): readonly string[] | undefined {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_LINEAGE) return undefined;
  return value.every((m) => typeof m === 'string' && MARK.test(m)) ? (value as string[]) : undefined;
}

/** What an exchange knows about the token it exchanges: its lineage, and what to mark it by. */
export interface LineageParent {
  lineage: readonly string[];
  jti: string;
  grantId?: string | undefined;
  clientId: string;
  clientGeneration: number;
}

/** The lineage of a token exchanged from `parent`: the parent's, then the parent's own marks. */
export function childLineage(parent: LineageParent): string[] {
  return [
    ...parent.lineage,
    tokenMark(parent.jti),
    ...(parent.grantId ? [grantMark(parent.grantId)] : []),
    clientMark(parent.clientId, parent.clientGeneration),
  ];
}

/** Writes marks to the revoked-token list; each revocation path calls the one it revokes. */
export class RevocationMarks {
  constructor(
    private readonly revoked: Pick<RevokedTokenStore, 'revoke'>,
    private readonly now: () => number = Date.now,
  ) {}

  #until(): number {
    return Math.floor(this.now() / 1000) + MARK_TTL_SECONDS;
  }

  token(jti: string, exp?: number): Promise<void> {
    return this.revoked.revoke(tokenMark(jti), exp ?? this.#until());
  }

  grant(grantId: string): Promise<void> {
    return this.revoked.revoke(grantMark(grantId), this.#until());
  }

  client(clientId: string, client: AdapterPayload | undefined): Promise<void> {
    return this.revoked.revoke(clientMark(clientId, clientGeneration(client)), this.#until());
  }
}

/** True while no mark of the lineage is on the list (a token with no lineage: true without a lookup). */
export async function lineageActive(revoked: Pick<RevokedTokenStore, 'anyRevoked'>, lineage: readonly string[]): Promise<boolean> {
  return lineage.length === 0 || !(await revoked.anyRevoked(lineage));
}

/**
 * Whether an opaque client_credentials token's client still holds it: its record exists, is not disabled, and was not
 * disabled at or after the token's `iat`. Disabling a client deletes its opaque tokens; a token request that had
 * authenticated the client before the disable saves its token after that delete, and a client_credentials token has
 * no grant that the disable removed with it, so this is where such a token is found out (as REVOKED_BEFORE_FIELD
 * finds the JWTs). Clients of the configuration file cannot be disabled and are not in the store.
 */
async function clientHoldsToken(clients: Pick<ModelStore, 'find'>, staticClientIds: ReadonlySet<string>, payload: AdapterPayload): Promise<boolean> {
  const { clientId, iat } = payload as { clientId?: unknown; iat?: unknown };
  if (typeof clientId !== 'string') return false;
  if (staticClientIds.has(clientId)) return true;
  const client = await clients.find(clientId);
  if (!client || isDisabled(client)) return false;
  return !revokedByDisable(iat, revokedBeforeOf(client));
}

/** The adapter's revocation hooks (adapters/oidc-adapter.ts) for these stores. */
export function revocationHooks(
  revoked: Pick<RevokedTokenStore, 'revoke' | 'anyRevoked'>,
  clients: Pick<ModelStore, 'find'>,
  staticClientIds: ReadonlySet<string>,
): RevocationHooks {
  const marks = new RevocationMarks(revoked);
  return {
    tokenRevoked: (jti) => marks.token(jti),
    grantRevoked: (grantId) => marks.grant(grantId),
    accessTokenActive: async (payload, model) => {
      const extra = payload.extra && typeof payload.extra === 'object' ? (payload.extra as Record<string, unknown>) : {};
      const lineage = lineageOf(extra[LINEAGE_CLAIM]);
      if (lineage === undefined || !(await lineageActive(revoked, lineage))) return false;
      return model !== 'ClientCredentials' || clientHoldsToken(clients, staticClientIds, payload);
    },
  };
}
