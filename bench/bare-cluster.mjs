// Bare node-oidc-provider under node:cluster (BARE_WORKERS processes sharing the port), the reference for the
// `workers` scenario: how CPU per request changes from one process to two on this machine when the server is
// oidc-provider alone. Each worker is bench/bare-provider.mjs with its own in-memory adapter and signing key (nothing
// is shared between them, so this is a CPU reference for client_credentials, not a usable deployment).
import cluster from 'node:cluster';

const workers = Number(process.env.BARE_WORKERS ?? 1);
if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  cluster.on('exit', (_worker, code) => process.exit(code ?? 1));
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      process.exit(0);
    });
  }
} else {
  await import('./bare-provider.mjs');
}
