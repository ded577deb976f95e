import cluster from 'node:cluster';
import { hostname } from 'node:os';

import { AUDIT_CHAIN_ID } from '../../adapters/types.js';

/**
 * The audit chain a process appends to: `<host>:<port>#<worker>` for a server process (worker 0 without --workers,
 * the cluster worker id with it), `<host>#cli` for the CLI. Unique among the servers running on a host (they listen
 * on different ports) and stable across restarts, so a restarted process continues its chain. Should two processes
 * still share one (AGENTAUTH_AUDIT_CHAIN set alike, two CLI runs at once) they stay correct and only contend for its
 * head. AGENTAUTH_AUDIT_CHAIN overrides it for the server (validated by the configuration).
 */
export function writerChain(role: { server: { port: number } } | 'cli', configured?: string): string {
  if (configured !== undefined) return configured;
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 70) || 'host';
  const chain = role === 'cli' ? `${host}#cli` : `${host}:${role.server.port}#${cluster.worker?.id ?? 0}`;
  return AUDIT_CHAIN_ID.test(chain) ? chain : 'host#fallback';
}
