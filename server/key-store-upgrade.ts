import type { Storage } from '../adapters/types.js';
import { upgradeKeyStore } from '../keys/integrity.js';
import { resealKeyStore } from '../keys/kek-rotation.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import type { Logger } from './logger.js';

/**
 * What a command line command does to the key store before it reads or writes keys, as `start` does at every start,
 * each step logged and recorded in the audit log on the command line's chain: the one-time integrity upgrade
 * (keys/integrity.ts, `key.integrity_upgraded`), and, while AGENTAUTH_KEK_FALLBACK names the KEK being rotated away
 * from, the records still under it re-sealed under the KEK (keys/kek-rotation.ts, `key.resealed`). Whoever does a
 * step first leaves nothing for the others, so the record must come from that one.
 */
export async function prepareKeyStore(storage: Storage, kek: Buffer, fallback: Buffer | undefined, log: Logger): Promise<void> {
  const upgraded = await upgradeKeyStore(storage.keys, kek);
  const resealed = fallback ? await resealKeyStore(storage.keys, kek, fallback) : { keys: [], transitions: [] };
  const events = [];
  if (upgraded.keys.length > 0 || upgraded.transitions.length > 0) {
    log.warn({ event: 'keys.integrity_upgraded', keys: upgraded.keys, transitions: upgraded.transitions }, 'key store upgraded: integrity MACs written for records stored without one');
    events.push({ type: 'key.integrity_upgraded', details: { keys: upgraded.keys, transitions: upgraded.transitions, by: 'cli' } });
  }
  if (resealed.keys.length > 0 || resealed.transitions.length > 0) {
    log.warn({ event: 'keys.resealed', keys: resealed.keys, transitions: resealed.transitions }, 'key store re-sealed: records under the fallback KEK written again under the KEK');
    events.push({ type: 'key.resealed', details: { keys: resealed.keys, transitions: resealed.transitions, by: 'cli' } });
  }
  if (events.length === 0) return;
  const audit = new AuditLog(storage.audit, { chain: writerChain('cli') });
  try {
    for (const event of events) await audit.record(event);
  } finally {
    await audit.close();
  }
}
