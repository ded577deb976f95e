#!/usr/bin/env node
import cluster from 'node:cluster';
import { Command, CommanderError } from 'commander';

import { StorageUnavailableError } from '../adapters/errors.js';
import { KeyMaterialError } from '../keys/errors.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { start } from './start.js';
import { registerAuditCommands } from './cli-audit.js';
import { registerKeyCommands } from './cli-keys.js';
import { registerBackupCommands } from './cli-backup.js';
import { registerClientCommands } from './cli-clients.js';
import { boot } from './boot.js';
import { checkInitialAccessTokenRequest, createInitialAccessToken } from './initial-access-tokens.js';

function fail(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`agentauth: invalid configuration: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof KeyMaterialError || err instanceof StorageUnavailableError) {
    process.stderr.write(`agentauth: ${process.argv[2] === 'start' ? 'cannot start: ' : ''}${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`agentauth: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

async function startCommand(opts: { workers?: string }): Promise<void> {
  const config = loadConfig();
  const workers = opts.workers === undefined ? 1 : Number(opts.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new ConfigError('--workers: must be a whole number from 1 to 64');
  if (workers > 1 && cluster.isPrimary) {
    if (config.store === 'memory') {
      throw new ConfigError('--workers: several workers need a shared store (SQLite, the default, or MONGODB_URI); AGENTAUTH_STORE=memory lives inside one process');
    }
    return startPrimary(workers, createLogger(config.logLevel));
  }
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
  // `on`, not `once`: a second signal (systemd sends one to every process of the group) must not kill a draining process.
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/**
 * The cluster primary: forks the workers (they share the listening port), restarts none on purpose (a crashing
 * worker is a bug to see, not to hide), and on SIGTERM/SIGINT lets every worker drain before exiting 0.
 */
function startPrimary(workers: number, log: ReturnType<typeof createLogger>): Promise<void> {
  log.info({ workers }, 'starting workers');
  for (let i = 0; i < workers; i += 1) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      log.error({ pid: worker.process.pid, code, signal }, 'worker exited; stopping the others');
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      process.exitCode = 1;
    }
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(process.exitCode ?? 0);
  });
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'signal received; stopping workers');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return Promise.resolve();
}

const program = new Command()
  .name('agentauth')
  .description('OAuth 2 authorization server for AI agents')
  .exitOverride()
  .showHelpAfterError();

program
  .command('start')
  .description('start the server (configuration: environment variables and the JSON file named by AGENTAUTH_CONFIG)')
  .option('--workers <n>', 'worker processes sharing the port (node:cluster) and the store; not with AGENTAUTH_STORE=memory')
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

registerClientCommands(clients, iat);
registerAuditCommands(program);
registerKeyCommands(program);
registerBackupCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  fail(err);
}
