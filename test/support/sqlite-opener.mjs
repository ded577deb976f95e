// A separate process opening a SQLite data directory at an agreed moment, for test/contract/sqlite-store.test.ts: as
// the workers of `agentauth start --workers N` do on a fresh data directory. It loads the built adapter (dist/, so
// `npm run build` first), waits for the moment (test/support/start-signal.mjs), opens the store, writes one row
// through it and prints the outcome as one JSON line.
//   node test/support/sqlite-opener.mjs <dataDir>
import { readyThenGo } from './start-signal.mjs';

const [dataDir] = process.argv.slice(2);
const { SqliteStorage } = await import(new URL('../../dist/adapters/sqlite.js', import.meta.url).href);

await readyThenGo();
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
