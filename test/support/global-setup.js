// Jest global setup: the storage contract and HTTP suites run against a real MongoDB wire-protocol server.
// With MONGODB_URI set (CI, or your own MongoDB), that server is used. Without it, the FerretDB test server is
// built (cached) and started here for this run, and stopped by global-teardown.js.
import { ferretdbBinary, startFerretdb } from './ferretdb.js';

export default async function globalSetup() {
  if (process.env.MONGODB_URI) return;
  process.env.AGENTAUTH_FERRETDB_BIN ??= ferretdbBinary();
  const server = await startFerretdb({ bin: process.env.AGENTAUTH_FERRETDB_BIN });
  process.env.MONGODB_URI = server.uri;
  globalThis.__agentauthFerretdb = server;
  process.stdout.write(`\nstarted FerretDB test server at ${server.uri} (MONGODB_URI was not set)\n`);
}
