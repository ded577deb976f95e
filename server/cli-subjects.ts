import type { Command } from 'commander';

import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import { answer, CliUsageError, EXIT, requireInitialised, withJson, withStore } from './cli-context.js';
import { ConfigError, loadConfig } from './config.js';
import { parseSubject, revokeSubject } from './subject-revocation.js';
import type { SubjectRevocation } from './subject-revocation.js';

/** `agentauth subjects revoke <sub>`: everything one person granted, across every client. */
export function registerSubjectCommands(program: Command): void {
  const subjects = program.command('subjects').description('the people (token subjects) who signed in and consented');
  withJson(subjects.command('revoke <sub>'))
    .allowUnknownOption()
    .description("revoke every grant of a person (the tokens' `sub`) across all clients, with every token and code issued from them, and end their sign-in sessions")
    .action(async (given: string, opts: { json?: boolean }) => {
      const parsed = parseSubject(given);
      if ('problem' in parsed) throw new CliUsageError(`subjects revoke: ${parsed.problem}`);
      const { sub } = parsed;
      if (loadConfig().store === 'memory') {
        throw new ConfigError('AGENTAUTH_STORE: the grants of the memory store live inside the server process; revoke them through its admin API');
      }
      await withStore({ command: 'subjects revoke' }, async (storage, _config, ctx) => {
        await requireInitialised(storage, ctx, { command: 'subjects revoke' });
        const audit = new AuditLog(storage.audit, { chain: writerChain('cli') });
        let result: SubjectRevocation | undefined;
        try {
          result = await revokeSubject(storage, sub, (found) => audit.record({ type: 'subject.revoked', sub, details: { ...found, actor: 'cli' } }));
        } finally {
          await audit.close();
        }
        if (!result) {
          process.stderr.write(`agentauth: subjects revoke: no grant or session of ${JSON.stringify(sub)} in ${ctx.location}\n`);
          process.exitCode = EXIT.negative;
        }
        const revoked = result ?? { grants: [], sessions: 0 };
        answer(opts.json === true, ctx, { sub, ...revoked }, () =>
          result
            ? `revoked ${revoked.grants.length} grant${revoked.grants.length === 1 ? '' : 's'} of ${sub} (with every token and code issued from them) and ended ${revoked.sessions} session${revoked.sessions === 1 ? '' : 's'}`
            : '',
        );
      });
    });
}
