// Run by `npm test` before jest: makes sure what the suite needs from the system is there, or stops the run with one
// line saying what to do. Today that is Debian's chromium at /usr/bin/chromium for the browser test (no test
// downloads a browser of its own). Where it is missing and this process may install it (root, apt-get present), it
// installs it; otherwise it exits non-zero naming the command. A missing browser never skips a test.
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const CHROMIUM_PATH = '/usr/bin/chromium';
const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive' };

/**
 * What to do about Chromium, from the facts alone (no I/O).
 * @param {{ chromiumPresent: boolean, uid: number | undefined, aptGetPresent: boolean }} facts
 *   `uid` is undefined where the platform has none (Windows).
 * @returns {{ action: 'none' } | { action: 'install', commands: string[][], env: Record<string, string> } | { action: 'stop', message: string }}
 */
export function chromiumAction({ chromiumPresent, uid, aptGetPresent }) {
  if (chromiumPresent) return { action: 'none' };
  if (!aptGetPresent) {
    return {
      action: 'stop',
      message: `npm test: the browser test needs Chromium at ${CHROMIUM_PATH} and this system has no apt-get to install Debian's chromium package; install Chromium there, then run npm test again`,
    };
  }
  if (uid !== 0) {
    return {
      action: 'stop',
      message: `npm test: the browser test needs Debian's chromium at ${CHROMIUM_PATH}: run \`sudo apt-get install chromium\`, then npm test again`,
    };
  }
  return { action: 'install', commands: [['apt-get', 'update'], ['apt-get', 'install', '-y', 'chromium']], env: APT_ENV };
}

/** Whether `name` is an executable file in one of PATH's directories. */
export function onPath(name, path = process.env.PATH ?? '') {
  return path.split(delimiter).some((dir) => dir !== '' && isExecutable(join(dir, name)));
}

function isExecutable(file) {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Checks, installs if it must and may, and returns the exit code (0: ready). Writes at most one line per step.
 * The options exist for tests; `npm test` runs it with the defaults.
 */
export function provision({ chromiumPath = CHROMIUM_PATH, uid = process.getuid?.(), path = process.env.PATH, write = (line) => process.stderr.write(line) } = {}) {
  const plan = chromiumAction({ chromiumPresent: isExecutable(chromiumPath), uid, aptGetPresent: onPath('apt-get', path) });
  if (plan.action === 'none') return 0;
  if (plan.action === 'stop') {
    write(`${plan.message}\n`);
    return 1;
  }
  write(`npm test: installing Debian's chromium for the browser test (${plan.commands.map((c) => c.join(' ')).join(' && ')})\n`);
  for (const command of plan.commands) {
    const run = spawnSync(command[0], command.slice(1), { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...plan.env } });
    if (run.status !== 0) {
      write(`npm test: \`${command.join(' ')}\` failed (exit ${run.status ?? run.signal}); install Debian's chromium (apt-get install chromium), then run npm test again\n`);
      return 1;
    }
  }
  if (!isExecutable(chromiumPath)) {
    write(`npm test: apt-get installed chromium but ${chromiumPath} is still missing; install Chromium there, then run npm test again\n`);
    return 1;
  }
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exitCode = provision();
