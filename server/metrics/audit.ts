import type { AuditEventInput } from '../audit/chain.js';
import type { AuditRecord } from '../../adapters/types.js';
import type { Metrics } from './registry.js';

/** What the audit metrics read from the audit log (server/audit/log.ts AuditLog). */
export interface MeasurableAuditLog {
  record(event: AuditEventInput): Promise<AuditRecord>;
  close(): Promise<void>;
  /** Events accepted and not yet written. */
  readonly backlog: number;
}

/**
 * The audit log, with each record() timed from acceptance to durable write (outcome ok) or refusal (outcome
 * error), and its backlog read at every scrape.
 */
export function measuredAudit(log: MeasurableAuditLog, metrics: Metrics): Pick<MeasurableAuditLog, 'record' | 'close'> {
  metrics.samplers.auditBacklog.current = () => log.backlog;
  return {
    async record(event) {
      const end = metrics.auditWriteDuration.startTimer();
      try {
        const record = await log.record(event);
        end({ outcome: 'ok' });
        return record;
      } catch (err) {
        end({ outcome: 'error' });
        throw err;
      }
    },
    close: () => log.close(),
  };
}
