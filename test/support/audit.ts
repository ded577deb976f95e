import type { AuditRecord, AuditStore } from '../../adapters/types.js';

/** Every audit record in storage, of every chain (the server's, the CLI's). */
export async function allAuditRecords(audit: AuditStore): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  for (const chain of await audit.chains()) out.push(...(await audit.list(1, 1_000_000, chain)));
  return out;
}
