import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { ROOT, runCli, tempDir } from '../support/server.js';

/**
 * `agentauth start` caps how far V8 lets the old generation grow between full collections (server/heap-policy.ts;
 * docs/operations.md, "Memory"). Checked on V8 itself: a process that loads the module the way server/cli.ts does
 * (first, with the command in argv[2]) runs a full collection, and V8's own trace says which growth factor it used for
 * the next limit.
 */
const POLICY = pathToFileURL(join(ROOT, 'dist', 'server', 'heap-policy.js')).href;

/** The growth factor V8 printed for the limit after one full collection, in a process run with `command`. */
function factorAfterFullGc(opts: { command: string; load: boolean; env?: Record<string, string>; nodeArgs?: string[] }): Promise<string> {
  const script = join(tempDir('agentauth-heap-'), 'probe.mjs');
  writeFileSync(script, `${opts.load ? `await import(${JSON.stringify(POLICY)});\n` : ''}globalThis.gc();\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', '--trace-gc-verbose', ...(opts.nodeArgs ?? []), script, opts.command], {
      env: { PATH: process.env.PATH, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    child.once('exit', (code) => {
      const m = /\[HeapController\] Limit: old size: \d+ KB, new limit: \d+ KB \((\d+\.\d)\)/.exec(out);
      if (code !== 0 || !m) reject(new Error(`probe exited ${code}: ${out.slice(-2000)}`));
      else resolve(m[1]!);
    });
  });
}

describe('agentauth start: the old generation grows to at most twice the live heap by default', () => {
  test('start: factor 2.0; AGENTAUTH_HEAP_GROWTH_PERCENT=50 makes it 1.5', async () => {
    expect(await factorAfterFullGc({ command: 'start', load: true })).toBe('2.0');
    expect(await factorAfterFullGc({ command: 'start', load: true, env: { AGENTAUTH_HEAP_GROWTH_PERCENT: '50' } })).toBe('1.5');
  });

  test("V8's own choice stands with AGENTAUTH_HEAP_GROWTH_PERCENT=0, with the operator's --max-old-space-size, and for other commands", async () => {
    const v8Alone = await factorAfterFullGc({ command: 'start', load: false });
    expect(await factorAfterFullGc({ command: 'start', load: true, env: { AGENTAUTH_HEAP_GROWTH_PERCENT: '0' } })).toBe(v8Alone);
    expect(await factorAfterFullGc({ command: 'keys', load: true })).toBe(v8Alone);
    const capped = await factorAfterFullGc({ command: 'start', load: false, nodeArgs: ['--max-old-space-size=300'] });
    expect(await factorAfterFullGc({ command: 'start', load: true, nodeArgs: ['--max-old-space-size=300'] })).toBe(capped);
    expect(await factorAfterFullGc({ command: 'start', load: true, env: { NODE_OPTIONS: '--max-old-space-size=300' } })).toBe(capped);
  });

  test('a value that is not a whole number from 0 to 300 is a configuration error: exit 2, naming the variable', async () => {
    for (const bad of ['lots', '-5', '301', '1.5']) {
      const res = await runCli(['start'], { AGENTAUTH_HEAP_GROWTH_PERCENT: bad, AGENTAUTH_DATA_DIR: tempDir(), PORT: '0' });
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(/^agentauth: invalid configuration: AGENTAUTH_HEAP_GROWTH_PERCENT: must be a whole number from 0 to 300/);
    }
  });
});
