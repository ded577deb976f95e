#!/usr/bin/env node
// CPU of each thread of a running server, read from /proc/<pid>/task/<tid>/stat over a window: which thread a
// request's CPU goes to (the main thread, the SQLite writer thread, libuv's pool, V8's helpers). Start it, then a
// bench run in another shell; it waits for the server process, lets the warm-up pass, and reads the window.
//
//   node bench/thread-cpu.mjs --match 'dist/server/cli.js start' --after 14 --seconds 6 [--rate 1980]
//   node bench/run.mjs --only cc_dpop --targets embedded --rounds 1 --no-docs      # in another shell
//
// --match: a regular expression for the server's command line (the first process whose command line matches, other
// than this script). --rate: the requests per second the bench then reports for the run, to print µs per request.
// Linux names libuv's pool threads `libuv-worker`; the main thread is the one whose tid is the pid; Node's worker
// threads (the SQLite writer) and V8's helper threads are all named `node`, and are told apart by their share.
import { readdirSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { clkTck } from './lib/proc.mjs';

const { values: opts } = parseArgs({
  options: {
    match: { type: 'string' },
    after: { type: 'string', default: '14' },
    seconds: { type: 'string', default: '6' },
    rate: { type: 'string' },
  },
});
if (!opts.match) {
  process.stderr.write("usage: node bench/thread-cpu.mjs --match REGEX [--after 14] [--seconds 6] [--rate REQ_PER_S]\n");
  process.exit(2);
}
const pattern = new RegExp(opts.match);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function findPid() {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ');
      if (pattern.test(cmdline) && !cmdline.includes('thread-cpu.mjs')) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/** tid → { name, ticks (utime + stime), sys } for every thread of `pid`. */
function snapshot(pid) {
  const threads = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
      threads.set(Number(tid), { name, user: Number(f[11]), sys: Number(f[12]) });
    } catch {
      // exited meanwhile
    }
  }
  return threads;
}

let pid;
for (let i = 0; i < 240 && pid === undefined; i += 1) {
  pid = findPid();
  if (pid === undefined) await sleep(250);
}
if (pid === undefined) {
  process.stderr.write(`thread-cpu: no process matching ${pattern} within 60 s\n`);
  process.exit(1);
}
await sleep(Number(opts.after) * 1000);
const before = snapshot(pid);
const started = performance.now();
await sleep(Number(opts.seconds) * 1000);
const after = snapshot(pid);
const wall = (performance.now() - started) / 1000;

const tick = 1e6 / clkTck(); // µs per clock tick
const rate = opts.rate ? Number(opts.rate) : undefined;
const rows = [];
for (const [tid, b] of after) {
  const a = before.get(tid) ?? { user: b.user, sys: b.sys };
  const user = (b.user - a.user) * tick;
  const sys = (b.sys - a.sys) * tick;
  rows.push({ tid, name: tid === pid ? 'main thread' : b.name, user, sys });
}
rows.sort((x, y) => y.user + y.sys - (x.user + x.sys));
const per = (us) => (rate ? `${(us / wall / rate).toFixed(0)} µs/req` : '');
console.log(`pid ${pid}, ${wall.toFixed(2)} s window${rate ? `, ${rate} req/s` : ''}`);
console.log('| thread | tid | busy % of the window | user + sys µs/s | of it sys | per request |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
let total = 0;
for (const r of rows) {
  const us = r.user + r.sys;
  total += us;
  if (us === 0) continue;
  console.log(`| ${r.name} | ${r.tid} | ${((us / wall / 1e6) * 100).toFixed(0)} % | ${(us / wall).toFixed(0)} | ${(r.sys / wall).toFixed(0)} | ${per(us)} |`);
}
console.log(`| all threads | | ${((total / wall / 1e6) * 100).toFixed(0)} % | ${(total / wall).toFixed(0)} | | ${per(total)} |`);
