// A separate process racing on one SQLite file, for test/contract/sqlite-store.test.ts. It opens the store from the
// built adapter (dist/, so `npm run build` first), waits for the moment both racers are given
// (test/support/start-signal.mjs), then goes through the ids in its own random order, starting `per` concurrent
// single-use operations of the kind named by `op` on each and yielding to the event loop between ids, and prints what
// it won, and when it started and finished, as one JSON line.
//   node test/support/sqlite-racer.mjs <dataDir> <op> <per> <id>...
import { readyThenGo } from './start-signal.mjs';

const [dataDir, op, perText, ...ids] = process.argv.slice(2);
const per = Number(perText);
const { SqliteStorage } = await import(new URL('../../dist/adapters/sqlite.js', import.meta.url).href);

const storage = new SqliteStorage({ dataDir, busyTimeoutMs: 10_000 });
await storage.init();

const attempt = {
  consume: (id) => storage.model('AuthorizationCode').consume(id),
  insertOnce: (id) => storage.model('ReplayDetection').insertOnce(id, { kind: 'ReplayDetection', iss: `pid-${process.pid}` }, 60),
  nonce: (id) => storage.nonces.consume(id),
  attempt: (id) => storage.nonces.takeAttempt(id, 5, 60),
}[op];
if (!attempt) throw new Error(`unknown op ${op}`);

await readyThenGo();

const order = [...ids].sort(() => Math.random() - 0.5);
const won = {};
const errors = [];
const started = Date.now();
for (const id of order) {
  const results = await Promise.allSettled(Array.from({ length: per }, () => attempt(id)));
  won[id] = results.filter((r) => r.status === 'fulfilled' && r.value === true).length;
  for (const r of results) if (r.status === 'rejected') errors.push(String(r.reason));
  await new Promise((resolve) => setImmediate(resolve));
}
const finished = Date.now();
await storage.close();
process.stdout.write(`${JSON.stringify({ pid: process.pid, won, errors, started, finished })}\n`);
