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

// Ports for the servers tests start. The kernel hands out ports from its ephemeral range (32768-60999 here) to every
// bind(0) and every outgoing connection, so a port found free there and released can be taken by any of them before
// the server that was meant to listen on it does (CI once saw EADDRINUSE that way). These come from below that range,
// and each Jest worker (JEST_WORKER_ID 1, 2, ...; 0 for the main process, the bench and scripts) draws from its own
// slice, so two workers never pick the same port. Within a slice, a test file starts at a random place and walks on,
// so files that follow one another in a worker do not reuse the ports the one before used.
export const PORT_BASE = 20_000;
export const PORT_SLICE = 1_500;
const PORT_SLICES = 8; // 20000-31999: below the ephemeral range's usual start (32768)
const slice = Number(process.env.JEST_WORKER_ID ?? 0) % PORT_SLICES;
let nextOffset = Math.floor(Math.random() * PORT_SLICE);

/** The port range this process draws from: [first, first + PORT_SLICE). */
export function portSlice() {
  return { first: PORT_BASE + slice * PORT_SLICE, size: PORT_SLICE };
}

/** A port in this process's slice that nothing listens on (checked by listening on it, on every interface). */
export async function freePort() {
  const { first, size } = portSlice();
  for (let tries = 0; tries < size; tries++) {
    const port = first + (nextOffset++ % size);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port in ${first}-${first + size - 1}`);
}

function canListen(port) {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(false) : reject(err)));
    srv.listen(port, () => srv.close(() => resolve(true)));
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
