#!/usr/bin/env node
// Two processes writing one SQLite file as fast as their writers let them, as two workers of `agentauth start
// --workers 2` (or a worker and the CLI) do: each keeps `--inflight` / `--inflight2` one-row inserts queued on its own
// SqliteWriter (adapters/sqlite-writer.ts) for `--seconds`, and reports how many committed, how many failed (waited out
// `--busy` ms for the other's lock), and the latency of its writes (p50, p99, max, ms). Shows how the writers take
// turns at the write lock: throughput when both are busy, and whether a light writer beside a busy one gets its turn.
// `--dist` runs another build's writer (a patched copy of dist/). `npm run build` first.
//
//   node bench/sqlite-lock-turns.mjs                          # both writers keep 16 queued
//   node bench/sqlite-lock-turns.mjs --inflight 64 --inflight2 1   # a busy writer beside one write at a time
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { quietSqliteWarning } from './lib/proc.mjs';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    inflight: { type: 'string', default: '16' },
    inflight2: { type: 'string' },
    busy: { type: 'string', default: '100' },
    dist: { type: 'string', default: fileURLToPath(new URL('../dist', import.meta.url)) },
    child: { type: 'string' },
  },
});

quietSqliteWarning();

if (opts.child) {
  const { SqliteWriter } = await import(pathToFileURL(join(resolve(opts.dist), 'adapters', 'sqlite-writer.js')).href);
  const writer = new SqliteWriter({ file: opts.child, busyTimeoutMs: Number(opts.busy), synchronous: 'full', timeoutMs: Number(opts.busy) + 5000 });
  await writer.start();
  const until = Date.now() + Number(opts.seconds) * 1000;
  const latencies = [];
  let committed = 0;
  let failed = 0;
  let n = 0;
  const lane = async () => {
    while (Date.now() < until) {
      const started = performance.now();
      try {
        await writer.run('insert', [{ sql: 'INSERT INTO t (k) VALUES (?)', params: [`${process.pid}-${(n += 1)}`] }]);
        committed += 1;
      } catch {
        failed += 1;
      }
      latencies.push(performance.now() - started);
    }
  };
  await Promise.all(Array.from({ length: Number(opts.inflight) }, lane));
  await writer.close();
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))].toFixed(2);
  process.send({ inflight: Number(opts.inflight), committed, failed, p50: at(0.5), p99: at(0.99), max: latencies.at(-1).toFixed(1) });
} else {
  const dir = mkdtempSync(join(tmpdir(), 'agentauth-lock-turns-'));
  const file = join(dir, 'store.db');
  const db = new DatabaseSync(file);
  db.exec('PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT PRIMARY KEY)');
  db.close();
  try {
    const results = await Promise.all(
      [opts.inflight, opts.inflight2 ?? opts.inflight].map(
        (inflight) =>
          new Promise((done, fail) => {
            const args = ['--child', file, '--inflight', inflight, '--seconds', opts.seconds, '--busy', opts.busy, '--dist', opts.dist];
            const child = fork(fileURLToPath(import.meta.url), args);
            let result;
            child.on('message', (m) => (result = m));
            child.on('exit', (code) => (result ? done(result) : fail(new Error(`writer exited with ${code} and no result`))));
          }),
      ),
    );
    console.log('| writer | queued | committed | failed | p50 ms | p99 ms | max ms |');
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    results.forEach((r, i) => console.log(`| ${i + 1} | ${r.inflight} | ${r.committed} | ${r.failed} | ${r.p50} | ${r.p99} | ${r.max} |`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
