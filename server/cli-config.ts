import type { Command } from 'commander';

import { announce, EXIT, withJson } from './cli-context.js';
import type { CheckReport } from './config-check.js';

/** Text for people: one line per check, its status first. */
function reportText(report: CheckReport): string {
  const lines = report.checks.map((c) => `${c.status.padEnd(4)}  ${c.check}: ${c.detail}`);
  return `${lines.join('\n')}\n`;
}

/**
 * `agentauth config check`: what `agentauth start` would refuse, found without starting (server/config-check.ts).
 * Exit 0 when nothing would (warnings included), else 2, the code `start` would exit with; every failure is also
 * said on stderr with the line `start` would print.
 */
export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('the configuration of this environment');
  withJson(config.command('check'))
    .description('check the configuration, store, KEK, signing keys and clients as `start` would, without starting or changing anything; exit 2 where start would refuse')
    .option('--workers <n>', 'check for `start --workers N`')
    .action(async (opts: { json?: boolean; workers?: string }) => {
      const { checkConfiguration } = await import('./config-check.js');
      const report = await checkConfiguration(process.env, { workers: opts.workers, onContext: announce });
      const failures = report.checks.filter((c) => c.status === 'fail');
      for (const f of failures) process.stderr.write(`agentauth: ${f.detail}\n`);
      if (opts.json === true) {
        const first = failures[0];
        const verdict = first ? { error: first.detail.startsWith('invalid configuration: ') ? 'invalid_configuration' : 'cannot_start', error_description: first.detail, exit_code: EXIT.usage } : {};
        process.stdout.write(`${JSON.stringify({ ...report, ...verdict }, null, 2)}\n`);
      } else {
        process.stdout.write(reportText(report));
      }
      const warnings = report.checks.filter((c) => c.status === 'warn').length;
      process.stderr.write(
        failures.length > 0
          ? `agentauth: config check: ${failures.length} ${failures.length === 1 ? 'problem' : 'problems'}; \`agentauth start\` would exit ${EXIT.usage}\n`
          : `agentauth: config check: no problems${warnings ? ` (${warnings} ${warnings === 1 ? 'warning' : 'warnings'})` : ''}\n`,
      );
      process.exit(failures.length > 0 ? EXIT.usage : EXIT.ok);
    });
}
