import type { Command } from 'commander';

import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import { answer, CliUsageError, EXIT, requireInitialised, withJson, withStore } from './cli-context.js';
import { ConfigError, loadConfig } from './config.js';
import { revokeSubject } from './subject-revocation.js';

/** Longest `sub` accepted (agentauth's subjects are wallet addresses, `eip155:` account ids or client ids). */
const MAX_SUB_LENGTH = 512;

/** `agentauth subjects revoke <sub>`: everything one person granted, across every client. */
export function registerSubjectCommands(program: Command): void {
  const subjects = program.command('subjects').description('the people (token subjects) who signed in and consented');
  withJson(subjects.command('revoke <sub>'))
    .allowUnknownOption()
    .description("revoke every grant of a person (the tokens' `sub`) across all clients, with every token and code issued from them, and end their sign-in sessions")
    .action(async (sub: string, opts: { json?: boolean }) => {
      if (sub.length === 0 || sub.length > MAX_SUB_LENGTH || /[\u0000-\u001f\u007f]/.test(sub)) {
        throw new CliUsageError(`subjects revoke: <sub> must be 1 to ${MAX_SUB_LENGTH} characters without control characters, as it appears in the tokens' sub claim`);
      }
      if (loadConfig().store === 'memory') {
        throw new ConfigError('AGENTAUTH_STORE: the grants of the memory store live inside the server process; revoke them there (the person logs out, or each token is revoked)');
      }
      await withStore({ command: 'subjects revoke' }, async (storage, _config, ctx) => {
        await requireInitialised(storage, ctx, { command: 'subjects revoke' });
        const result = await revokeSubject(storage, sub);
        const found = result.grants.length > 0 || result.sessions > 0;
        if (found) {
          const audit = new AuditLog(storage.audit, { chain: writerChain('cli') });
          try {
            await audit.record({ type: 'subject.revoked', sub, details: { grants: result.grants.length, sessions: result.sessions, by: 'cli' } });
          } finally {
            await audit.close();
          }
        } else {
          process.stderr.write(`agentauth: subjects revoke: no grant or session of ${JSON.stringify(sub)} in ${ctx.location}\n`);
          process.exitCode = EXIT.negative;
        }
        answer(opts.json === true, ctx, { sub, grants: result.grants, sessions: result.sessions }, () =>
          found ? `revoked ${result.grants.length} grant${result.grants.length === 1 ? '' : 's'} of ${sub} (with every token and code issued from them) and ended ${result.sessions} session${result.sessions === 1 ? '' : 's'}` : '',
        );
      });
    });
}
