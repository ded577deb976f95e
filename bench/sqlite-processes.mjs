#!/usr/bin/env node
// The embedded store's writes for DPoP tokens (bench/lib/token-writes.mjs) from several processes at once, as under
// `agentauth start --workers N`: `--procs` processes share `--rate` tokens a second between them, each on its own
// connection and writer thread, all on one data directory (`--shared`) or each on its own. Prints the CPU per token of
// all processes together (main threads, other threads) from /proc over `--seconds` after a warm-up. One process at
// the full rate against N processes on separate files shows what splitting the writes costs (each writer's commits
// carry fewer of them); separate against shared files, what sharing the file's write lock costs. `npm run build` first.
//
//   node bench/sqlite-processes.mjs --procs 1; node bench/sqlite-processes.mjs --procs 2; node bench/sqlite-processes.mjs --procs 2 --shared
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { quietSqliteWarning, threadCpuMicros } from './lib/proc.mjs';
import { tokenWrites } from './lib/token-writes.mjs';

const { values: opts } = parseArgs({
  options: {
    procs: { type: 'string', default: '1' },
    rate: { type: 'string', default: '700' },
    seconds: { type: 'string', default: '8' },
    shared: { type: 'boolean', default: false },
    child: { type: 'string' },
    dir: { type: 'string' },
  },
});

if (opts.child) {
  quietSqliteWarning();
  const { SqliteStorage } = await import('../dist/adapters/sqlite.js');
  const storage = new SqliteStorage({ dataDir: opts.dir });
  await storage.init();
  // Each process its own audit chain, as each worker has.
  const token = tokenWrites(storage, `bench:1#${opts.child}`);
  const rate = Number(opts.rate);
  let done = 0;
  let failed = 0;
  let inFlight = 0;
  let stopping = false;
  process.on('message', (m) => {
    if (m === 'count') process.send({ done, failed });
    if (m === 'stop') stopping = true;
  });
  // Every 2 ms, the tokens due by now: a steady rate whatever each one takes.
  const started = performance.now();
  let launched = 0;
  while (!stopping) {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    for (; launched < due; launched += 1) {
      inFlight += 1;
      // A write that fails (a 503 in the server) is counted, not thrown: the run goes on and says so.
      token().then(
        () => {
          done += 1;
          inFlight -= 1;
        },
        () => {
          failed += 1;
          inFlight -= 1;
        },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  while (inFlight > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  await storage.close();
  process.send({ stopped: true }, () => process.exit(0));
} else {
  const procs = Number(opts.procs);
  const base = mkdtempSync(join(tmpdir(), 'agentauth-sqlite-processes-'));
  const kids = Array.from({ length: procs }, (_, i) =>
    fork(fileURLToPath(import.meta.url), ['--child', String(i + 1), '--rate', String(Number(opts.rate) / procs), '--dir', opts.shared ? base : join(base, String(i))]),
  );
  const ask = (kid, what) =>
    new Promise((resolve) => {
      kid.once('message', resolve);
      kid.send(what);
    });
  const count = async () => {
    const answers = await Promise.all(kids.map((k) => ask(k, 'count')));
    return { done: answers.reduce((n, m) => n + m.done, 0), failed: answers.reduce((n, m) => n + m.failed, 0) };
  };
  await new Promise((resolve) => setTimeout(resolve, 4000)); // warm-up: JIT, statements prepared, files grown
  const before = { cpu: kids.map((k) => threadCpuMicros(k.pid)), ...(await count()) };
  await new Promise((resolve) => setTimeout(resolve, Number(opts.seconds) * 1000));
  const after = { cpu: kids.map((k) => threadCpuMicros(k.pid)), ...(await count()) };
  await Promise.all(kids.map((k) => ask(k, 'stop')));
  const tokens = after.done - before.done;
  const failures = after.failed - before.failed;
  let main = 0;
  let other = 0;
  kids.forEach((_, i) => {
    main += after.cpu[i].main - before.cpu[i].main;
    other += after.cpu[i].other - before.cpu[i].other;
  });
  console.log(
    `${procs} process${procs > 1 ? 'es' : ''}${procs > 1 ? (opts.shared ? ', one file' : ', a file each') : ''}, ${opts.rate} tokens/s: ${tokens} tokens measured; ` +
      `CPU per token: main threads ${(main / tokens).toFixed(0)} µs, other threads ${(other / tokens).toFixed(0)} µs, total ${((main + other) / tokens).toFixed(0)} µs` +
      (failures > 0 ? `; ${failures} tokens' writes FAILED (the figures are not comparable)` : ''),
  );
  rmSync(base, { recursive: true, force: true });
}
