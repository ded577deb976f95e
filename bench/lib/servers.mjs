// Starts and stops the servers under test as real processes: agentauth (the CLI, as an operator would run it) and
// bare node-oidc-provider (bench/bare-provider.mjs).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { freePort } from '../../test/support/ferretdb.js';
import { childPids } from './proc.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'server', 'cli.js');
const BARE = join(ROOT, 'bench', 'bare-provider.mjs');
const BARE_CLUSTER = join(ROOT, 'bench', 'bare-cluster.mjs');
const PROBE = join(ROOT, 'bench', 'lib', 'mongo-probe.mjs');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function profileArgs(profileDir) {
  if (!profileDir) return [];
  mkdirSync(profileDir, { recursive: true });
  // No --cpu-prof-name: cluster workers inherit the flags, and the default name holds the pid.
  return ['--cpu-prof', `--cpu-prof-dir=${profileDir}`];
}

async function waitReady(url, child, output, { path, timeoutMs = 30_000 }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`server exited at start (${child.exitCode ?? child.signalCode}): ${output()}`);
    try {
      const res = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`server did not become ready within ${timeoutMs} ms: ${output()}`);
    }
    await sleep(50);
  }
}

/** A cluster primary's workers: all forked, and time for the ones the readiness probe did not reach to finish booting. */
async function waitForChildren(proc, workers, name) {
  const deadline = Date.now() + 30_000;
  while (childPids(proc.child.pid).length < workers) {
    if (Date.now() > deadline) throw new Error(`${name}: fewer than ${workers} workers after 30 s: ${proc.output()}`);
    await sleep(50);
  }
  // Workers boot side by side; the readiness probe answered for one of them. Give the others time to finish booting
  // (the warm-up that follows also runs against all of them; per-worker CPU in the results shows each served).
  await sleep(1500);
}

function spawnServer(args, env) {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d) => {
    out = (out + d).slice(-8000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return { child, output: () => out, exited };
}

function handle(kind, url, port, proc, extra = {}, tempDirs = []) {
  return {
    kind,
    url,
    port,
    pid: proc.child.pid,
    output: proc.output,
    ...extra,
    async stop() {
      const { child } = proc;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const result = await proc.exited;
      clearTimeout(timer);
      for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
      return result;
    },
  };
}

/**
 * `agentauth start [--workers N]` (`cli`: another build's dist/server/cli.js, to compare) with a fresh data directory (embedded store) or a fresh database on the MongoDB-wire
 * server, logging off (LOG_LEVEL=silent, as bare oidc-provider logs nothing either). Ready once /readyz answers 200
 * and, with workers, once all of them are forked and have had time to boot.
 */
export async function startAgentauth({ config, mongoUri, workers, profileDir, logLevel = 'silent', label = 'run', env: extraEnv = {}, probeDir, cli = CLI }) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'agentauth-bench-'));
  const configPath = join(dir, 'agentauth.json');
  writeFileSync(configPath, JSON.stringify(config));
  const url = `http://127.0.0.1:${port}`;
  const dbName = mongoUri ? `bench_${label}_${randomBytes(4).toString('hex')}`.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 63) : undefined;
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    PORT: String(port),
    HOST: '127.0.0.1',
    ISSUER: url,
    LOG_LEVEL: logLevel,
    AGENTAUTH_CONFIG: configPath,
    AGENTAUTH_DATA_DIR: join(dir, 'data'),
    AGENTAUTH_KEK: randomBytes(32).toString('base64'),
    ...(mongoUri ? { MONGODB_URI: mongoUri, MONGODB_DB: dbName } : {}),
    ...extraEnv,
  };
  if (probeDir) {
    // Counts MongoDB driver operations per process (bench/lib/mongo-probe.mjs); cluster workers inherit it.
    env.BENCH_MONGO_PROBE_DIR = probeDir;
    env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --import=${pathToFileURL(PROBE).href}`.trim();
  }
  const args = [...profileArgs(profileDir), cli, 'start', ...(workers ? ['--workers', String(workers)] : [])];
  const proc = spawnServer(args, env);
  await waitReady(url, proc.child, proc.output, { path: '/readyz' });
  if (workers > 1) await waitForChildren(proc, workers, 'agentauth');
  return handle('agentauth', url, port, proc, { dbName, workers: workers ?? 1, probeDir }, [dir, ...(probeDir ? [probeDir] : [])]);
}

/**
 * bench/bare-provider.mjs: oidc-provider as its README configures it, in-memory adapter, same resource server and
 * clients. With `workers` (the workers scenario's reference), bench/bare-cluster.mjs runs that many of it under
 * node:cluster; with 2 or more, every worker must answer before the server counts as ready.
 */
export async function startBare({ profileDir, env: extraEnv = {}, workers } = {}) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, PORT: String(port), ISSUER: url, ...extraEnv };
  if (workers !== undefined) env.BARE_WORKERS = String(workers);
  const proc = spawnServer([...profileArgs(profileDir), workers === undefined ? BARE : BARE_CLUSTER], env);
  await waitReady(url, proc.child, proc.output, { path: '/.well-known/openid-configuration' });
  if (workers > 1) await waitForChildren(proc, workers, 'bare oidc-provider');
  return handle('bare', url, port, proc, { workers: workers ?? 1 });
}
