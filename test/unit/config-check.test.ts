import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { checkConfiguration } from '../../server/config-check.js';
import { nodeVersionProblem } from '../../server/cli-preflight.js';

/**
 * The Node.js version is judged first (server/config-check.ts): on a Node older than 22, start cannot run (node:sqlite,
 * the store's module, is not there) and nothing after it is checked; outside package.json's engines it is a warning. The command's other checks run as processes in
 * test/http/config-check.test.ts; this one needs another Node, so the version is handed in.
 */
const ENGINES = (JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;

test.each(['v20.19.5', 'v18.20.8', 'not-a-version'])('Node.js %s: the check fails at once and stops there', async (nodeVersion) => {
  const report = await checkConfiguration({ PORT: 'x' }, { nodeVersion });
  expect(report).toEqual({ ok: false, checks: [{ check: 'node', status: 'fail', detail: `Node.js 22 is required (package.json engines: ${ENGINES}); this is ${nodeVersion}` }] });
});

test.each([
  ['v22.13.0', 'ok', 'Node.js v22.13.0'],
  ['v22.12.0', 'warn', `Node.js v22.12.0 is outside the versions agentauth is built and tested for (package.json engines: ${ENGINES})`],
  ['v22.23.3', 'ok', 'Node.js v22.23.3'],
  ['v22.4.1', 'warn', `Node.js v22.4.1 is outside the versions agentauth is built and tested for (package.json engines: ${ENGINES})`],
  ['v24.1.0', 'warn', `Node.js v24.1.0 is outside the versions agentauth is built and tested for (package.json engines: ${ENGINES})`],
])('Node.js %s: %s (and an invalid PORT then fails the configuration check)', async (nodeVersion, status, detail) => {
  const report = await checkConfiguration({ PORT: 'x' }, { nodeVersion });
  expect(report.checks).toEqual([
    { check: 'node', status, detail },
    { check: 'configuration', status: 'fail', detail: 'invalid configuration: PORT: must be an integer from 1 to 65535' },
  ]);
  expect(report.ok).toBe(false);
});

describe('the CLI on an older Node.js (server/cli-preflight.ts)', () => {
  test('Node 20 and 18 are refused with a line naming the version and how to run on Node 22; Node 22 and later are not', () => {
    for (const version of ['v20.20.2', 'v18.19.0', '21.7.3']) {
      const problem = nodeVersionProblem(version);
      expect(problem).toContain(`this is ${version}`);
      expect(problem).toContain('Node.js 22 is required');
      expect(problem).toContain('npx agentauth');
    }
    for (const version of ['v22.13.0', 'v22.23.3', 'v24.1.0']) expect(nodeVersionProblem(version)).toBeUndefined();
    // A Node 22 before 22.13 has node:sqlite only behind --experimental-sqlite: refused without it, taken with it.
    expect(nodeVersionProblem('v22.12.0')).toMatch(/^Node\.js 22\.13 or later is required \(node:sqlite, the embedded store, needs no flag from there\); this is v22\.12\.0\. .*install Node\.js 22\.13$/);
    expect(nodeVersionProblem('v22.12.0', '--experimental-sqlite')).toBeUndefined();
    expect(nodeVersionProblem('v22.5.1', ' --max-old-space-size=512 --experimental-sqlite')).toBeUndefined();
  });
});

