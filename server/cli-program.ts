// Evaluated by server/cli.ts once the process is settled: Node version checked, the async-context re-execution done,
// signals held for `start` and the heap policy applied (those modules are loaded before this one).
import { takeHeldSignal } from './signal-hold.js';
import { ASYNC_CONTEXT_FLAG, asyncContext } from './async-context.js';
import { heapPolicy } from './heap-policy.js';
import cluster from 'node:cluster';
import { Command, CommanderError } from 'commander';

import { StorageUnavailableError } from '../adapters/errors.js';
import { KeyMaterialError } from '../keys/errors.js';
import { ConfigError, loadConfig, workersCount } from './config.js';
import type { Running } from './start.js';
import { createLogger } from './logger.js';
import { registerAuditCommands } from './cli-audit.js';
import { registerKeyCommands } from './cli-keys.js';
import { registerBackupCommands } from './cli-backup.js';
import { registerConfigCommands } from './cli-config.js';
import { registerClientCommands } from './cli-clients.js';
import { registerSubjectCommands } from './cli-subjects.js';
import { checkInitialAccessTokenRequest, createInitialAccessToken } from './initial-access-tokens.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import { answer, CliUsageError, cliLogger, EXIT, packageVersion, requireInitialised, withJson, withStore } from './cli-context.js';

/** What a worker of `start --workers N` tells the primary once it serves (both listeners listening). */
const WORKER_STARTED = 'agentauth:worker-started';

const wantsJson = () => process.argv.includes('--json');

/** The error kinds a command can end with, as the `error` of its JSON answer under --json. */
function errorKind(err: unknown): string {
  if (err instanceof ConfigError) return 'invalid_configuration';
  if (err instanceof CliUsageError) return 'usage';
  if (err instanceof StorageUnavailableError) return 'storage_unavailable';
  if (err instanceof KeyMaterialError) return 'key_material';
  return 'failed';
}

/**
 * Every error that ends a command: one line on stderr (and under --json a JSON answer on stdout), exit code 2. Exit
 * code 1 is kept for negative answers, which commands set themselves (docs/operations.md, "The command line").
 */
function fail(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  const line =
    err instanceof ConfigError
      ? `invalid configuration: ${message}`
      : err instanceof KeyMaterialError || err instanceof StorageUnavailableError
        ? `${process.argv[2] === 'start' ? 'cannot start: ' : ''}${message}`
        : message;
  process.stderr.write(`agentauth: ${line}\n`);
  if (wantsJson()) process.stdout.write(`${JSON.stringify({ error: errorKind(err), error_description: line, exit_code: EXIT.usage })}\n`);
  process.exit(EXIT.usage);
}

async function startCommand(opts: { workers?: string }): Promise<void> {
  if (heapPolicy?.error) throw new ConfigError(heapPolicy.error);
  if (asyncContext?.action === 'refuse') throw new ConfigError(asyncContext.error);
  const config = loadConfig();
  const workers = workersCount(opts.workers, config);
  if (workers > 1 && cluster.isPrimary) {
    // Checked here as well as in each worker: a bad admin token is one line and exit 2, before any worker starts.
    const { adminListenerToken } = await import('./admin/token.js');
    adminListenerToken(config.admin);
    return startPrimary(workers, createLogger(config.logLevel), { adminListener: config.admin.port !== undefined });
  }
  const log = createLogger(config.logLevel);
  // The handlers go in before anything is started. Installed after start() (as they were), a SIGTERM sent as soon as
  // "agentauth listening" was logged could arrive before them and kill the process by the signal's default action,
  // with no drain and no exit code: a test saw it on a loaded CI machine, and an orchestrator can do the same.
  let running: Running | undefined;
  let requested: NodeJS.Signals | undefined;
  let startDeadline: NodeJS.Timeout | undefined;
  const stop = (server: Running, signal: NodeJS.Signals) => {
    log.info({ signal }, 'signal received');
    server.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (running) return stop(running, signal);
    // Still starting: stop as soon as start() is done (a failed start exits by itself); should it hang, stop after
    // the drain timeout anyway, since nothing has been served yet.
    if (requested) return;
    requested = signal;
    log.info({ signal }, 'signal received while starting; stopping once started');
    startDeadline = setTimeout(() => {
      log.error({ timeoutMs: config.shutdownTimeoutMs }, 'start did not finish in time after the signal; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs).unref();
  };
  // `on`, not `once`: a second signal (systemd sends one to every process of the group) must not kill a draining process.
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // One that arrived while the modules were loading (server/signal-hold.ts held it): acted on as if it came now.
  const held = takeHeldSignal();
  if (held) onSignal(held);
  logAsyncContext(log);
  log.debug({ heapGrowthPercent: heapPolicy?.growthPercent, heapPolicy: heapPolicy?.left ?? 'applied' }, 'V8 old-generation growth');
  // Loaded here, not at the top: the cluster primary and the other commands do without the provider and the app.
  const { start } = await import('./start.js');
  running = await start(config, log, { processes: workers });
  clearTimeout(startDeadline);
  if (cluster.isWorker) process.send?.(WORKER_STARTED);
  if (requested) stop(running, requested);
}

/** Says which AsyncLocalStorage implementation this process runs on; a warning when it is async_hooks not by choice. */
function logAsyncContext(log: ReturnType<typeof createLogger>): void {
  if (asyncContext?.action !== 'keep') return;
  const { mode, reason } = asyncContext;
  if (mode === 'hooks' && reason !== 'disabled') {
    log.warn({ asyncContext: mode, reason }, `AsyncLocalStorage runs on async_hooks (slower: a promise hook on every promise): start Node with ${ASYNC_CONTEXT_FLAG}`);
  } else {
    log.info({ asyncContext: mode, reason }, 'AsyncLocalStorage implementation');
  }
}

/**
 * The cluster primary: forks the workers (they share the listening port), restarts none on purpose (a crashing
 * worker is a bug to see, not to hide), and on SIGTERM/SIGINT lets every worker drain before exiting 0. A worker that
 * exits before it listened means the server could not start: exit 2, as `start` without workers; one that exits
 * later, exit 1.
 */
async function startPrimary(workers: number, log: ReturnType<typeof createLogger>, opts: { adminListener: boolean }): Promise<void> {
  log.info({ workers }, 'starting workers');
  if (opts.adminListener) {
    // GET /metrics on any worker answers with every worker's metrics, gathered here (server/metrics/cluster.ts).
    // Loaded only then: without an admin listener nothing serves metrics, and the primary stays as small as it was.
    const { serveClusterMetrics } = await import('./metrics/cluster.js');
    serveClusterMetrics();
  }
  // A refresh or RFC 7592 rotation a worker answered 503 is remembered here, so that its retry works on any worker.
  const { serveUndeliveredRotations } = await import('./undelivered-rotations.js');
  serveUndeliveredRotations();
  const listened = new Set<number>();
  cluster.on('message', (worker, message: unknown) => {
    if (message === WORKER_STARTED) listened.add(worker.id);
  });
  for (let i = 0; i < workers; i += 1) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      const started = listened.has(worker.id);
      // `pid` is the primary's own (every log line's); the worker's is `workerPid`.
      log.error({ workerPid: worker.process.pid, code, signal, started }, 'worker exited; stopping the others');
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      process.exitCode = started ? 1 : EXIT.usage;
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
  const held = takeHeldSignal();
  if (held) onSignal(held);
}

const program = new Command()
  .name('agentauth')
  .description('OAuth 2 authorization server for AI agents')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  // The program's own options (-V) only before a command: after it, commander would read an id that begins with
  // '-V' (generated ids are base64url) as `-V` and print the version instead of running the command.
  .enablePositionalOptions()
  .exitOverride()
  .showHelpAfterError();

program
  .command('start')
  .description('start the server (configuration: environment variables and the JSON file named by AGENTAUTH_CONFIG)')
  .option('--workers <n>', 'worker processes sharing the port (node:cluster) and the store; not with AGENTAUTH_STORE=memory')
  .action(startCommand);

const clients = program.command('clients').description('manage OAuth clients');
const iat = clients.command('iat').description('initial access tokens for dynamic client registration (RFC 7591 §3)');
withJson(iat.command('create'))
  .description('create an initial access token and print it (registration mode "token")')
  .option('--tier <tier>', 'token tier assigned to the client that registers with it')
  .option('--expires-in <seconds>', 'lifetime in seconds (default: registration.initialAccessTokenTTL)')
  .option('--uses <n>', 'registrations it allows, 1 to 1000 (default: any number until it expires)')
  .option('--grant-types <list>', 'the only grant types its clients may register, separated by commas (default: any registration.allowedGrantTypes allows)')
  .option('--scope <scopes>', 'the only scopes its clients may register, separated by spaces; a client that registers without scope gets these (default: any)')
  .action(async (opts: { tier?: string; expiresIn?: string; uses?: string; grantTypes?: string; scope?: string; json?: boolean }) => {
    const config = loadConfig();
    const request = checkInitialAccessTokenRequest(config, opts);
    // The store must be one a server has run on: boot() would otherwise create a store, a KEK and a first key.
    const ctx = await withStore({ command: 'clients iat create' }, async (storage, _config, c) => {
      await requireInitialised(storage, c, { command: 'clients iat create' });
      return c;
    });
    const log = cliLogger();
    const { boot } = await import('./boot.js');
    const agentauth = await boot(config, log, { serving: false });
    try {
      // Recorded on the CLI's own chain, as the other commands' administrative actions are.
      const audit = new AuditLog(agentauth.storage.audit, { chain: writerChain('cli') });
      const created = await createInitialAccessToken(agentauth, request, (event) => audit.record(event)).finally(() => audit.close());
      const { token, expiresIn, tier, uses, limits } = created;
      const view = { initial_access_token: token, tier, expires_in: expiresIn, uses: uses ?? null, grant_types: limits?.grant_types ?? null, scope: limits?.scope ?? null };
      answer(opts.json === true, ctx, view, () => token);
      const only = [limits?.grant_types && `grant types ${limits.grant_types.join(', ')}`, limits?.scope && `scope ${limits.scope}`].filter(Boolean);
      const allows = (uses === undefined ? '' : `, allows ${uses} registration${uses === 1 ? '' : 's'}`) + (only.length > 0 ? `, clients limited to ${only.join(' and ')}` : '');
      process.stderr.write(`initial access token for tier ${tier}, expires in ${expiresIn} s${allows}; register with: Authorization: Bearer <token>\n`);
    } finally {
      await agentauth.close();
    }
  });

registerClientCommands(clients, iat);
registerAuditCommands(program);
registerKeyCommands(program);
registerBackupCommands(program);
registerConfigCommands(program);
registerSubjectCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and --version end with 0; every parse error (unknown command or option, bad value) is a usage error.
    if (err.exitCode === 0) process.exit(EXIT.ok);
    if (wantsJson()) process.stdout.write(`${JSON.stringify({ error: 'usage', error_description: err.message, exit_code: EXIT.usage })}\n`);
    process.exit(EXIT.usage);
  }
  fail(err);
}
