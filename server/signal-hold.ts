/**
 * For `agentauth start`: SIGTERM and SIGINT are held from the moment this module is evaluated. server/cli.ts imports
 * it right after server/async-context.ts, so in the process that serves: a re-execution (process.execve) has already
 * happened, and a signal taken here could not be lost with the old process image (before it, the signal's default
 * action ends the process that was about to be replaced, nothing started). Loading the server's modules takes most of a
 * second, and a signal then used to kill the process with the signal's default action (exit 143, nothing logged)
 * instead of the documented stop once started (exit 0). The start command takes a held signal over (takeHeldSignal).
 */

let held: NodeJS.Signals | undefined;
const hold = (signal: NodeJS.Signals): void => {
  held ??= signal;
};
if (process.argv[2] === 'start') {
  process.on('SIGTERM', hold);
  process.on('SIGINT', hold);
}

/**
 * For `start`, once its own handlers are installed: stops holding signals and returns the first one that arrived
 * while the server's modules were loading (undefined if none did), for the caller to act on as on any signal.
 */
export function takeHeldSignal(): NodeJS.Signals | undefined {
  process.off('SIGTERM', hold);
  process.off('SIGINT', hold);
  return held;
}
