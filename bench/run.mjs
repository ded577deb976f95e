#!/usr/bin/env node
// npm run bench: agentauth (embedded store, then the MongoDB-wire server) side by side with bare node-oidc-provider,
// one fresh server process per scenario, driven by autocannon on loopback. See bench/README.md.
import { execFileSync } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { MongoClient } from 'mongodb';

import { ferretdbBinary, startFerretdb } from '../test/support/ferretdb.js';
import { runLoad } from './lib/load.mjs';
import { cpuMicros, machineShare, machineTicks, peakRss, processTree, threadCpuMicros } from './lib/proc.mjs';
import { machineInfo, renderComparison, renderMarkdown, writeDocs } from './lib/report.mjs';
import { SCENARIOS } from './lib/scenarios.mjs';
import { ROOT, startAgentauth, startBare } from './lib/servers.mjs';
import { agentauthConfig } from './lib/shared.mjs';
import { profileFiles, renderSummary, summarizeFiles } from './profile-summary.mjs';

/**
 * Seconds of load before the measured window. V8 keeps compiling a server's hot path on its helper threads for
 * 10-20 s of load after start (measured on agentauth under 500 DPoP tokens/s: its four V8 helper threads used
 * ≈ 100 µs of CPU per token each 8 s after start, 85 % of it TurboFan, and ≈ 40 µs each from 20 s on); a 2 s warm-up
 * measured servers still compiling, and the server with more code to compile the most.
 */
const DEFAULT_WARMUP_SECONDS = 12;

const USAGE = `usage: node bench/run.mjs [options]     (npm run bench -- [options])
  --quick               smoke run: 2 s measured after 1 s warm-up (docs/performance.md is not rewritten)
  --seconds N           measured seconds per run (default 8)
  --warmup N            warm-up seconds per run (default 12: until V8 has stopped compiling the hot path)
  --connections N       concurrent connections (default 16)
  --rate N              offer at most N requests per second in the measured window (default: as many as answered);
                        CPU per request at a load that does not saturate the machine
  --rounds N            alternate bare and embedded N times per scenario and report the median
                        (default: 5 for cc_dpop, whose ratio to bare is a target; 1 for the others);
                        for "workers", alternate --workers 1 and --workers 2 N times per store (default 3; 1 with --quick)
  --only a,b            scenarios: ${SCENARIOS.map((s) => s.id).join(', ')}, workers
  --targets a,b         servers: embedded, mongodb, bare (default all)
  --compare FILE        print the changes against a saved results file
  --from FILE           do not run: render (and --compare) a saved results file
  --save NAME           also write bench/results/NAME.json (a baseline to commit)
  --docs / --no-docs    (do not) rewrite the results section of docs/performance.md
                        (default: only for a full, unprofiled, non-quick run)
  --profile             run the servers under node --cpu-prof; profiles and summaries in bench/results/profiles/
  --log-level LEVEL     agentauth LOG_LEVEL (default silent; bare oidc-provider never logs)
  --server-env K=V,...  extra environment for every server process (e.g. NODE_OPTIONS=--max-old-space-size=128)
  --cli FILE            run agentauth from another build's dist/server/cli.js (bench/ablate.mjs uses it)
environment:
  BENCH_MONGODB_URI     use this MongoDB for the MongoDB-wire runs instead of starting FerretDB
`;

const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    rate: { type: 'string' },
    rounds: { type: 'string' },
    only: { type: 'string' },
    targets: { type: 'string' },
    compare: { type: 'string' },
    from: { type: 'string' },
    save: { type: 'string' },
    docs: { type: 'boolean' },
    'no-docs': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    'log-level': { type: 'string', default: 'silent' },
    'server-env': { type: 'string' },
    cli: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (opt.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

const RESULTS_DIR = join(ROOT, 'bench', 'results');
const DOCS = join(ROOT, 'docs', 'performance.md');
const options = {
  seconds: Number(opt.seconds ?? (opt.quick ? 2 : 8)),
  warmup: Number(opt.warmup ?? (opt.quick ? 1 : DEFAULT_WARMUP_SECONDS)),
  connections: Number(opt.connections ?? 16),
  rate: opt.rate ? Number(opt.rate) : undefined,
  rounds: opt.rounds ? Number(opt.rounds) : undefined,
  quick: opt.quick,
  profile: opt.profile,
  logLevel: opt['log-level'],
  serverEnv: Object.fromEntries(
    (opt['server-env'] ?? '')
      .split(',')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  ),
};
const only = opt.only ? new Set(opt.only.split(',')) : undefined;
const targetFilter = opt.targets ? new Set(opt.targets.split(',')) : undefined;
for (const id of only ?? []) {
  if (id !== 'workers' && !SCENARIOS.some((s) => s.id === id)) throw new Error(`--only: no scenario ${id}`);
}

const log = (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const round = (n, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

/** Collection sizes of one database (documents written = growth during the measured window). */
async function collectionCounts(mongo, dbName) {
  const db = mongo.db(dbName);
  const out = {};
  for (const { name } of await db.listCollections({}, { nameOnly: true }).toArray()) {
    out[name] = await db.collection(name).estimatedDocumentCount();
  }
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function gitCommit() {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${head} + uncommitted changes` : head;
  } catch {
    return undefined;
  }
}

/** MongoDB driver operations counted so far by bench/lib/mongo-probe.mjs in each of `pids`, summed. */
async function probeCounts(probeDir, pids) {
  const asked = Date.now();
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGUSR2');
    } catch {
      // gone
    }
  }
  const total = {};
  for (const pid of pids) {
    const file = join(probeDir, `ops-${pid}.json`);
    for (let i = 0; i < 100; i += 1) {
      try {
        const snap = JSON.parse(readFileSync(file, 'utf8'));
        if (snap.at >= asked) {
          for (const [k, v] of Object.entries(snap.counts)) total[k] = (total[k] ?? 0) + v;
          break;
        }
      } catch {
        // not written yet
      }
      await sleep(20);
    }
  }
  return total;
}

async function startTarget(target, scenario, ferret) {
  const profileDir = options.profile ? join(RESULTS_DIR, 'profiles', `${scenario.id}-${target}`) : undefined;
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  // "embedded-w2": agentauth start --workers 2 on the embedded store (SQLite file shared by the workers); "bare-w2":
  // bare oidc-provider in 2 cluster workers (the workers scenario's reference, bench/bare-cluster.mjs).
  const workers = /-w(\d+)$/.exec(target)?.[1];
  if (target.startsWith('bare')) {
    return { server: await startBare({ profileDir, env: options.serverEnv, workers: workers === undefined ? undefined : Number(workers) }), profileDir };
  }
  const server = await startAgentauth({
    config: agentauthConfig(),
    mongoUri: target.startsWith('mongodb') ? ferret.uri : undefined,
    workers: workers === undefined ? undefined : Number(workers),
    profileDir,
    logLevel: options.logLevel,
    label: `${scenario.id}_${target}`,
    env: options.serverEnv,
    probeDir: target.startsWith('mongodb') ? mkdtempSync(join(tmpdir(), 'agentauth-bench-probe-')) : undefined,
    ...(opt.cli ? { cli: resolve(opt.cli) } : {}),
  });
  return { server, profileDir };
}

/** One fresh server, prepared, warmed up and measured for one scenario. */
async function measure(scenario, target, ctx, { warmup = options.warmup } = {}) {
  const t0 = Date.now();
  const { server, profileDir } = await startTarget(target, scenario, ctx.ferret);
  const base = { scenario: scenario.id, target };
  const served = { count: 0 };
  try {
    const state = (await scenario.prepare?.(server, options)) ?? {};
    const factor = scenario.poolFactor ?? 2;
    const poolSize = (rate, seconds) => Math.ceil(rate * seconds * factor) + options.connections * 4;
    const drive = (pool, seconds, rate) =>
      runLoad({ url: server.url, seconds, connections: options.connections, next: pool.next, verify: scenario.verify, onResponse: pool.onResponse, rate });

    let pool = await scenario.pool(server, state, poolSize(ctx.estimates.get(scenario.id) ?? scenario.estimate ?? 2000, warmup));
    const warm = await drive(pool, warmup);
    served.count += warm.requests;
    // Size the measured run's unique material on what the warm-up achieved (it only rises once warm).
    pool = await scenario.pool(server, state, poolSize(Math.max(warm.rps, ctx.estimates.get(scenario.id) ?? scenario.estimate ?? 50), options.seconds));

    const pids = processTree(server.pid);
    const mongoDb = target.startsWith('mongodb') ? server.dbName : undefined;
    const countsBefore = mongoDb ? await collectionCounts(ctx.mongo, mongoDb) : undefined;
    const opsBefore = server.probeDir ? await probeCounts(server.probeDir, pids) : undefined;
    const cpuBefore = pids.map(cpuMicros);
    const threadsBefore = pids.map(threadCpuMicros);
    const ferretBefore = ctx.ferret?.pid ? cpuMicros(ctx.ferret.pid) : 0;
    const machineBefore = machineTicks();
    const res = await drive(pool, options.seconds, options.rate);
    const machine = machineShare(machineBefore, machineTicks());
    served.count += res.requests;
    const cpuAfter = pids.map(cpuMicros);
    const threadsAfter = pids.map(threadCpuMicros);
    const ferretCpu = ctx.ferret?.pid ? cpuMicros(ctx.ferret.pid) - ferretBefore : undefined;
    const rss = peakRss(pids);
    const perProcess = cpuAfter.map((a, i) => a - cpuBefore[i]);
    const serverCpu = perProcess.reduce((a, b) => a + b, 0);
    const answered = Math.max(1, res.requests);

    const run = {
      ...base,
      rps: round(res.rps),
      p50: res.p50,
      p90: res.p90,
      p99: res.p99,
      max: res.max,
      requests: res.requests,
      ok: res.ok,
      non2xx: res.non2xx,
      mismatches: res.mismatches,
      errors: res.errors,
      timeouts: res.timeouts,
      statusCodes: res.statusCodes,
      exhausted: res.exhausted,
      elapsedSeconds: round(res.elapsedSeconds, 2),
      warmupRps: round(warm.rps),
      warmupRequests: warm.requests,
      serverCpuMicros: Math.round(serverCpu),
      cpuMicrosPerRequest: round(serverCpu / answered),
      serverCores: round(serverCpu / 1e6 / res.elapsedSeconds, 2),
      processes: pids.length,
      perProcessCpuMicros: pids.length > 1 ? perProcess.map(Math.round) : undefined,
      // Per process: main thread (the event loop) and the other threads (GC helpers, libuv pool, the SQLite writer).
      // (Two readings a few microseconds apart, in 10 ms ticks: clamp the difference so that neither part is negative.)
      threadCpuMicros: threadsAfter.map((t, i) => {
        const main = Math.max(0, Math.min(perProcess[i], t.main - threadsBefore[i].main));
        return { main: Math.round(main), other: Math.round(Math.max(0, perProcess[i] - main)) };
      }),
      rss: { maxMb: round(rss.maxMb), sumMb: round(rss.sumMb), perProcessMb: rss.perProcessMb.map((v) => round(v)) },
      loadGeneratorCpuMicrosPerRequest: round(res.loadGeneratorCpuMicros / answered),
      // Whole machine during the window: busy share of all cores, and steal (time the hypervisor took away).
      machineBusy: machine ? round(machine.busy, 3) : undefined,
      machineSteal: machine ? round(machine.steal, 3) : undefined,
    };
    if (mongoDb) {
      // Requests still in flight when the window closed are finished by the server: let them land, count per request sent.
      await new Promise((r) => setTimeout(r, 300));
      const countsAfter = await collectionCounts(ctx.mongo, mongoDb);
      const opsAfter = server.probeDir ? await probeCounts(server.probeDir, pids) : undefined;
      const docsPerRequest = {};
      const sent = Math.max(1, res.sent ?? res.requests);
      for (const [c, n] of Object.entries(countsAfter)) docsPerRequest[c] = round((n - (countsBefore[c] ?? 0)) / sent, 3);
      const opsPerRequest = {};
      for (const [k, n] of Object.entries(opsAfter ?? {})) {
        const d = n - (opsBefore?.[k] ?? 0);
        if (d > 0) opsPerRequest[k] = round(d / sent, 3);
      }
      run.storage = {
        opsPerRequest,
        ferretCpuMicros: ferretCpu === undefined ? undefined : Math.round(ferretCpu),
        ferretCpuMicrosPerRequest: ferretCpu === undefined ? undefined : round(ferretCpu / answered),
        share: ferretCpu === undefined ? undefined : round(ferretCpu / (ferretCpu + serverCpu), 3),
        docsPerRequest,
      };
    }
    ctx.estimates.set(scenario.id, Math.max(res.rps, ctx.estimates.get(scenario.id) ?? 0));
    // With --log-level above silent, a run with failures shows what the server logged about them.
    if (run.non2xx + run.errors + run.timeouts > 0 && options.logLevel !== 'silent') log(`server output of ${scenario.id} on ${target} (last lines):\n${server.output().slice(-3000)}`);
    log(
      `${scenario.id} on ${target}: ${Math.round(run.rps)} req/s, p50 ${run.p50} ms, p99 ${run.p99} ms, ${run.cpuMicrosPerRequest} µs CPU/req, ` +
        `RSS ${run.rss.maxMb} MB, failed ${run.non2xx + run.mismatches + run.errors + run.timeouts}${run.exhausted ? ' (pool used up)' : ''} ` +
        `[${((Date.now() - t0) / 1000).toFixed(1)} s]`,
    );
    return run;
  } catch (err) {
    log(`${scenario.id} on ${target} FAILED: ${err.stack ?? err}\n${server.output().slice(-2000)}`);
    return { ...base, error: String(err.message ?? err) };
  } finally {
    await server.stop();
    if (profileDir && existsSync(profileDir)) {
      const files = profileFiles(profileDir);
      if (files.length) {
        const summary = summarizeFiles(files, 30);
        // The profile covers the process's whole life: warm-up and measured requests (plus start-up and preparation).
        summary.requests = served.count || undefined;
        writeFileSync(join(profileDir, 'meta.json'), `${JSON.stringify({ scenario: scenario.id, target, requests: served.count })}\n`);
        writeFileSync(join(profileDir, 'summary.txt'), `${renderSummary(summary, 30)}\n`);
        log(`profile of ${scenario.id} on ${target}: ${join(profileDir, 'summary.txt')}`);
      }
    }
  }
}

/** The run with the median req/s among repeated runs of one target, carrying every round's figures. */
function median(list) {
  const good = list.filter((r) => !r.error);
  if (good.length === 0) return list[0];
  if (list.length === 1) return list[0];
  const sorted = [...good].sort((a, b) => a.rps - b.rps);
  const pick = sorted[Math.floor((sorted.length - 1) / 2)];
  return { ...pick, rounds: list.map((r) => (r.error ? { error: r.error } : { rps: r.rps, p50: r.p50, p99: r.p99, requests: r.requests, cpuMicrosPerRequest: r.cpuMicrosPerRequest, threadCpuMicros: r.threadCpuMicros, rssMb: r.rss?.maxMb, machineSteal: r.machineSteal, perProcessCpuMicros: r.perProcessCpuMicros })) };
}

async function runAll() {
  const selected = SCENARIOS.filter((s) => !only || only.has(s.id));
  let wantTarget = (t) => !targetFilter || targetFilter.has(t);
  // The workers scenario: cc_dpop against --workers 1 and --workers 2, on each store selected by --targets.
  // Bare oidc-provider in 1 and 2 processes is the reference: what a second process costs on this machine anyway.
  const workerStores = !only || only.has('workers') ? ['embedded', 'mongodb', 'bare'].filter(wantTarget) : [];
  const needMongo = workerStores.includes('mongodb') || (selected.some((s) => s.targets.includes('mongodb')) && wantTarget('mongodb'));
  const ctx = { estimates: new Map(), ferret: undefined, mongo: undefined };
  const started = Date.now();
  let mongoSkipped;
  if (needMongo && process.env.BENCH_MONGODB_URI) {
    // A MongoDB of your own (e.g. a real replica set): its CPU is not measured, each run still gets a fresh database.
    log(`using the MongoDB at BENCH_MONGODB_URI for the MongoDB-wire runs`);
    ctx.ferret = { uri: process.env.BENCH_MONGODB_URI, pid: undefined, stop: async () => {} };
    ctx.mongo = await new MongoClient(ctx.ferret.uri).connect();
  } else if (needMongo) {
    log('starting the MongoDB wire-protocol server (FerretDB; built on first use by test/ferretdb/build.sh)');
    try {
      // Resolve (or build) the binary first: a missing one would be an unhandled spawn error inside startFerretdb.
      const bin = ferretdbBinary();
      accessSync(bin, fsConstants.X_OK);
      ctx.ferretDir = mkdtempSync(join(tmpdir(), 'agentauth-bench-ferretdb-'));
      ctx.ferret = await startFerretdb({ bin, dir: ctx.ferretDir });
      ctx.mongo = await new MongoClient(ctx.ferret.uri).connect();
    } catch (err) {
      mongoSkipped = `no MongoDB-wire server: ${String(err.message ?? err).split('\n')[0]}`;
      log(`${mongoSkipped}; the MongoDB-wire runs are skipped (set BENCH_MONGODB_URI to use a running MongoDB)`);
      await ctx.ferret?.stop();
      ctx.ferret = undefined;
      if (ctx.ferretDir) rmSync(ctx.ferretDir, { recursive: true, force: true });
      ctx.ferretDir = undefined;
    }
  }
  if (mongoSkipped) {
    const base = wantTarget;
    wantTarget = (t) => !t.startsWith('mongodb') && base(t);
  }
  const runs = [];
  try {
    for (const scenario of selected) {
      // Bare and embedded back to back (alternating, `rounds` times: the machine's noise then hits both alike).
      const rounds = options.rounds ?? (options.quick ? 1 : scenario.rounds ?? 1);
      const samples = { bare: [], embedded: [] };
      for (let i = 0; i < rounds; i += 1) {
        for (const target of ['bare', 'embedded']) {
          if (scenario.targets.includes(target) && wantTarget(target)) samples[target].push(await measure(scenario, target, ctx));
        }
      }
      for (const list of Object.values(samples)) if (list.length) runs.push(median(list));
      if (scenario.targets.includes('mongodb') && wantTarget('mongodb')) runs.push(await measure(scenario, 'mongodb', ctx));
    }
    const dpop = SCENARIOS.find((s) => s.id === 'cc_dpop');
    for (const store of workerStores.filter(wantTarget)) {
      // 1 and 2 workers back to back, alternating: CPU per request is compared within each round.
      const rounds = options.rounds ?? (options.quick ? 1 : 3);
      // Every worker compiles the hot path for itself, from its share of the warm-up: twice the warm-up (unless
      // --warmup or --quick says otherwise), so that two workers are about as warm as one process.
      const warmup = opt.warmup || options.quick ? options.warmup : options.warmup * 2;
      const samples = { 1: [], 2: [] };
      for (let i = 0; i < rounds; i += 1) {
        for (const n of [1, 2]) samples[n].push(await measure(dpop, `${store}-w${n}`, ctx, { warmup }));
      }
      runs.push(median(samples[1]), median(samples[2]));
    }
  } finally {
    await ctx.mongo?.close();
    await ctx.ferret?.stop();
    if (ctx.ferretDir) rmSync(ctx.ferretDir, { recursive: true, force: true });
  }
  log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return {
    version: 1,
    date: new Date().toISOString(),
    commit: gitCommit(),
    machine: machineInfo(),
    options,
    mongodb: process.env.BENCH_MONGODB_URI ? 'BENCH_MONGODB_URI' : mongoSkipped ?? (needMongo ? 'FerretDB v1 (SQLite), test/ferretdb' : undefined),
    scenarios: SCENARIOS.map(({ id, title, targets, bareNote }) => ({ id, title, targets, bareNote })),
    runs,
  };
}

if (!opt.from && !existsSync(join(ROOT, 'dist', 'server', 'cli.js'))) {
  process.stderr.write('bench: dist/ is missing; run `npm run build` first (npm run bench does)\n');
  process.exit(2);
}
const results = opt.from ? JSON.parse(readFileSync(resolve(opt.from), 'utf8')) : await runAll();
const markdown = renderMarkdown(results);
process.stdout.write(`\n${markdown}\n`);

if (!opt.from) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(join(RESULTS_DIR, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  log(`results: ${join(RESULTS_DIR, 'latest.json')}`);
  if (opt.save) {
    const path = join(RESULTS_DIR, `${opt.save.replace(/\.json$/, '')}.json`);
    writeFileSync(path, `${JSON.stringify(results, null, 2)}\n`);
    log(`saved: ${path}`);
  }
}
const fullRun = !options.quick && !options.profile && !only && !targetFilter && !opt.from && !opt['server-env'] && !opt.cli;
if (!opt['no-docs'] && (opt.docs ?? fullRun)) {
  writeDocs(DOCS, markdown);
  log(`rewrote the results section of ${DOCS}`);
}
if (opt.compare) {
  const before = JSON.parse(readFileSync(resolve(opt.compare), 'utf8'));
  process.stdout.write(`\n${renderComparison(before, results, opt.compare)}\n`);
}
if (results.runs.some((r) => r.error)) process.exitCode = 1;
