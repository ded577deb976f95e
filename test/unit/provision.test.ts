import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

import { chromiumAction, CHROMIUM_PATH, onPath, provision } from '../support/provision.js';
import { tempDir } from '../support/server.js';

// `npm test` runs test/support/provision.js before jest. Its decision, from the facts alone.
describe('provisioning Chromium for the browser test', () => {
  test('Chromium present: nothing to do, whoever runs the tests', () => {
    for (const uid of [0, 1000, undefined]) {
      for (const aptGetPresent of [true, false]) expect(chromiumAction({ chromiumPresent: true, uid, aptGetPresent })).toEqual({ action: 'none' });
    }
  });

  test('missing, as root with apt-get: installs Debian\'s chromium, non-interactively', () => {
    expect(chromiumAction({ chromiumPresent: false, uid: 0, aptGetPresent: true })).toEqual({
      action: 'install',
      commands: [['apt-get', 'update'], ['apt-get', 'install', '-y', 'chromium']],
      env: { DEBIAN_FRONTEND: 'noninteractive' },
    });
  });

  test('missing, not root: stops with one line naming the command to run', () => {
    const plan = chromiumAction({ chromiumPresent: false, uid: 1000, aptGetPresent: true });
    expect(plan.action).toBe('stop');
    const message = (plan as { message: string }).message;
    expect(message).toContain('`sudo apt-get install chromium`');
    expect(message).toContain(CHROMIUM_PATH);
    expect(message).not.toContain('\n');
    // No uid at all (a platform without one) is not root either.
    expect(chromiumAction({ chromiumPresent: false, uid: undefined, aptGetPresent: true }).action).toBe('stop');
  });

  test('missing, no apt-get (even as root): stops with one line saying what is needed', () => {
    for (const uid of [0, 1000]) {
      const plan = chromiumAction({ chromiumPresent: false, uid, aptGetPresent: false });
      expect(plan.action).toBe('stop');
      expect((plan as { message: string }).message).toMatch(/needs Chromium at \/usr\/bin\/chromium .*no apt-get/);
      expect((plan as { message: string }).message).not.toContain('\n');
    }
  });

  test('onPath finds an executable in PATH, and not a plain file or a missing one', () => {
    const a = tempDir('agentauth-path-');
    const b = tempDir('agentauth-path-');
    mkdirSync(a, { recursive: true });
    writeFileSync(join(a, 'apt-get'), 'not executable');
    writeFileSync(join(b, 'apt-get'), '#!/bin/sh\n');
    chmodSync(join(b, 'apt-get'), 0o755);
    expect(onPath('apt-get', a)).toBe(false);
    expect(onPath('apt-get', [a, b].join(delimiter))).toBe(true);
    expect(onPath('apt-get', '')).toBe(false);
  });

  test('provision, run for real: a no-op where Chromium is present; a missing one is never skipped silently', () => {
    const lines: string[] = [];
    const write = (line: string) => lines.push(line);
    // This machine has Chromium (the browser test needs it): nothing is installed and nothing is said.
    expect(provision({ write })).toBe(0);
    expect(lines).toEqual([]);
    // A path where there is none, as a user without root: exit 1 and exactly one line, naming the command.
    const missing = join(tempDir('agentauth-nochromium-'), 'chromium');
    expect(provision({ chromiumPath: missing, uid: 1000, write })).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^npm test: .*`sudo apt-get install chromium`.*\n$/);
    expect(lines[0]!.trimEnd()).not.toContain('\n');
    // And without apt-get on PATH.
    expect(provision({ chromiumPath: missing, uid: 0, path: tempDir('agentauth-path-'), write })).toBe(1);
    expect(lines[1]).toMatch(/no apt-get/);
  });
});
