// Jest global setup.
// 1. Every temporary directory the suite makes (data directories, configuration files, key files, FerretDB's own data)
//    goes under one directory for this run, which global-teardown.js removes: the suite makes about a thousand, and
//    left in the system's temporary directory they pile up run after run. TMPDIR is read by os.tmpdir() in the Jest
//    workers and in every server a test spawns, since both inherit this process's environment.
// 2. The storage contract and HTTP suites run against a real MongoDB wire-protocol server. With MONGODB_URI set (CI,
//    or your own MongoDB), that server is used. Without it, the FerretDB test server is built (cached) and started
//    here for this run, and stopped by global-teardown.js.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ferretdbBinary, startFerretdb } from './ferretdb.js';

export default async function globalSetup() {
  const runDir = mkdtempSync(join(tmpdir(), 'agentauth-test-run-'));
  process.env.TMPDIR = runDir;
  globalThis.__agentauthRunDir = runDir;

  if (process.env.MONGODB_URI) return;
  process.env.AGENTAUTH_FERRETDB_BIN ??= ferretdbBinary();
  const server = await startFerretdb({ bin: process.env.AGENTAUTH_FERRETDB_BIN });
  process.env.MONGODB_URI = server.uri;
  globalThis.__agentauthFerretdb = server;
  process.stdout.write(`\nstarted FerretDB test server at ${server.uri} (MONGODB_URI was not set)\n`);
}
