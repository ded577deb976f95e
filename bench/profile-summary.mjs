#!/usr/bin/env node
// Summarises V8 CPU profiles (node --cpu-prof): where the time went, by package and by function (self and inclusive).
//   node bench/profile-summary.mjs <file.cpuprofile | directory> [--top N]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Which package (or agentauth module, or V8 bucket) a call frame belongs to. */
export function category(frame) {
  const { url = '', functionName = '' } = frame;
  if (!url) {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(idle)') return 'idle';
    if (functionName === '(program)') return 'V8/native (program)';
    return `native ${functionName || '(anonymous)'}`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `agentauth ${url.slice(dist + '/dist/'.length).replace(/\.js$/, '')}`;
  if (url.startsWith('node:')) return url.startsWith('node:internal/') ? `node ${url.slice('node:internal/'.length).split('/')[0]}` : url;
  if (url.includes('/bench/')) return `bench ${url.slice(url.indexOf('/bench/') + 7)}`;
  return url;
}

const frameKey = (f) => `${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
function shortUrl(url = '') {
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + '/node_modules/'.length);
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, '');
}

/** { totalMs, idleMs, categories: [[name, ms]], self: [[fn, ms]], inclusive: [[fn, ms]] } for one profile. */
export function summarize(profile, top = 25) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfByNode = new Map();
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i += 1) {
    const dt = (timeDeltas[i + 1] ?? 0) / 1000; // each delta is the time until the next sample
    selfByNode.set(samples[i], (selfByNode.get(samples[i]) ?? 0) + dt);
  }
  const cats = new Map();
  const self = new Map();
  const incl = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, t] of selfByNode) {
    const node = byId.get(id);
    const f = node.callFrame;
    if (f.functionName === '(idle)') {
      idle += t;
      continue;
    }
    total += t;
    const cat = category(f);
    cats.set(cat, (cats.get(cat) ?? 0) + t);
    const key = frameKey(f);
    self.set(key, (self.get(key) ?? 0) + t);
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur).callFrame;
      if (!cf.url && cf.functionName === '(root)') continue;
      const k = frameKey(cf);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + t);
    }
  }
  const sorted = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    totalMs: total,
    idleMs: idle,
    categories: sorted(cats),
    self: sorted(self).slice(0, top),
    inclusive: sorted(incl).slice(0, top),
  };
}

export function profileFiles(path) {
  if (statSync(path).isDirectory()) return readdirSync(path).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(path, f)).sort();
  return [path];
}

/** Sums several profiles (e.g. the workers of one run) into one summary. */
export function summarizeFiles(files, top = 25) {
  const parts = files.map((f) => summarize(JSON.parse(readFileSync(f, 'utf8')), 10_000));
  const merge = (key) => {
    const m = new Map();
    for (const p of parts) for (const [k, v] of p[key]) m.set(k, (m.get(k) ?? 0) + v);
    return [...m.entries()].sort((a, b) => b[1] - a[1]);
  };
  return {
    files,
    totalMs: parts.reduce((a, p) => a + p.totalMs, 0),
    idleMs: parts.reduce((a, p) => a + p.idleMs, 0),
    categories: merge('categories'),
    self: merge('self').slice(0, top),
    inclusive: merge('inclusive').slice(0, top),
  };
}

export function renderSummary(s, top = 25) {
  const share = (ms) => `${((ms / s.totalMs) * 100).toFixed(1).padStart(5)} %`;
  const perReq = (ms) => (s.requests ? `${((ms * 1000) / s.requests).toFixed(1).padStart(7)} µs/req  ` : '');
  const rows = (list) => list.slice(0, top).map(([k, ms]) => `  ${share(ms)}  ${ms.toFixed(0).padStart(7)} ms  ${perReq(ms)}${k}`).join('\n');
  return [
    `busy ${s.totalMs.toFixed(0)} ms (idle ${s.idleMs.toFixed(0)} ms) in ${s.files?.length ?? 1} profile(s) of the main thread` +
      (s.requests ? `; ${s.requests} requests answered (warm-up + measured): ${((s.totalMs * 1000) / s.requests).toFixed(0)} µs busy per request` : ''),
    'by package / module (self time):',
    rows(s.categories),
    'functions by self time:',
    rows(s.self),
    'functions by inclusive time (time with the function on the stack):',
    rows(s.inclusive),
  ].join('\n');
}

/** Requests answered by the run a profile directory belongs to (meta.json written by bench/run.mjs). */
function requestsOf(dir) {
  try {
    return JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')).requests;
  } catch {
    return undefined;
  }
}

/** Per-request main-thread time of two profiled runs side by side (e.g. bare and agentauth), largest differences first. */
export function renderDiff(dirA, dirB, top = 25) {
  const [a, b] = [dirA, dirB].map((d) => ({ s: summarizeFiles(profileFiles(d), 100_000), n: requestsOf(d) }));
  if (!a.n || !b.n) throw new Error('--diff needs profile directories written by bench/run.mjs --profile (meta.json)');
  const table = (key) => {
    const ma = new Map(a.s[key]);
    const mb = new Map(b.s[key]);
    const rows = [...new Set([...ma.keys(), ...mb.keys()])].map((k) => [k, ((ma.get(k) ?? 0) * 1000) / a.n, ((mb.get(k) ?? 0) * 1000) / b.n]);
    rows.sort((x, y) => Math.abs(y[2] - y[1]) - Math.abs(x[2] - x[1]));
    return rows.slice(0, top).map(([k, x, y]) => `  ${x.toFixed(1).padStart(8)} ${y.toFixed(1).padStart(8)} ${(y - x >= 0 ? '+' : '') + (y - x).toFixed(1).padStart(7)}  ${k}`).join('\n');
  };
  return [
    `µs of main-thread time per request: A = ${dirA} (${a.n} requests), B = ${dirB} (${b.n} requests)`,
    `busy: ${((a.s.totalMs * 1000) / a.n).toFixed(1)} vs ${((b.s.totalMs * 1000) / b.n).toFixed(1)} µs/req`,
    '         A        B       Δ   by package / module',
    table('categories'),
    '         A        B       Δ   by function (self)',
    table('self'),
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const topIdx = args.indexOf('--top');
  const top = topIdx >= 0 ? Number(args.splice(topIdx, 2)[1]) : 25;
  const diffIdx = args.indexOf('--diff');
  if (diffIdx >= 0) {
    const [a, b] = args.splice(diffIdx, 3).slice(1);
    process.stdout.write(`${renderDiff(a, b, top)}\n`);
    process.exit(0);
  }
  if (args.length === 0) {
    process.stderr.write('usage: node bench/profile-summary.mjs <file.cpuprofile | directory>... [--top N]\n       node bench/profile-summary.mjs --diff <dir A> <dir B> [--top N]\n');
    process.exit(2);
  }
  for (const path of args) {
    const summary = summarizeFiles(profileFiles(path), top);
    if (statSync(path).isDirectory()) summary.requests = requestsOf(path);
    process.stdout.write(`== ${path}\n${renderSummary(summary, top)}\n\n`);
  }
}
