import { compactVerify, decodeJwt, decodeProtectedHeader, importJWK } from 'jose';
import type { JWK } from 'jose';

import { chainOf } from '../adapters/types.js';
import type { AuditCheckpoint, Storage } from '../adapters/types.js';
import type { ArchivedKey } from '../keys/keyring.js';
import { LINEAGE_CLAIM, grantMark, lineageOf } from './revocation-lineage.js';
import { revokedByDisable, tokensRevokedBefore } from './admin/client-fields.js';

export interface VerificationReport {
  signature: 'valid' | 'invalid';
  reason?: string;
  kid?: string | undefined;
  key_state?: string | undefined;
  key_window?: { activates_at?: string | undefined; retired_at?: string | undefined } | undefined;
  /** Set when the signature verifies with a key that was withdrawn: it proves nothing (the key may have been stolen). */
  untrusted?: string;
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  expired?: boolean;
  expires_at?: string | undefined;
  /** Only when storage was consulted. */
  revoked?: boolean;
  revocation?: string[];
}

/**
 * Offline verification of a token agentauth signed, against its key archive (every key it ever used, archived ones
 * included). A key that was never agentauth's, or a signature that does not match, is reported invalid; validity of
 * the signature is independent of expiry.
 */
export async function verifyAgainstArchive(token: string, archive: readonly ArchivedKey[], now = new Date()): Promise<VerificationReport> {
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(token) as Record<string, unknown>;
  } catch {
    return { signature: 'invalid', reason: 'not a JWS compact serialisation' };
  }
  const kid = typeof header.kid === 'string' ? header.kid : undefined;
  const key = archive.find((k) => k.kid === kid);
  if (!key) return { signature: 'invalid', reason: `key ${kid ?? '(no kid)'} was never one of this agentauth's signing keys`, kid, header };
  if (header.alg !== key.alg) return { signature: 'invalid', reason: `header alg ${String(header.alg)} is not the key's alg ${key.alg}`, kid, header };
  try {
    await compactVerify(token, await importJWK(key.jwk as JWK, key.alg), { algorithms: [key.alg] });
  } catch (err) {
    return { signature: 'invalid', reason: `signature does not verify with key ${key.kid} (${(err as Error).message})`, kid, header };
  }
  const claims = decodeJwt(token) as Record<string, unknown>;
  const exp = typeof claims.exp === 'number' ? claims.exp : undefined;
  return {
    signature: 'valid',
    ...(key.state === 'withdrawn'
      ? { untrusted: `key ${key.kid} was withdrawn at ${key.withdrawn_at ?? '(time not recorded)'}: whoever stole it can sign anything, so its signature proves nothing` }
      : {}),
    kid,
    key_state: key.state,
    key_window: { activates_at: key.activates_at, retired_at: key.retired_at },
    header,
    claims,
    expired: exp !== undefined && exp * 1000 <= now.getTime(),
    expires_at: exp !== undefined ? new Date(exp * 1000).toISOString() : undefined,
  };
}

/**
 * Whether `audit prune` may have removed revocation records of this token: it did if any chain was pruned up to a
 * record written at or after the token was issued (a revocation is recorded after issuance; records are removed in
 * time order). Says since when, or undefined when nothing of the token's lifetime was pruned.
 */
export function prunedRevocations(checkpoints: readonly AuditCheckpoint[], claims: Record<string, unknown>): string | undefined {
  const iat = typeof claims.iat === 'number' ? claims.iat : undefined;
  let latest: string | undefined;
  for (const c of checkpoints) if (latest === undefined || Date.parse(c.time) > Date.parse(latest)) latest = c.time;
  if (latest === undefined || (iat !== undefined && iat * 1000 > Date.parse(latest))) return undefined;
  return `the audit log was pruned up to ${latest} (agentauth audit prune): a revocation of this token, its grant or its client recorded by then is no longer in it; look in the archive exported before the prune`;
}

/** Most revocation records `revocationFacts` reads for one token (one suffices; a client disabled again and again has many). */
const REVOCATION_RECORDS_READ = 1000;

/**
 * Whether storage says the token was revoked: the jti denylist (kept until exp), and the audit log, which keeps
 * token, grant and client revocations until `audit prune` removes them (so this still answers long after the token
 * expired; prunedRevocations says when it no longer can).
 */
export async function revocationFacts(storage: Storage, claims: Record<string, unknown>, checkpoints: readonly AuditCheckpoint[]): Promise<string[]> {
  const facts: string[] = [];
  const jti = typeof claims.jti === 'string' ? claims.jti : undefined;
  const grantId = typeof claims.grant_id === 'string' ? claims.grant_id : undefined;
  const clientId = typeof claims.client_id === 'string' ? claims.client_id : undefined;
  const iat = typeof claims.iat === 'number' ? claims.iat : undefined;
  if (jti && (await storage.revokedTokens.isRevoked(jti))) facts.push(`jti ${jti} is on the revocation denylist`);
  // A disable revokes every token the client was issued up to it (server/admin/client-admin.ts), also after an enable.
  if (clientId) {
    const revokedBefore = await tokensRevokedBefore(storage.model('Client'))(clientId);
    if (revokedBefore !== undefined && revokedByDisable(iat, revokedBefore)) {
      facts.push(`client ${clientId} was disabled at ${new Date(revokedBefore * 1000).toISOString()}, after this token was issued: its tokens up to then are revoked`);
    }
  }
  if (grantId && (await storage.revokedTokens.anyRevoked([grantMark(grantId)]))) facts.push(`grant ${grantId} has a revocation mark (its tokens were revoked)`);
  const lineage = lineageOf(claims[LINEAGE_CLAIM]);
  if (lineage === undefined) facts.push(`${LINEAGE_CLAIM} is malformed: the token counts as revoked`);
  else if (await storage.revokedTokens.anyRevoked(lineage)) facts.push('a token, grant or client this token was exchanged from (RFC 8693) was revoked: its lineage is marked');
  // The audit log's revocation records of this jti, grant or client, found through the store's index (not by reading
  // the log): a record of another kind that happens to name the same string is not among them.
  // A person's token (its sub is not its client's own id: a client's token is about itself) is revoked by a revocation
  // of the person (`subjects revoke`) made after it was issued; one exchanged from it (RFC 8693) keeps the person's sub.
  const sub = typeof claims.sub === 'string' && claims.sub !== clientId ? claims.sub : undefined;
  const found = await storage.audit.revocations({ jti, grantId, clientId, sub }, REVOCATION_RECORDS_READ);
  // Records at or below a pruned chain's checkpoint are outside every verification (left by an interrupted prune, or
  // planted): not taken as facts.
  const prunedThrough = new Map(checkpoints.map((c) => [c.chain, c.seq]));
  const records = found.filter((r) => !(r.seq <= (prunedThrough.get(chainOf(r)) ?? 0)));
  for (const r of records) {
    const chain = chainOf(r);
    const where = `audit ${chain ? `chain ${chain} ` : ''}seq ${r.seq}`;
    if (r.type === 'token.revoked') facts.push(`token revoked at ${r.time} (${where})`);
    if (r.type === 'grant.revoked') facts.push(`grant ${grantId} revoked at ${r.time} (${where})`);
    if (r.type === 'client.deleted') facts.push(`client ${clientId} deleted at ${r.time} (${where})`);
    if (r.type === 'subject.revoked' && (iat ?? 0) <= Math.floor(Date.parse(r.time) / 1000)) {
      facts.push(`the access of ${sub} was revoked at ${r.time}, after this token was issued (${where})`);
    }
    // A disable of a client that was disabled already changed nothing (already_disabled): the earlier one is the fact.
    if (r.type === 'client.disabled' && r.details.already_disabled !== true && (iat ?? 0) <= Math.floor(Date.parse(r.time) / 1000)) {
      facts.push(`client ${clientId} disabled at ${r.time}, after this token was issued (${where})`);
    }
  }
  if (found.length === REVOCATION_RECORDS_READ) facts.push(`the audit log holds more than ${REVOCATION_RECORDS_READ} revocation records for this token, its grant and its client: only the first ${REVOCATION_RECORDS_READ} were read`);
  return [...new Set(facts)];
}
