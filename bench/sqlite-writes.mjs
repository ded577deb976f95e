#!/usr/bin/env node
// The embedded store's writes in isolation: what a DPoP token costs it (a replay record, SqliteModelStore.insertOnce,
// and one audit record, SqliteAuditStore.insertBatch, issued in the same event-loop turn), `--concurrency` tokens at a
// time, on a fresh data directory with the shipped settings (WAL, synchronous FULL). Prints the CPU per token of the
// main thread and of the other threads (the writer thread, GC) from /proc (bench/lib/proc.mjs). Concurrency 1 is one
// token per commit; higher concurrency shows how a commit's fixed cost spreads over a larger group. `npm run build` first.
//
//   for c in 1 2 4 16; do node bench/sqlite-writes.mjs --concurrency $c; done
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { SqliteStorage } from '../dist/adapters/sqlite.js';
import { threadCpuMicros } from './lib/proc.mjs';
import { tokenWrites } from './lib/token-writes.mjs';

const { values: opts } = parseArgs({
  options: { concurrency: { type: 'string', default: '1' }, tokens: { type: 'string', default: '8000' } },
});
const concurrency = Number(opts.concurrency);
const tokens = Number(opts.tokens);

const dataDir = mkdtempSync(join(tmpdir(), 'agentauth-sqlite-writes-'));
const storage = new SqliteStorage({ dataDir });
await storage.init();
const token = tokenWrites(storage);

for (let i = 0; i < 2000; i += 1) await token(); // warm-up: JIT, statements prepared, file grown
const before = threadCpuMicros(process.pid);
const started = process.hrtime.bigint();
let issued = 0;
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (issued < tokens) {
      issued += 1;
      await token();
    }
  }),
);
const ms = Number(process.hrtime.bigint() - started) / 1e6;
const after = threadCpuMicros(process.pid);
const main = (after.main - before.main) / issued;
const other = (after.other - before.other) / issued;
console.log(
  `concurrency ${concurrency}: ${issued} tokens in ${ms.toFixed(0)} ms (${((issued / ms) * 1000).toFixed(0)}/s); ` +
    `CPU per token: main thread ${main.toFixed(1)} µs, other threads ${other.toFixed(1)} µs`,
);
await storage.close();
rmSync(dataDir, { recursive: true, force: true });
