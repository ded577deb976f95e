import { ASYNC_CONTEXT_FLAG, planAsyncContext } from '../../server/async-context.js';
import type { ProcessFacts } from '../../server/async-context.js';

/** What `agentauth start` decides about AsyncLocalStorage's implementation (server/async-context.ts). */
const facts = (over: Partial<ProcessFacts> = {}): ProcessFacts => ({
  argv: ['/usr/bin/node', '/srv/dist/server/cli.js', 'start', '--workers', '2'],
  execArgv: [],
  env: {},
  nodeVersion: 'v22.23.3',
  canExecve: true,
  ...over,
});

describe('planAsyncContext', () => {
  test('start on Node 22 without the flag: re-executes the same command with the flag first, keeping Node options', () => {
    expect(planAsyncContext(facts({ execArgv: ['--cpu-prof'] }))).toEqual({
      action: 'reexec',
      argv: ['/usr/bin/node', ASYNC_CONTEXT_FLAG, '--cpu-prof', '/srv/dist/server/cli.js', 'start', '--workers', '2'],
    });
  });

  test('the flag already on (command line or NODE_OPTIONS): kept, nothing re-executed', () => {
    expect(planAsyncContext(facts({ execArgv: [ASYNC_CONTEXT_FLAG] }))).toEqual({ action: 'keep', mode: 'frame', reason: 'flag' });
    expect(planAsyncContext(facts({ env: { NODE_OPTIONS: `--max-old-space-size=200 ${ASYNC_CONTEXT_FLAG}` } }))).toEqual({ action: 'keep', mode: 'frame', reason: 'flag' });
    // A look-alike option is not the flag.
    expect(planAsyncContext(facts({ env: { NODE_OPTIONS: `${ASYNC_CONTEXT_FLAG}-x` } })).action).toBe('reexec');
  });

  test('AGENTAUTH_ASYNC_CONTEXT=hooks keeps async_hooks; "frame" and empty are the default; anything else is refused', () => {
    expect(planAsyncContext(facts({ env: { AGENTAUTH_ASYNC_CONTEXT: 'hooks' } }))).toEqual({ action: 'keep', mode: 'hooks', reason: 'disabled' });
    expect(planAsyncContext(facts({ env: { AGENTAUTH_ASYNC_CONTEXT: 'frame' } })).action).toBe('reexec');
    expect(planAsyncContext(facts({ env: { AGENTAUTH_ASYNC_CONTEXT: '' } })).action).toBe('reexec');
    for (const bad of ['on', 'Frame', 'hooks ', 'x'.repeat(200)]) {
      const plan = planAsyncContext(facts({ env: { AGENTAUTH_ASYNC_CONTEXT: bad } }));
      expect(plan.action).toBe('refuse');
      if (plan.action === 'refuse') expect(plan.error.length).toBeLessThan(120);
    }
  });

  test('without process.execve (Windows, Node before 22.15), or once re-executed: runs on async_hooks, never loops', () => {
    expect(planAsyncContext(facts({ canExecve: false }))).toEqual({ action: 'keep', mode: 'hooks', reason: 'unsupported' });
    expect(planAsyncContext(facts({ env: { AGENTAUTH_ASYNC_CONTEXT_REEXEC: '1' } }))).toEqual({ action: 'keep', mode: 'hooks', reason: 'unsupported' });
  });

  test('Node 24 and later: AsyncContextFrame is the default, unless turned off; nothing re-executed', () => {
    expect(planAsyncContext(facts({ nodeVersion: 'v24.1.0' }))).toEqual({ action: 'keep', mode: 'frame', reason: 'node-default' });
    expect(planAsyncContext(facts({ nodeVersion: 'v24.1.0', execArgv: ['--no-async-context-frame'] }))).toEqual({ action: 'keep', mode: 'hooks', reason: 'node-default' });
  });

  test('other commands: nothing changes', () => {
    for (const command of ['keys', 'clients', 'audit', '--version', undefined]) {
      const argv = ['/usr/bin/node', '/srv/dist/server/cli.js', ...(command ? [command] : [])];
      expect(planAsyncContext(facts({ argv }))).toEqual({ action: 'keep', mode: 'hooks', reason: 'not-start' });
    }
  });
});
