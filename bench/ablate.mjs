#!/usr/bin/env node
// What each part of agentauth costs on a token path: the same scenario at the same fixed rate against builds with
// one part switched off, alternating, with bare oidc-provider in the same rounds.
//
//   node bench/ablate.mjs --only cc_bearer --rate 1000 [--rounds 3] [--variants full,audit-store,audit,layers,bare]
//
// The switched-off builds exist only here: this script copies dist/ into a temporary directory and edits the copy
// (each edit must find its anchor text exactly once, or the script stops and says which). The copy reads
// BENCH_ABLATE; the shipped server has no such switch, and nothing here is for production. Variants:
//   full         the build as shipped
//   audit-store  audit records are normalised, chained and hashed as always, but not stored (insertBatch answers
//                at once): what storing them costs (the writer thread's commits and the round trips to it)
//   audit-turn   audit records stored as always, but a batch starts at once instead of after the event-loop turn
//                (setImmediate) that lets concurrent requests share it
//   audit-record the audit trail layer builds its events (token.issued: the token's hash and claims) and records
//                none of them
//   audit        no audit trail layer: no token.issued record at all
//   layers       none of agentauth's own request layers in front of oidc-provider (request id, log line, metrics,
//                body and origin checks, error shield, audit trail, storage gate, interaction routes); the probes stay
//                so the bench can see it is ready
//   no-<layer>   one of those layers off (request-id, request-log, metrics, drain, security-headers, origin, escapes,
//                body-limit, error-shield, storage-gate, as-metadata, interactions)
//   bare         bare oidc-provider (bench/bare-provider.mjs)
// Variants combine with `+` (no-metrics+audit). Stop it with Ctrl-C: the server of the run in progress stops with it.
// Needs `npm run build` first. Prints, per variant, the median of the rounds: server CPU per request, split into the
// event loop and the other threads, and p50 latency.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { ROOT } from './lib/servers.mjs';

const { values: opt } = parseArgs({
  options: {
    only: { type: 'string' },
    rate: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    variants: { type: 'string', default: 'full,audit-store,audit,layers,bare' },
    check: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (opt.help || (!opt.check && (!opt.only || !opt.rate))) {
  process.stdout.write('usage: node bench/ablate.mjs --only SCENARIO --rate N [--rounds 3] [--variants full,audit-store,audit,layers,bare] (see the comment at the top of bench/ablate.mjs)\n       node bench/ablate.mjs --check   (only check that every edit still applies to dist/ once; test/unit/bench-ablate.test.ts)\n');
  process.exit(opt.help ? 0 : 2);
}
const KNOWN = new Set(['full', 'audit-store', 'audit-turn', 'audit-record', 'audit', 'layers', 'bare']);
const variants = opt.variants.split(',');
/** Filled below from LAYERS: `no-<layer>` switches off one layer; variants combine with `+` (e.g. no-metrics+audit). */
const KNOWN_LAYERS = new Set();

/** The edits: file under dist/, the text it must contain once, what replaces it. */
const SWITCH = "const ablate = new Set((process.env.BENCH_ABLATE ?? '').split('+'));";
const EDITS = [
  {
    file: 'adapters/sqlite.js',
    find: `    async insertBatch(records) {
        if (records.length === 0)
            return 0;`,
    replace: `    async insertBatch(records) {
        if (records.length === 0)
            return 0;
        if (ablate.has('audit-store')) return records.length;`,
  },
  {
    file: 'server/audit/log.js',
    find: '        await new Promise((resolve) => setImmediate(resolve));\n',
    replace: "        if (!ablate.has('audit-turn')) await new Promise((resolve) => setImmediate(resolve));\n",
  },
  {
    file: 'server/audit/trail.js',
    find: '            await Promise.all(events.map((e) => recorder.record(e)));\n',
    replace: "            if (ablate.has('audit-record')) await Promise.resolve();\n            else await Promise.all(events.map((e) => recorder.record(e)));\n",
  },
  {
    file: 'server/app.js',
    find: '    app.use(auditTrail(audit, log));\n',
    replace: `    if (!ablate.has('audit') && !ablate.has('layers')) app.use(auditTrail(audit, log));\n`,
  },
];
/** Every other layer of createApp but the probes, by the name that switches it off alone (`layers` switches off all). */
const LAYERS = {
  'request-id': 'requestId',
  'request-log': 'requestLog(log)',
  metrics: 'requestMetrics(metrics)',
  drain: 'drainUnreadBody',
  'security-headers': 'securityHeaders(earlyRefusalCors(provider))',
  origin: 'requestOriginCheck',
  escapes: 'percentEscapeCheck',
  'dpop-header': 'dpopHeaderCheck',
  'body-limit': 'declaredBodyLimit',
  'form-content-type': 'formBodyContentType(provider)',
  'error-shield': 'errorShield(log, health)',
  'storage-gate': 'storageGate(health, provider)',
  'as-metadata': 'authorizationServerMetadata',
  interactions: 'interactionRoutes(interactions)',
};
for (const [name, layer] of Object.entries(LAYERS)) {
  KNOWN_LAYERS.add(`no-${name}`);
  EDITS.push({ file: 'server/app.js', find: `app.use(${layer});`, replace: `if (!ablate.has('layers') && !ablate.has('no-${name}')) app.use(${layer});` });
}

for (const v of variants) {
  for (const part of v.split('+')) if (!KNOWN.has(part) && !KNOWN_LAYERS.has(part)) throw new Error(`unknown variant ${part} (known: ${[...KNOWN, ...KNOWN_LAYERS].join(', ')})`);
}

const dir = mkdtempSync(join(tmpdir(), 'agentauth-ablate-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));
cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
const edited = new Set();
for (const { file, find, replace } of EDITS) {
  const path = join(dir, 'dist', file);
  let text = readFileSync(path, 'utf8');
  // The switch, read once when the module loads (after its imports, which ESM hoists anyway).
  if (!edited.has(file)) {
    text = `${SWITCH}\n${text}`;
    edited.add(file);
  }
  const count = text.split(find).length - 1;
  if (count !== 1) {
    process.stderr.write(`bench/ablate.mjs: dist/${file} contains ${JSON.stringify(find.trim().slice(0, 60))} ${count} times, not once: update the edits in this script\n`);
    process.exit(1);
  }
  writeFileSync(path, text.replace(find, replace));
}

if (opt.check) {
  process.stdout.write(`bench/ablate.mjs: all ${EDITS.length} edits apply to dist/ once\n`);
  process.exit(0);
}

const cli = join(dir, 'dist', 'server', 'cli.js');
const samples = new Map(variants.map((v) => [v, []]));
const rounds = Number(opt.rounds);
for (let round = 1; round <= rounds; round += 1) {
  for (const v of variants) {
    const args = ['bench/run.mjs', '--only', opt.only, '--rate', opt.rate, '--rounds', '1', '--no-docs'];
    if (v === 'bare') args.push('--targets', 'bare');
    else args.push('--targets', 'embedded', '--cli', cli, '--server-env', `BENCH_ABLATE=${v}`);
    const run = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
    if (run.status !== 0) {
      process.stderr.write(run.stdout.slice(-2000) + run.stderr.slice(-2000));
      throw new Error(`bench/run.mjs failed for variant ${v}`);
    }
    const latest = JSON.parse(readFileSync(join(ROOT, 'bench', 'results', 'latest.json'), 'utf8'));
    const r = (latest.results ?? latest.runs).find((x) => x.scenario === opt.only);
    const threads = r.threadCpuMicros?.[0];
    const sample = {
      rps: r.rps,
      cpu: r.cpuMicrosPerRequest,
      main: threads ? threads.main / r.requests : NaN,
      other: threads ? threads.other / r.requests : NaN,
      p50: r.p50,
      failed: r.non2xx + r.mismatches + r.errors + r.timeouts,
    };
    samples.get(v).push(sample);
    process.stdout.write(`round ${round} ${v.padEnd(12)} ${Math.round(sample.rps)}/s, ${Math.round(sample.cpu)} µs CPU/req (event loop ${Math.round(sample.main)}, other threads ${Math.round(sample.other)}), p50 ${sample.p50} ms, failed ${sample.failed}\n`);
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmt = (xs) => `${Math.round(median(xs))} (${Math.round(Math.min(...xs))}–${Math.round(Math.max(...xs))})`;
process.stdout.write(`\n${opt.only} at ${opt.rate}/s, ${rounds} alternating rounds (median, range):\n\n`);
process.stdout.write('| variant | CPU µs/req | event loop | other threads | p50 ms |\n| --- | ---: | ---: | ---: | ---: |\n');
for (const v of variants) {
  const xs = samples.get(v);
  process.stdout.write(`| ${v} | ${fmt(xs.map((x) => x.cpu))} | ${fmt(xs.map((x) => x.main))} | ${fmt(xs.map((x) => x.other))} | ${median(xs.map((x) => x.p50)).toFixed(2)} |\n`);
}
