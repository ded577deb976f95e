import { checkConfiguration } from '../../server/config-check.js';

/**
 * The Node.js version is judged first (server/config-check.ts): on an older Node, start cannot run (node:sqlite, the
 * store's module, is not there), and nothing after it is checked. The command's other checks run as processes in
 * test/http/config-check.test.ts; this one needs another Node, so the version is handed in.
 */
test.each(['v20.19.5', 'v18.20.8', 'not-a-version'])('Node.js %s: the check fails at once, as start would, and stops there', async (nodeVersion) => {
  const report = await checkConfiguration({ PORT: 'x' }, { nodeVersion });
  expect(report).toEqual({ ok: false, checks: [{ check: 'node', status: 'fail', detail: `cannot start: Node.js 22 or newer is required, this is ${nodeVersion}` }] });
});

test.each(['v22.12.0', 'v24.1.0'])('Node.js %s passes the node check (and an invalid PORT then fails the configuration check)', async (nodeVersion) => {
  const report = await checkConfiguration({ PORT: 'x' }, { nodeVersion });
  expect(report.checks).toEqual([
    { check: 'node', status: 'ok', detail: `Node.js ${nodeVersion}` },
    { check: 'configuration', status: 'fail', detail: 'invalid configuration: PORT: must be an integer from 1 to 65535' },
  ]);
  expect(report.ok).toBe(false);
});
