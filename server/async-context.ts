import { nodeOptionsText } from './node-options.js';

/**
 * `agentauth start` runs with Node's AsyncContextFrame implementation of `AsyncLocalStorage`.
 *
 * Why: two async-local stores are live on every request, oidc-provider's (lib/helpers/als.js, the request's context)
 * and agentauth's request id (server/http/request-id.ts). On Node 22 `AsyncLocalStorage` is built on async_hooks by
 * default: once a store is active, V8 calls a promise hook for every promise created, and each store's context is
 * copied onto it. A token request creates a few hundred promises, and that work was ≈ 55 µs of main-thread time per
 * DPoP token (`node async_hooks` and `node async_local_storage` in the profile, docs/performance.md). With
 * `--experimental-async-context-frame` (Node ≥ 22.7; the default from Node 24) the context travels with the promise
 * continuation instead, and no hook runs. `run()` and `getStore()`, the only calls agentauth and oidc-provider make,
 * give the same answers under both.
 *
 * How: the flag is a Node option, not a V8 one, so it cannot be turned on in a running process. When `start` finds
 * it off on Node 22 or 23, it replaces its own process image with the same command plus the flag
 * (`process.execve`: same PID, same stdio, same environment, so a container's PID 1 or a systemd unit is unaffected),
 * before anything else is loaded or opened. `AGENTAUTH_ASYNC_CONTEXT=hooks` keeps async_hooks (an escape hatch).
 * Where `process.execve` does not exist (Windows), the server runs on async_hooks and says so in its start-up log.
 */
export const ASYNC_CONTEXT_FLAG = '--experimental-async-context-frame';
const MARKER = 'AGENTAUTH_ASYNC_CONTEXT_REEXEC';

export type AsyncContextMode = 'frame' | 'hooks';

export type AsyncContextPlan =
  | { action: 'keep'; mode: AsyncContextMode; reason: 'flag' | 'node-default' | 'disabled' | 'unsupported' | 'not-start' }
  | { action: 'reexec'; argv: string[] }
  | { action: 'refuse'; error: string };

export interface ProcessFacts {
  argv: readonly string[];
  execArgv: readonly string[];
  env: NodeJS.ProcessEnv;
  nodeVersion: string;
  canExecve: boolean;
}

const FLAG_IN = (text: string) => /(^|\s)--experimental-async-context-frame(\s|$)/.test(text);
const FLAG_OFF_IN = (text: string) => /(^|\s)--no-(experimental-)?async-context-frame(\s|$)/.test(text);

/** What `agentauth start` does about the async-context implementation, from the facts of this process alone. */
export function planAsyncContext(facts: ProcessFacts): AsyncContextPlan {
  if (facts.argv[2] !== 'start') return { action: 'keep', mode: 'hooks', reason: 'not-start' };
  const wanted = facts.env.AGENTAUTH_ASYNC_CONTEXT;
  if (wanted !== undefined && wanted !== '' && wanted !== 'frame' && wanted !== 'hooks') {
    return { action: 'refuse', error: `AGENTAUTH_ASYNC_CONTEXT: must be "frame" (the default) or "hooks", not ${JSON.stringify(wanted.slice(0, 20))}` };
  }
  const options = nodeOptionsText(facts.execArgv, facts.env);
  const major = Number(facts.nodeVersion.replace(/^v/, '').split('.')[0]);
  if (major >= 24) return { action: 'keep', mode: FLAG_OFF_IN(options) ? 'hooks' : 'frame', reason: 'node-default' };
  if (FLAG_IN(options)) return { action: 'keep', mode: 'frame', reason: 'flag' };
  if (wanted === 'hooks') return { action: 'keep', mode: 'hooks', reason: 'disabled' };
  // The marker stops a loop should a Node ever accept the flag and not report it in execArgv.
  if (!facts.canExecve || facts.env[MARKER] === '1') return { action: 'keep', mode: 'hooks', reason: 'unsupported' };
  return { action: 'reexec', argv: [facts.argv[0]!, ASYNC_CONTEXT_FLAG, ...facts.execArgv, ...facts.argv.slice(1)] };
}

/** The plan applied to this process: for `start`, re-executes it with the flag (and never returns) when needed. */
function apply(): AsyncContextPlan {
  const execve = (process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
  const plan = planAsyncContext({
    argv: process.argv,
    execArgv: process.execArgv,
    env: process.env,
    nodeVersion: process.version,
    canExecve: typeof execve === 'function' && process.platform !== 'win32',
  });
  if (plan.action !== 'reexec' || !execve) return plan;
  try {
    execve.call(process, process.execPath, plan.argv, { ...process.env, [MARKER]: '1' });
  } catch {
    // Not replaced (the exec itself failed): carry on as we are.
  }
  return { action: 'keep', mode: 'hooks', reason: 'unsupported' };
}

/**
 * Applied when this module is evaluated: server/cli.ts imports it before anything else, so a re-execution happens
 * before any file, socket or store is opened. Undefined for commands other than `start`.
 */
export const asyncContext: AsyncContextPlan | undefined = process.argv[2] === 'start' ? apply() : undefined;
