import type { ModelStore, NonceStore } from '../adapters/types.js';
import { ClientWrites } from './admin/client-writes.js';
import type { ClientSecretHasher } from './client-secrets.js';

export interface RehashLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * During a rotation of the KEK (AGENTAUTH_KEK_FALLBACK set), a client's secret stored under the old KEK's pepper is
 * stored again under the KEK's as soon as the client presents it (the secret itself is never stored, so no command
 * can do this). Called by the client authentication that matched (server/provider.ts), it does not hold that
 * request: the write runs after it, as a compare-and-set on the record the hash was read from (ClientWrites), so a
 * secret rotated or a client deleted meanwhile is left as it is. One write per client at a time; a write that fails
 * is tried again at the client's next authentication.
 */
export function secretRehasher(deps: { clients: Pick<ModelStore, 'find' | 'upsert' | 'destroy'>; nonces: Pick<NonceStore, 'takeAttempt'>; hasher: ClientSecretHasher; log: RehashLog }): (clientId: string, storedHash: string, presented: string) => void {
  const writes = new ClientWrites(deps.clients, deps.nonces);
  const running = new Set<string>();
  return (clientId, storedHash, presented) => {
    if (running.has(clientId)) return;
    running.add(clientId);
    const rehashed = deps.hasher.hash(presented);
    writes
      .change(clientId, (current) => (current.client_secret === storedHash ? { write: { ...current, client_secret: rehashed } } : { keep: true }))
      .then(
        (change) => {
          if ('write' in change.decision) deps.log.info({ event: 'client.secret_rehashed', client_id: clientId }, "client secret stored again under the KEK's pepper (KEK rotation)");
        },
        (err: unknown) => deps.log.warn({ event: 'client.secret_rehash_failed', client_id: clientId, err: err instanceof Error ? err.message : String(err) }, 'client secret not yet stored under the KEK; tried again at its next authentication'),
      )
      .finally(() => running.delete(clientId));
  };
}
