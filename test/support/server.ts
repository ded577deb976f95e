import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, realpathSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { freePort } from './ferretdb.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'dist', 'server', 'cli.js');

/** npm's own script (npm-cli.js), to run `npm start` on this Node 22 as a user's shell would. */
export function npmCli(): string {
  return realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
}

export function tempDir(prefix = 'agentauth-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function newKek(): string {
  return randomBytes(32).toString('base64');
}

/** A database name no other test uses (FerretDB: ^[A-Za-z0-9_-]{1,63}$). */
export function uniqueDbName(label: string): string {
  return `t_${label}_${randomBytes(5).toString('hex')}`.slice(0, 63);
}

export function writeConfig(dir: string, config: unknown): string {
  const path = join(dir, 'agentauth.json');
  writeFileSync(path, JSON.stringify(config));
  return path;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Starts the agentauth CLI and returns at once, with the process (for a test that signals it at a moment of its own). */
export function spawnCli(args: string[], env: Record<string, string | undefined>): ChildProcess {
  return spawn(process.execPath, [CLI, ...args], { env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs the agentauth CLI to completion (for commands that exit, or start-up failures). */
export function runCli(args: string[], env: Record<string, string | undefined>, timeoutMs = 20_000): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawnCli(args, env);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d));
    child.stderr!.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`agentauth ${args.join(' ')} did not exit within ${timeoutMs} ms: ${stdout}${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

function cleanEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'info' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) base[k] = v;
  return base;
}

export interface RunningServer {
  url: string;
  port: number;
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Sends `signal` and resolves with the exit code once the process has exited. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/**
 * Starts `agentauth start` as a real process and resolves once it logs that it is listening (with `--workers N` in
 * `args`, once `listening` processes have: pass N).
 */
export async function startServer(
  env: Record<string, string | undefined>,
  port?: number,
  opts: { args?: string[]; listening?: number; entry?: string[]; until?: string } = {},
): Promise<RunningServer> {
  const p = port ?? (await freePort());
  // `entry`: another script to run instead of `agentauth start` (a test-only entry point under test/support/).
  const child = spawn(process.execPath, opts.entry ?? [CLI, 'start', ...(opts.args ?? [])], {
    env: cleanEnv({ PORT: String(p), ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 20_000;
  // `until`: resolve at another log message instead (quoted as in the JSON line), e.g. one logged while starting.
  const until = opts.until ?? '"agentauth listening"';
  while (out.split(until).length - 1 < (opts.listening ?? 1)) {
    if (child.exitCode !== null) throw new Error(`agentauth exited at start (${child.exitCode}): ${out}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`agentauth did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `http://localhost:${p}`,
    port: p,
    child,
    output: () => out,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * Starts `agentauth start` with this configuration file, a fresh data directory and KEK, and the store's environment
 * (none for SQLite, MONGODB_URI/MONGODB_DB for MongoDB); returns the environment too, for the CLI next to it.
 */
export async function startConfigured(config: unknown, storeEnv: Record<string, string> = {}): Promise<{ env: Record<string, string>; server: RunningServer }> {
  const dir = tempDir();
  const env = { AGENTAUTH_CONFIG: writeConfig(dir, config), AGENTAUTH_DATA_DIR: `${dir}/data`, AGENTAUTH_KEK: newKek(), ...storeEnv };
  return { env, server: await startServer(env) };
}

/**
 * As startConfigured, on 127.0.0.1 with that address as its ISSUER (for clients that must be told the issuer before
 * the server starts: curl lines, the CLI next to it); returns its URL and its directory, for the caller to remove.
 */
export async function startOnLoopback(config: unknown, prefix?: string): Promise<{ server: RunningServer; url: string; env: Record<string, string>; dir: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dir = tempDir(prefix);
  const env = { AGENTAUTH_CONFIG: writeConfig(dir, config), AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_KEK: newKek(), ISSUER: url, HOST: '127.0.0.1', PORT: String(port) };
  return { server: await startServer(env, port), url, env, dir };
}

/** Parsed JSON log lines the server wrote. */
export function logLines(output: string): Array<Record<string, unknown>> {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
