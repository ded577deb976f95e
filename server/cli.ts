#!/usr/bin/env node
import { Command, CommanderError } from 'commander';

import { StorageUnavailableError } from '../adapters/errors.js';
import { KeyMaterialError } from '../keys/errors.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { start } from './start.js';
import { registerAuditCommands } from './cli-audit.js';
import { registerKeyCommands } from './cli-keys.js';
import { boot } from './boot.js';
import { checkInitialAccessTokenRequest, createInitialAccessToken } from './initial-access-tokens.js';

function fail(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`agentauth: invalid configuration: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof KeyMaterialError || err instanceof StorageUnavailableError) {
    process.stderr.write(`agentauth: cannot start: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`agentauth: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

async function startCommand(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel);
  const running = await start(config, log);
  const onSignal = (signal: NodeJS.Signals) => {
    log.info({ signal }, 'signal received');
    running.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}

const program = new Command()
  .name('agentauth')
  .description('OAuth 2 authorization server for AI agents')
  .exitOverride()
  .showHelpAfterError();

program
  .command('start')
  .description('start the server (configuration: environment variables and the JSON file named by AGENTAUTH_CONFIG)')
  .action(startCommand);

const clients = program.command('clients').description('manage OAuth clients');
const iat = clients.command('iat').description('initial access tokens for dynamic client registration (RFC 7591 §3)');
iat
  .command('create')
  .description('create an initial access token and print it (registration mode "token")')
  .option('--tier <tier>', 'token tier assigned to the client that registers with it')
  .option('--expires-in <seconds>', 'lifetime in seconds (default: registration.initialAccessTokenTTL)')
  .action(async (opts: { tier?: string; expiresIn?: string }) => {
    const config = loadConfig();
    const request = checkInitialAccessTokenRequest(config, opts);
    const log = createLogger('warn', process.stderr);
    const agentauth = await boot(config, log);
    try {
      const { token, expiresIn, tier } = await createInitialAccessToken(agentauth, request);
      process.stdout.write(`${token}\n`);
      process.stderr.write(`initial access token for tier ${tier}, expires in ${expiresIn} s; register with: Authorization: Bearer <token>\n`);
    } finally {
      await agentauth.close();
    }
  });

registerAuditCommands(program);
registerKeyCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  fail(err);
}
