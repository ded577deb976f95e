// Turns a results object into Markdown (stdout and docs/performance.md) and compares two results objects.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';

export function machineInfo() {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpu = m[1].trim();
  } catch {
    // not Linux
  }
  return {
    cpu,
    cores: cpus().length,
    node: process.version,
    os: `${process.platform} ${release()}`,
    memoryGb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
  };
}

const TARGET_LABEL = {
  embedded: 'agentauth, embedded store (SQLite)',
  mongodb: 'agentauth, MongoDB wire (FerretDB)',
  bare: 'bare oidc-provider',
  'mongodb-w1': 'agentauth --workers 1, FerretDB',
  'mongodb-w2': 'agentauth --workers 2, FerretDB',
  'embedded-w1': 'agentauth --workers 1, embedded store',
  'embedded-w2': 'agentauth --workers 2, embedded store',
  'bare-w1': 'bare oidc-provider, 1 process',
  'bare-w2': 'bare oidc-provider, 2 cluster workers',
};

const int = (n) => (n === undefined || n === null || Number.isNaN(n) ? '–' : Math.round(n).toLocaleString('en-US'));
const ms = (n) => (n === undefined || n === null ? '–' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : String(Math.round(n)));
const ratio = (n) => (n === undefined || n === null || !Number.isFinite(n) ? '–' : `${n.toFixed(2)}×`);
const pct = (n) => (n === undefined || n === null || !Number.isFinite(n) ? '–' : `${Math.round(n * 100)} %`);

export const runKey = (r) => `${r.scenario}/${r.target}`;
export const find = (results, scenario, target) => results.runs.find((r) => r.scenario === scenario && r.target === target && !r.error);

function failures(r) {
  const n = (r.non2xx ?? 0) + (r.mismatches ?? 0) + (r.errors ?? 0) + (r.timeouts ?? 0);
  const parts = [];
  if (r.non2xx) parts.push(`${r.non2xx} non-2xx (${Object.entries(r.statusCodes ?? {}).filter(([c]) => !c.startsWith('2')).map(([c, k]) => `${c}×${k}`).join(', ')})`);
  if (r.mismatches) parts.push(`${r.mismatches} unexpected 2xx body`);
  if (r.errors) parts.push(`${r.errors} errors`);
  if (r.timeouts) parts.push(`${r.timeouts} timeouts`);
  if (r.exhausted) parts.push('pool used up');
  return n === 0 && !r.exhausted ? '0' : parts.join('; ');
}

/**
 * The ratio agentauth/bare for a run, where bare ran the scenario in the same results. With alternating rounds, the
 * median of the per-round ratios (each pair ran back to back, so a slow spell of the machine hits both).
 */
export function bareRatio(results, r) {
  if (r.target === 'bare') return undefined;
  const bare = find(results, r.scenario, 'bare');
  if (!bare || !(bare.rps > 0)) return undefined;
  if (r.target === 'embedded' && r.rounds && bare.rounds && r.rounds.length === bare.rounds.length) {
    const ratios = r.rounds.map((x, i) => (x.rps && bare.rounds[i].rps ? x.rps / bare.rounds[i].rps : undefined)).filter((x) => x !== undefined).sort((a, b) => a - b);
    if (ratios.length) return ratios[Math.floor((ratios.length - 1) / 2)];
  }
  return r.rps / bare.rps;
}

function rpsCell(r) {
  if (!r.rounds || r.rounds.length < 2) return int(r.rps);
  const v = r.rounds.filter((x) => x.rps !== undefined).map((x) => x.rps);
  return `${int(r.rps)} (${int(Math.min(...v))}–${int(Math.max(...v))}, ${v.length} rounds)`;
}

function rssCell(r) {
  if (!r.rss) return '–';
  return r.processes > 1 ? `${int(r.rss.sumMb)} (Σ ${r.processes}; max ${int(r.rss.maxMb)})` : int(r.rss.maxMb);
}

/** Server label; the MongoDB-wire runs name the server they used. */
function label(results, target) {
  if (target === 'mongodb' && results.mongodb === 'BENCH_MONGODB_URI') return 'agentauth, MongoDB (BENCH_MONGODB_URI)';
  return TARGET_LABEL[target] ?? target;
}

function mainTable(results) {
  const lines = [
    '| scenario | server | req/s | p50 ms | p99 ms | failed | server CPU µs/req | peak RSS MB | agentauth/bare |',
    '| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |',
  ];
  const notes = [];
  const marks = ['¹', '²', '³', '⁴', '⁵'];
  for (const s of results.scenarios.filter((x) => results.runs.some((r) => r.scenario === x.id))) {
    const mark = s.bareNote ? marks[notes.length] : '';
    for (const r of results.runs.filter((x) => x.scenario === s.id && !/-w\d+$/.test(x.target))) {
      if (r.error) {
        lines.push(`| ${s.id} | ${label(results, r.target)} | error | | | ${r.error.split('\n')[0].slice(0, 120)} | | | |`);
        continue;
      }
      let rat = ratio(bareRatio(results, r));
      if (mark && r.target !== 'bare') rat = rat === '–' ? `– ${mark}` : `${rat} ${mark}`;
      lines.push(`| ${s.id} | ${label(results, r.target)} | ${rpsCell(r)} | ${ms(r.p50)} | ${ms(r.p99)} | ${failures(r)} | ${int(r.cpuMicrosPerRequest)} | ${rssCell(r)} | ${r.target === 'bare' ? '' : rat} |`);
    }
    if (mark) notes.push(`${mark} \`${s.id}\`: ${s.bareNote}.`);
  }
  return { table: lines.join('\n'), notes };
}

const opsText = (ops, min = 0.005) =>
  Object.entries(ops ?? {})
    .filter(([, v]) => v >= min)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k.replace('!duplicate', ' (duplicate key)').replace('!error', ' (error)')} ${v.toFixed(2)}`)
    .join(', ');

function storageTable(results) {
  const rows = results.runs.filter((r) => r.target === 'mongodb' && !r.error);
  if (rows.length === 0) return '';
  const lines = [
    '| scenario | agentauth CPU µs/req (embedded → MongoDB wire) | FerretDB CPU µs/req | storage share of server CPU | driver calls per request (collection.operation) | p50 ms (embedded → MongoDB wire) |',
    '| --- | ---: | ---: | ---: | --- | ---: |',
  ];
  for (const r of rows) {
    const e = find(results, r.scenario, 'embedded');
    lines.push(
      `| ${r.scenario} | ${int(e?.cpuMicrosPerRequest)} → ${int(r.cpuMicrosPerRequest)} | ${int(r.storage?.ferretCpuMicrosPerRequest)} | ${pct(r.storage?.share)} | ${opsText(r.storage?.opsPerRequest) || '–'} | ${ms(e?.p50)} → ${ms(r.p50)} |`,
    );
  }
  return lines.join('\n');
}

/**
 * CPU per request of `--workers 2` over `--workers 1` on one store: the median of the per-round ratios when the two
 * alternated (each pair ran back to back), else the ratio of the two runs.
 */
export function workersCpuRatio(results, store) {
  const w1 = find(results, 'cc_dpop', `${store}-w1`);
  const w2 = find(results, 'cc_dpop', `${store}-w2`);
  if (!w1 || !w2) return undefined;
  if (w1.rounds && w2.rounds && w1.rounds.length === w2.rounds.length) {
    const ratios = w2.rounds
      .map((x, i) => (x.cpuMicrosPerRequest && w1.rounds[i].cpuMicrosPerRequest ? x.cpuMicrosPerRequest / w1.rounds[i].cpuMicrosPerRequest : undefined))
      .filter((x) => x !== undefined)
      .sort((a, b) => a - b);
    if (ratios.length) return ratios[Math.floor((ratios.length - 1) / 2)];
  }
  return w2.cpuMicrosPerRequest / w1.cpuMicrosPerRequest;
}

const WORKER_STORES = [
  ['embedded', 'embedded store (SQLite)'],
  ['mongodb', 'MongoDB wire (FerretDB)'],
  // The reference, not a target: bench/bare-cluster.mjs (in-memory adapter per worker, nothing shared).
  ['bare', 'bare oidc-provider (reference)'],
];

/** CPU of each process (primary first), main thread + other threads, per request answered. */
function perProcessText(r) {
  if (!r.threadCpuMicros) return '–';
  const answered = Math.max(1, r.requests);
  return r.threadCpuMicros.map((t) => `${int((t.main + t.other) / answered)} (${int(t.main / answered)} + ${int(t.other / answered)})`).join(', ');
}

function workersTable(results) {
  const rows = WORKER_STORES.flatMap(([store, name]) => [1, 2].map((n) => ({ store, name, n, r: find(results, 'cc_dpop', `${store}-w${n}`) }))).filter((x) => x.r);
  if (rows.length === 0) return '';
  const lines = [
    '| store | workers | req/s | p50 ms | p99 ms | failed | server CPU µs/req (all processes) | per process µs/req: total (main thread + other threads) | FerretDB CPU µs/req | peak RSS MB | req/s vs 1 worker | CPU/req vs 1 worker |',
    '| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |',
  ];
  for (const { store, name, n, r } of rows) {
    const w1 = find(results, 'cc_dpop', `${store}-w1`);
    lines.push(
      `| ${name} | ${n} | ${rpsCell(r)} | ${ms(r.p50)} | ${ms(r.p99)} | ${failures(r)} | ${int(r.cpuMicrosPerRequest)} | ${perProcessText(r)} | ${int(r.storage?.ferretCpuMicrosPerRequest)} | ${rssCell(r)} | ${n === 2 && w1 ? ratio(r.rps / w1.rps) : ''} | ${n === 2 ? ratio(workersCpuRatio(results, store)) : ''} |`,
    );
  }
  lines.push(
    '',
    'Per process: the primary first (with 2 workers), then each worker; "other threads" are V8\'s GC and compiler helpers, libuv\'s pool and the SQLite writer thread. CPU/req vs 1 worker: the median of the per-round ratios when the runs alternated. Bare oidc-provider (bench/bare-cluster.mjs, each worker with its own in-memory adapter, nothing shared) is the reference: what a second process costs on this machine whatever the server.',
  );
  for (const { n, name, r } of rows) {
    if (r?.storage?.opsPerRequest) lines.push('', `Driver calls per request, ${name}, ${n} worker${n > 1 ? 's' : ''}: ${opsText(r.storage.opsPerRequest, 0.001)}.`);
  }
  return lines.join('\n');
}

/** Issue 15's token paths other than DPoP, each to be at least level with bare oidc-provider. */
const ISSUE_15_LEVEL_PATHS = [
  ['cc_bearer', 'bearer JWT (client_credentials)'],
  ['cc_opaque', 'opaque token (client_credentials)'],
  ['introspect_jwt', 'JWT introspection'],
  ['introspect_opaque', 'opaque introspection'],
  ['refresh', 'refresh rotation'],
];

/** The issues' targets, with where each one stands in these results. */
export function targets(results) {
  const out = [];
  const add = (target, measured, ok) => out.push({ target, measured, status: ok === undefined ? 'not measured' : ok === null ? 'reported' : ok ? 'met' : 'missed' });
  const dpopE = find(results, 'cc_dpop', 'embedded');
  const dpopB = find(results, 'cc_dpop', 'bare');
  const dpopRatio = dpopE && dpopB ? bareRatio(results, dpopE) : undefined;
  add(
    'DPoP client_credentials, embedded (SQLite, as shipped) ≥ 0.8× bare (issue 6)',
    dpopE && dpopB ? `${int(dpopE.rps)} vs ${int(dpopB.rps)} req/s: ${ratio(dpopRatio)}${dpopE.rounds ? ' (median of the per-round ratios)' : ''}; CPU ${int(dpopE.cpuMicrosPerRequest)} vs ${int(dpopB.cpuMicrosPerRequest)} µs/req` : '–',
    dpopE && dpopB ? dpopRatio >= 0.8 : undefined,
  );
  add(
    'DPoP client_credentials, embedded (SQLite, as shipped) ≥ 1.25× bare (issue 15)',
    dpopE && dpopB ? `${ratio(dpopRatio)}` : '–',
    dpopE && dpopB ? dpopRatio >= 1.25 : undefined,
  );
  // Issue 15: every other token path at least level with bare, each on the embedded store.
  for (const [id, name] of ISSUE_15_LEVEL_PATHS) {
    const e = find(results, id, 'embedded');
    const b = find(results, id, 'bare');
    const rat = e && b ? bareRatio(results, e) : undefined;
    add(
      `${name}, embedded ≥ 1.0× bare (issue 15)`,
      e && b ? `${int(e.rps)} vs ${int(b.rps)} req/s: ${ratio(rat)}; CPU ${int(e.cpuMicrosPerRequest)} vs ${int(b.cpuMicrosPerRequest)} µs/req${id === 'introspect_jwt' ? " (bare's figure is its opaque introspection)" : ''}` : '–',
      e && b ? rat >= 1 : undefined,
    );
  }
  const dpopM = find(results, 'cc_dpop', 'mongodb');
  add(
    'DPoP client_credentials on the MongoDB wire server, with storage share',
    dpopM ? `${int(dpopM.rps)} req/s (${dpopB ? ratio(dpopM.rps / dpopB.rps) : '–'} bare); FerretDB ${pct(dpopM.storage?.share)} of server CPU; driver calls per request: ${opsText(dpopM.storage?.opsPerRequest)}` : '–',
    dpopM ? null : undefined,
  );
  const intro = find(results, 'introspect_jwt', 'embedded');
  const introM = find(results, 'introspect_jwt', 'mongodb');
  add('JWT introspection ≥ 2,000/s', intro ? `${int(intro.rps)} req/s embedded${introM ? `, ${int(introM.rps)} MongoDB wire` : ''}` : '–', intro ? intro.rps >= 2000 : undefined);
  const wallet = find(results, 'wallet', 'embedded');
  const walletM = find(results, 'wallet', 'mongodb');
  add('wallet grant ≥ 500/s', wallet ? `${int(wallet.rps)} req/s embedded${walletM ? `, ${int(walletM.rps)} MongoDB wire` : ''}` : '–', wallet ? wallet.rps >= 500 : undefined);
  const agentauthRuns = results.runs.filter((r) => !r.target.startsWith('bare') && !r.error && r.rss);
  if (agentauthRuns.length) {
    const per = agentauthRuns.map((r) => ({ r, mb: r.processes > 1 ? r.rss.maxMb : r.rss.maxMb }));
    const worst = per.reduce((a, b) => (b.mb > a.mb ? b : a));
    const sumWorkers = agentauthRuns.filter((r) => r.processes > 1).map((r) => r.rss.sumMb);
    add(
      'peak RSS ≤ 200 MB under load (per process)',
      `max ${int(worst.mb)} MB (${worst.r.scenario}, ${worst.r.target})${sumWorkers.length ? `; all processes of the 2-worker run together ${int(Math.max(...sumWorkers))} MB` : ''}`,
      worst.mb <= 200,
    );
  } else add('peak RSS ≤ 200 MB under load (per process)', '–', undefined);
  // What a second process costs on this machine whatever the server (bare oidc-provider's own pair, when it ran):
  // shown beside agentauth's ratio, which cannot be told apart from it by less than the host's noise.
  const bareRef = workersCpuRatio(results, 'bare');
  for (const [store, name] of WORKER_STORES.filter(([store]) => store !== 'bare')) {
    const w1 = find(results, 'cc_dpop', `${store}-w1`);
    const w2 = find(results, 'cc_dpop', `${store}-w2`);
    const cpu = workersCpuRatio(results, store);
    add(
      `2 workers' CPU per request within 10 % of 1 worker's (DPoP client_credentials, ${name})`,
      w1 && w2 ? `${int(w2.cpuMicrosPerRequest)} vs ${int(w1.cpuMicrosPerRequest)} µs/req: ${ratio(cpu)}${w1.rounds ? ' (median of the per-round ratios)' : ''}; ${int(w2.rps)} vs ${int(w1.rps)} req/s${bareRef !== undefined ? `; bare oidc-provider's own 2 processes in the same run: ${ratio(bareRef)}` : ''}` : '–',
      w1 && w2 ? cpu <= 1.1 : undefined,
    );
  }
  return out;
}

function noise(results) {
  const steal = results.runs.map((r) => r.machineSteal).filter((v) => typeof v === 'number');
  if (!steal.length) return '';
  const max = Math.max(...steal);
  return `Hypervisor steal during the measured windows: at most ${pct(max)}${max >= 0.05 ? ' (**the machine was shared: expect noise**)' : ''}.`;
}

export function renderMarkdown(results) {
  const m = results.machine;
  const o = results.options;
  const { table, notes } = mainTable(results);
  const parts = [
    `Run of ${results.date} on ${m.cpu}, ${m.cores} cores, ${m.memoryGb} GB, Node.js ${m.node}, ${m.os}; ` +
      `${o.seconds} s measured after ${o.warmup} s warm-up per run, ${o.connections} connections${o.rate ? ` offering at most ${o.rate} requests/s` : ''}, autocannon on 127.0.0.1 in the same machine` +
      `${o.quick ? ' (**--quick smoke run: figures are indicative only**)' : ''}${o.profile ? ' (**--profile: servers ran under --cpu-prof, figures are slowed down**)' : ''}` +
      `${o.serverEnv && Object.keys(o.serverEnv).length ? `; server environment ${Object.entries(o.serverEnv).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''}` +
      `${results.commit ? `; agentauth at ${results.commit}` : ''}. ${noise(results)}`,
    '',
    table,
    '',
    notes.join('<br>\n'),
    ...(results.mongodb?.startsWith('no MongoDB-wire server') ? ['', `MongoDB-wire runs skipped: ${results.mongodb}.`] : []),
    '',
    'failed: non-2xx answers, 2xx answers that were not the expected one (e.g. `"active":false`), socket errors and timeouts. ' +
      'server CPU µs/req: user+system CPU of the server process(es) during the measured window (/proc/<pid>/stat) divided by the requests answered. ' +
      'peak RSS: VmHWM of the server process (for several processes: the sum, and the largest one).',
  ];
  const storage = storageTable(results);
  if (storage) parts.push('', '### MongoDB wire server (FerretDB v1, SQLite): where the time goes', '', storage, '', 'storage share: FerretDB CPU / (agentauth CPU + FerretDB CPU) during the measured window. driver calls: MongoDB driver operations per request sent, counted inside the server process(es) by bench/lib/mongo-probe.mjs (an insertMany is one call however many documents it carries). ' +
    'FerretDB v1 reads a whole collection for every lookup, even by `_id`: these figures hold for the small collections of a bench run, and grow with them (`node bench/ferretdb-lookups.mjs`; docs/operations.md, "FerretDB v1 is for tests").');
  const workers = workersTable(results);
  if (workers) parts.push('', '### `agentauth start --workers N` (DPoP client_credentials)', '', workers);
  parts.push('', '### Targets (issues 6 and 15)', '', '| target | measured | status |', '| --- | --- | --- |', ...targets(results).map((t) => `| ${t.target} | ${t.measured} | ${t.status} |`));
  return parts.join('\n');
}

const START = '<!-- bench:results:start (generated by `npm run bench`; edit outside these markers) -->';
const END = '<!-- bench:results:end -->';

const TEMPLATE = `# Performance

How fast agentauth issues, introspects, rotates and registers, measured side by side with bare node-oidc-provider
on the same machine in the same run. Reproduce with \`npm run bench\` (about 6 minutes; \`npm run bench -- --quick\`
for a smoke run); see bench/README.md for what each scenario does and the options.

## Results

${START}
${END}

## Analysis

(Hand-written; the generator keeps everything outside the results markers.)
`;

/** Rewrites the generated part of docs/performance.md; everything outside the markers (the Analysis) is kept. */
export function writeDocs(path, markdown) {
  let text = existsSync(path) ? readFileSync(path, 'utf8') : TEMPLATE;
  if (!text.includes(START) || !text.includes(END)) text = `${text.trimEnd()}\n\n## Results\n\n${START}\n${END}\n`;
  const before = text.slice(0, text.indexOf(START) + START.length);
  const after = text.slice(text.indexOf(END));
  writeFileSync(path, `${before}\n${markdown}\n${after}`);
}

const delta = (a, b) => (a && b ? `${b >= a ? '+' : ''}${Math.round(((b - a) / a) * 100)} %` : '–');

/** Markdown table of the changes from `before` to `after` for every run both hold. */
export function renderComparison(before, after, beforeName) {
  const flags = (r) => [r.options?.quick && '--quick', r.options?.profile && '--profile', r.options?.serverEnv && Object.keys(r.options.serverEnv).length && '--server-env'].filter(Boolean).join(' ');
  const warn = flags(before) !== flags(after) ? ` **Not like for like: ${beforeName} ran with "${flags(before) || 'defaults'}", this one with "${flags(after) || 'defaults'}".**` : '';
  const lines = [
    `Compared with ${beforeName} (${before.date}${before.commit ? `, agentauth at ${before.commit}` : ''}):${warn}`,
    '',
    '| scenario | server | req/s | Δ | p50 ms | p99 ms | CPU µs/req | Δ CPU | peak RSS MB |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of after.runs.filter((x) => !x.error)) {
    const b = before.runs.find((x) => runKey(x) === runKey(r) && !x.error);
    if (!b) continue;
    lines.push(
      `| ${r.scenario} | ${r.target} | ${int(b.rps)} → ${int(r.rps)} | ${delta(b.rps, r.rps)} | ${ms(b.p50)} → ${ms(r.p50)} | ${ms(b.p99)} → ${ms(r.p99)} | ${int(b.cpuMicrosPerRequest)} → ${int(r.cpuMicrosPerRequest)} | ${delta(b.cpuMicrosPerRequest, r.cpuMicrosPerRequest)} | ${int(b.rss?.maxMb)} → ${int(r.rss?.maxMb)} |`,
    );
  }
  return lines.join('\n');
}
