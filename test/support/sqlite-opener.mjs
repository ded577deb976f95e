// A separate process opening a SQLite data directory at an agreed moment, for test/contract/sqlite-store.test.ts: as
// the workers of `agentauth start --workers N` do on a fresh data directory. It loads the built adapter (dist/, so
// `npm run build` first), prints "ready", waits for "go <epoch ms>" on stdin, spins until that moment (every opener
// gets the same one), opens the store, writes one row through it and prints the outcome as one JSON line.
//   node test/support/sqlite-opener.mjs <dataDir>
import { createInterface } from 'node:readline';

const [dataDir] = process.argv.slice(2);
const { SqliteStorage } = await import(new URL('../../dist/adapters/sqlite.js', import.meta.url).href);

process.stdout.write('ready\n');
let at = Date.now();
for await (const line of createInterface({ input: process.stdin })) {
  const match = /^go (\d+)$/.exec(line);
  if (match) {
    at = Number(match[1]);
    break;
  }
}
while (Date.now() < at) {
  // spin: a timer would wake each opener at a slightly different moment
}
const storage = new SqliteStorage({ dataDir });
try {
  await storage.init();
  const inserted = await storage.model('ReplayDetection').insertOnce(`opener-${process.pid}`, { kind: 'ReplayDetection', iss: 'opener' }, 60);
  process.stdout.write(`${JSON.stringify({ ok: inserted })}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: err instanceof Error ? err.message : String(err) })}\n`);
} finally {
  await storage.close().catch(() => undefined);
}
