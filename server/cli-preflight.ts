/**
 * What `agentauth` does before any other module of it is evaluated: server/cli.ts imports this module first, and ES
 * modules are evaluated in import order, so neither the server's dependencies nor the async-context re-execution
 * (server/async-context.ts) have run when this module's body does.
 *
 * - A Node.js older than 22 stops the command with one line that says so and how to run it on the project's Node 22
 *   (exit 2), instead of failing later on whatever it meets first (`node:sqlite` missing, a Node option it does not
 *   know). `config check` is left to report it in its own check list (server/config-check.ts).
 * - For `start`, SIGTERM and SIGINT are held from here on. Loading the server's modules takes most of a second, and a
 *   signal then used to kill the process with the signal's default action (exit 143, nothing logged) instead of the
 *   documented stop once started (exit 0). The start command takes a held signal over (takeHeldSignal).
 */

/** The oldest Node.js major version agentauth runs on (package.json engines). */
export const MIN_NODE_MAJOR = 22;

/** Why this Node.js cannot run agentauth's commands, or undefined when it can. */
export function nodeVersionProblem(version: string): string | undefined {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1] ?? 0);
  if (major >= MIN_NODE_MAJOR) return undefined;
  return (
    `Node.js ${MIN_NODE_MAJOR} is required; this is ${version}. From a checkout run \`npx agentauth <command>\` ` +
    `(or \`npm start\`), which use the project's node@${MIN_NODE_MAJOR} devDependency, or install Node.js ${MIN_NODE_MAJOR}`
  );
}

const command = process.argv[2];
const problem = command === 'config' ? undefined : nodeVersionProblem(process.version);
if (problem !== undefined) {
  process.stderr.write(`agentauth: ${problem}\n`);
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ error: 'failed', error_description: problem, exit_code: 2 })}\n`);
  process.exit(2);
}

let held: NodeJS.Signals | undefined;
const hold = (signal: NodeJS.Signals): void => {
  held ??= signal;
};
if (command === 'start') {
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
