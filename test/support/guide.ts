import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';

import ts from 'typescript';

import { ROOT } from './server.js';

/**
 * Code from the guides in docs/, taken as written, for tests that run it against agentauth: a guide whose example no
 * longer works with the server fails its test instead of misleading its readers.
 */

/**
 * The code block in one of `languages` (```sh, ```json, ...; '' for a plain ```) that follows the first occurrence
 * of `marker` in docs/<doc>, without its fences: the first such block after the end of the marker. A block indented
 * under a list item is returned without that indentation.
 */
export function guideFencedBlock(doc: string, marker: string, languages: readonly string[]): string {
  const text = readFileSync(join(ROOT, 'docs', doc), 'utf8');
  const at = text.indexOf(marker);
  if (at < 0) throw new Error(`docs/${doc} no longer contains ${JSON.stringify(marker)}`);
  // An opening fence starts its line, after the indentation of the list item it belongs to.
  const fence = new RegExp(`^( *)\`\`\`(${languages.map((l) => l.replace(/[^a-z]/g, '')).join('|')})\n`, 'gm');
  fence.lastIndex = at + marker.length;
  const opened = fence.exec(text);
  if (!opened) throw new Error(`docs/${doc} has no ${languages.join(' or ')} code block after ${JSON.stringify(marker)}`);
  const indent = opened[1]!;
  const body = opened.index + opened[0].length;
  const end = text.indexOf(`\n${indent}\`\`\``, body);
  return text
    .slice(body, end + 1)
    .split('\n')
    .map((line) => (line.startsWith(indent) ? line.slice(indent.length) : line))
    .join('\n');
}

/** PATH for a guide's shell lines: the project's Node first (`node dist/server/cli.js`, `npm start`), then the caller's, for bash and curl. */
export const GUIDE_PATH = [dirname(process.execPath), process.env.PATH ?? ''].join(delimiter);

/**
 * `text` with every `from` replaced by `to`, for the values a guide's reader fills in; throws, naming `where`, unless
 * `from` occurs exactly `times` times, so a guide that moved or changed the value fails instead of running unreplaced.
 */
export function replaceExactly(text: string, from: string, to: string, where: string, times = 1): string {
  const parts = text.split(from);
  if (parts.length - 1 !== times) throw new Error(`${where} should contain ${JSON.stringify(from)} ${times} time(s), found ${parts.length - 1}:\n${text}`);
  return parts.join(to);
}

/** The ```ts block that follows the first occurrence of `marker` in docs/<doc>. */
export function guideBlock(doc: string, marker: string): string {
  return guideFencedBlock(doc, marker, ['ts']);
}

/** The shell block (```sh or ```bash) that follows the first occurrence of `marker` in docs/<doc>. */
export function guideShellBlock(doc: string, marker: string): string {
  return guideFencedBlock(doc, marker, ['sh', 'bash']);
}

/** A fresh directory inside the repository (so that the guide's imports resolve from its node_modules), with `files`. */
export function guideDir(label: string, files: Record<string, string>): string {
  const dir = join(ROOT, 'test-results', `${label}-${randomUUID()}`);
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}

/**
 * The compiler's complaints about `files` under the project's own settings (tsconfig.json: strict, NodeNext, ...),
 * with Node's types only (a guide's reader has no jest) and nothing emitted; none: an empty list.
 */
export function typeProblems(files: string[]): string[] {
  const tsconfig = ts.readConfigFile(join(ROOT, 'tsconfig.json'), ts.sys.readFile);
  const { options } = ts.parseJsonConfigFileContent(tsconfig.config, ts.sys, ROOT);
  const program = ts.createProgram(files, { ...options, types: ['node'], noEmit: true, sourceMap: false, rootDir: undefined, outDir: undefined });
  return ts.getPreEmitDiagnostics(program).map((d) => `${d.file ? `${d.file.fileName.split('/').pop()}: ` : ''}${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
}

/** `source` as plain JavaScript (ES modules), types removed. */
export function toJavaScript(source: string): string {
  return ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2023, verbatimModuleSyntax: false } }).outputText;
}

/** Runs a guide's script as the guide says (`node <file>`: Node 22 strips the types), with PATH and `env` only; its standard output. */
export async function runGuideScript(file: string, env: Record<string, string>): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [file], { env: { PATH: process.env.PATH, ...env }, timeout: 30_000 });
  return stdout;
}

/** How a shell script ended: its exit code (null when a signal ended it, named in `signal`) and what it printed. */
export interface ShellResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * A guide's shell lines run as `bash -c script` with exactly `env`, whatever bash exits with (for the failures a
 * guide describes: exit codes of refused commands). Standard input is /dev/null, as in a script: a socket there
 * (Node's default pipes) makes bash source ~/.bashrc as for a remote shell.
 */
export function runShellStatus(script: string, env: Record<string, string>, cwd?: string): Promise<ShellResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** A guide's shell lines run as `bash -c script` with exactly `env` (see runShellStatus), failing unless bash exits 0. */
export async function runShell(script: string, env: Record<string, string>, cwd?: string): Promise<{ stdout: string; stderr: string }> {
  const { code, signal, stdout, stderr } = await runShellStatus(script, env, cwd);
  if (code !== 0) throw new Error(`bash -c exited with ${code ?? signal}: ${stdout}${stderr}\n${script}`);
  return { stdout, stderr };
}
