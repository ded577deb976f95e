import cluster from 'node:cluster';
import { hostname } from 'node:os';

import { AUDIT_CHAIN_ID } from '../../adapters/types.js';

/**
 * The audit chain a process appends to: `<host>:<port>#<worker>` for a server process (worker 0 without --workers,
 * the cluster worker id with it), `<host>#cli` for the CLI. Unique among the servers running on a host (they listen
 * on different ports) and stable across restarts, so a restarted process continues its chain. Should two processes
 * still share one (AGENTAUTH_AUDIT_CHAIN set alike on two instances, two CLI runs at once) they stay correct and only
 * contend for its head. AGENTAUTH_AUDIT_CHAIN overrides it for the server (validated by the configuration); under
 * --workers each worker appends `#<worker id>` to it, since all of them read the same setting and would otherwise
 * share one chain (correct, but every worker but one loses each race for its head).
 */
export function writerChain(role: { server: { port: number } } | 'cli', configured?: string, workerId: number | undefined = cluster.worker?.id): string {
  if (configured !== undefined) {
    if (workerId === undefined) return configured;
    const suffix = `#${workerId}`;
    return `${configured.slice(0, 100 - suffix.length)}${suffix}`;
  }
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 70) || 'host';
  const chain = role === 'cli' ? `${host}#cli` : `${host}:${role.server.port}#${workerId ?? 0}`;
  return AUDIT_CHAIN_ID.test(chain) ? chain : 'host#fallback';
}
