// What a DPoP client_credentials token writes to the embedded store, issued in one event-loop turn as the server does:
// the proof's replay record (SqliteModelStore.insertOnce) and one `token.issued` audit record (SqliteAuditStore.insertBatch).
import { randomBytes } from 'node:crypto';

/** A function that performs one token's writes on `storage` (an open SqliteStorage), its audit records on `chain`. */
export function tokenWrites(storage, chain = '') {
  const replay = storage.model('ReplayDetection');
  let seq = 0;
  return async () => {
    const jti = randomBytes(16).toString('base64url');
    await Promise.all([
      replay.insertOnce(jti, { iat: Math.floor(Date.now() / 1000), jti }, 120),
      storage.audit.insertBatch([
        { ...(chain ? { chain } : {}), seq: ++seq, time: new Date().toISOString(), type: 'token.issued', client_id: 'agent', details: { jti, grant_type: 'client_credentials', aud: 'https://api.example' }, prev_hash: 'a'.repeat(64), hash: 'b'.repeat(64) },
      ]),
    ]);
  };
}
