import type { Storage } from '../adapters/types.js';
import { upgradeKeyStore } from '../keys/integrity.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import type { Logger } from './logger.js';

/**
 * The key store's one-time integrity upgrade (keys/integrity.ts) as a command line command runs it: logged, and
 * recorded in the audit log on the command line's chain (`key.integrity_upgraded`), as `start` records it on the
 * server's. Whoever upgrades first leaves nothing for the others to upgrade, so the record must come from that one.
 */
export async function upgradeKeyStoreRecorded(storage: Storage, kek: Buffer, log: Logger): Promise<void> {
  const upgraded = await upgradeKeyStore(storage.keys, kek);
  if (upgraded.keys.length === 0 && upgraded.transitions.length === 0) return;
  log.warn({ event: 'keys.integrity_upgraded', keys: upgraded.keys, transitions: upgraded.transitions }, 'key store upgraded: integrity MACs written for records stored without one');
  const audit = new AuditLog(storage.audit, { chain: writerChain('cli') });
  try {
    await audit.record({ type: 'key.integrity_upgraded', details: { keys: upgraded.keys, transitions: upgraded.transitions, by: 'cli' } });
  } finally {
    await audit.close();
  }
}
