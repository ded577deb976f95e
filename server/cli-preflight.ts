/**
 * What `agentauth` does before any other module of it is evaluated: server/cli.ts imports this module first, and ES
 * modules are evaluated in import order, so nothing else of agentauth has run when this module's body does.
 *
 * A Node.js older than 22 stops the command with one line that says so and how to run it on the project's Node 22
 * (exit 2), instead of failing later on whatever it meets first (`node:sqlite` missing, a Node option it does not
 * know); so is a Node 22 before 22.13 started without `--experimental-sqlite`. `config check` is left to report the
 * version in its own check list (server/config-check.ts: older than 22 fails, outside package.json's engines warns;
 * a missing node:sqlite fails its store check).
 */

/** The oldest Node.js major version agentauth runs on (package.json engines). */
export const MIN_NODE_MAJOR = 22;
/** The first Node.js 22 whose node:sqlite (the embedded store, and every command that opens it) needs no flag. */
const SQLITE_UNFLAGGED_MINOR = 13;

/**
 * Why this Node.js cannot run agentauth's commands, or undefined when it can: older than 22, or a Node 22 before 22.13
 * started without `--experimental-sqlite` (its node:sqlite is behind that flag). `options` is the Node options text
 * (the command line's and NODE_OPTIONS).
 */
export function nodeVersionProblem(version: string, options = ''): string | undefined {
  const [major = 0, minor = 0] = (/^v?(\d+)\.(\d+)/.exec(version) ?? []).slice(1).map(Number);
  const run = (install: string) =>
    `From a checkout run \`npx agentauth <command>\` (or \`npm start\`), which use the project's node@${MIN_NODE_MAJOR} devDependency, or install Node.js ${install}`;
  if (major < MIN_NODE_MAJOR) return `Node.js ${MIN_NODE_MAJOR} is required; this is ${version}. ${run(String(MIN_NODE_MAJOR))}`;
  if (major === MIN_NODE_MAJOR && minor < SQLITE_UNFLAGGED_MINOR && !/(^|\s)--experimental-sqlite(\s|$)/.test(options)) {
    const first = `${MIN_NODE_MAJOR}.${SQLITE_UNFLAGGED_MINOR}`;
    return `Node.js ${first} or later is required (node:sqlite, the embedded store, needs no flag from there); this is ${version}. ${run(first)}`;
  }
  return undefined;
}

const command = process.argv[2];
const problem = command === 'config' ? undefined : nodeVersionProblem(process.version, `${process.execArgv.join(' ')} ${process.env.NODE_OPTIONS ?? ''}`);
if (problem !== undefined) {
  process.stderr.write(`agentauth: ${problem}\n`);
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ error: 'failed', error_description: problem, exit_code: 2 })}\n`);
  process.exit(2);
}
