// Starts and stops the FerretDB test server (a real MongoDB wire-protocol database) for the test suite.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** Path of the FerretDB test binary: $AGENTAUTH_FERRETDB_BIN, else built (and cached) by test/ferretdb/build.sh. */
export function ferretdbBinary() {
  if (process.env.AGENTAUTH_FERRETDB_BIN) return process.env.AGENTAUTH_FERRETDB_BIN;
  return execFileSync('bash', [join(here, '..', 'ferretdb', 'build.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The state letter of each thread of `pid` (R, S, D, T, ...), from /proc; a thread that has just exited is left out. */
export function threadStates(pid) {
  return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return [stat[stat.lastIndexOf(')') + 2]];
    } catch {
      return [];
    }
  });
}

/**
 * Resolves once every thread of `pid` is stopped. kill(SIGSTOP) returns before that: one thread takes the signal and
 * then stops the others, and until it has run (on a loaded machine, milliseconds later) the rest go on serving.
 */
async function untilStopped(pid, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = threadStates(pid);
    if (states.length > 0 && states.every((s) => s === 'T' || s === 't')) return;
    if (Date.now() > deadline) throw new Error(`FerretDB (pid ${pid}) not stopped ${timeoutMs} ms after SIGSTOP: thread states ${states.join('')}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  });
}

/**
 * Starts FerretDB on 127.0.0.1:`port` with its SQLite files in `dir` and resolves once it accepts connections.
 * Returns { port, dir, uri, pid, stop(), pause(), resume(), kill() }:
 * - stop() sends SIGTERM (after SIGCONT, should it be paused) and resolves when the process has exited;
 * - pause() sends SIGSTOP and resolves once every thread has stopped: the process hangs, but the kernel still accepts
 *   connections on its port, so clients see a database that answers nothing (not a refused connection);
 * - resume() sends SIGCONT;
 * - kill() sends SIGKILL (a crash: no clean shutdown) and resolves when the process has exited.
 * To restart a stopped or killed server on the same port with the same data, call startFerretdb({ port, dir }) again.
 */
export async function startFerretdb({ bin = ferretdbBinary(), port, dir } = {}) {
  port ??= await freePort();
  dir ??= mkdtempSync(join(tmpdir(), 'agentauth-ferretdb-'));
  const child = spawn(bin, ['-listen', `127.0.0.1:${port}`, '-dir', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let spawnError;
  // A binary that cannot be run (missing, not executable) is reported here, not as an uncaught 'error' event.
  child.once('error', (err) => { spawnError = err; });
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 20000;
  for (;;) {
    if (spawnError) throw new Error(`cannot start FerretDB (${bin}): ${spawnError.message}`);
    if (child.exitCode !== null) throw new Error(`FerretDB exited at start (${child.exitCode}): ${stderr}`);
    if (await canConnect(port)) break;
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`FerretDB did not listen on ${port}: ${stderr}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
  const running = () => child.exitCode === null && child.signalCode === null;
  const signal = (sig) => {
    if (!running()) throw new Error(`FerretDB on ${port} is not running (cannot send ${sig})`);
    child.kill(sig);
  };
  return {
    port,
    dir,
    pid: child.pid,
    uri: `mongodb://127.0.0.1:${port}/`,
    async stop() {
      if (running()) {
        child.kill('SIGCONT');
        child.kill('SIGTERM');
      }
      await exited;
    },
    async pause() {
      signal('SIGSTOP');
      await untilStopped(child.pid);
    },
    resume() {
      signal('SIGCONT');
    },
    async kill() {
      if (running()) child.kill('SIGKILL');
      await exited;
    },
  };
}
