/**
 * What `agentauth` does before any other module of it is evaluated: server/cli.ts imports this module first, and ES
 * modules are evaluated in import order, so nothing else of agentauth has run when this module's body does.
 *
 * A Node.js older than 22 stops the command with one line that says so and how to run it on the project's Node 22
 * (exit 2), instead of failing later on whatever it meets first (`node:sqlite` missing, a Node option it does not
 * know). `config check` is left to report it in its own check list (server/config-check.ts), which also warns about a
 * Node 22 older than 22.13 (whose node:sqlite needs a flag); this check refuses what config check refuses.
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
