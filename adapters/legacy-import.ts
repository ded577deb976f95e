import { access, rename } from 'node:fs/promises';
import { join } from 'node:path';

import { FileAuditStore } from './file-audit.js';
import { FileKeyStore } from './file-keys.js';
import type { Storage } from './types.js';

/** The files of the data-directory layout before the SQLite store: keys, their transitions, the audit log. */
export const LEGACY_FILES = ['keys.json', 'key-transitions.json', 'audit.jsonl'] as const;
/** What an imported file is renamed to, so it is imported once and kept for reference. */
export const IMPORTED_SUFFIX = '.imported';

export interface LegacyImportReport {
  keys: number;
  transitions: number;
  auditRecords: number;
  chains: number;
  files: string[];
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/** Why a store and a data directory's keys.json holding different keys are refused (start and `config check` say it alike). */
export function twoKeySetsMessage(dataDir: string, storedKids: readonly string[], foreignKids: readonly string[]): string {
  return `the store already holds signing keys (${storedKids.join(', ')}) and ${join(dataDir, 'keys.json')} holds others (${foreignKids.join(', ')}); move one of them away and start again`;
}

/**
 * Imports a data directory written in the previous layout (signing keys in `keys.json`, their transitions in
 * `key-transitions.json`, the audit log in `audit.jsonl`) into `storage`, once: records are copied as they are
 * (their integrity MACs and audit hashes included, so they verify exactly as before), then each file is renamed to
 * `<name>.imported`. Inserts are insert-only and idempotent per id, so an import cut short by a crash completes at
 * the next start. Returns undefined when there was nothing to import.
 */
export async function importLegacyLayout(dataDir: string, storage: Pick<Storage, 'keys' | 'audit'>): Promise<LegacyImportReport | undefined> {
  const present: string[] = [];
  for (const name of LEGACY_FILES) if (await exists(join(dataDir, name))) present.push(name);
  if (present.length === 0) return undefined;

  const report: LegacyImportReport = { keys: 0, transitions: 0, auditRecords: 0, chains: 0, files: present };
  const legacyKeys = new FileKeyStore(dataDir);
  const stored = new Set((await storage.keys.list()).map((k) => k.kid));
  const foreign = (await legacyKeys.list()).filter((k) => !stored.has(k.kid));
  if (stored.size > 0 && foreign.length > 0) {
    // Two key sets for one server: importing would lose one of them (their seqs collide). The operator decides.
    throw new Error(twoKeySetsMessage(dataDir, [...stored], foreign.map((k) => k.kid)));
  }
  // Transitions before keys: a key never appears without the transitions that date it.
  for (const t of await legacyKeys.transitions()) if (await storage.keys.addTransition(t)) report.transitions += 1;
  for (const k of await legacyKeys.list()) if (await storage.keys.insert(k)) report.keys += 1;

  const legacyAudit = new FileAuditStore(dataDir);
  for (const chain of await legacyAudit.chains()) {
    report.chains += 1;
    const from = ((await storage.audit.head(chain))?.seq ?? 0) + 1;
    for (let seq = from; ; ) {
      const batch = await legacyAudit.list(seq, 1000, chain);
      if (batch.length === 0) break;
      const inserted = await storage.audit.insertBatch(batch);
      report.auditRecords += inserted;
      if (inserted < batch.length) {
        throw new Error(`audit chain ${JSON.stringify(chain)}: seq ${batch[inserted]!.seq} is already taken in the store with a different record; the import stopped`);
      }
      seq = batch[batch.length - 1]!.seq + 1;
    }
  }
  for (const name of present) await rename(join(dataDir, name), join(dataDir, `${name}${IMPORTED_SUFFIX}`));
  return report;
}
