/**
 * Just enough of a Dockerfile reader to replay agentauth's Dockerfile without an image builder (there is no Docker
 * engine on the test machines): instructions with their flags, line continuations, comments, build stages, ARG
 * defaults in FROM, exec-form (JSON) arguments, and .dockerignore matching. It is a test helper for this one file,
 * not a general parser: anything it does not understand throws, so a Dockerfile change it cannot follow fails the
 * test instead of passing unchecked.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface Instruction {
  /** Upper-case keyword: FROM, RUN, COPY, ... */
  keyword: string;
  /** `--name=value` flags before the arguments (RUN --mount=..., COPY --from=..., HEALTHCHECK --interval=...). */
  flags: Record<string, string>;
  /** Everything after the flags, as written (continuations joined). */
  rest: string;
  line: number;
}

export interface Stage {
  name: string | undefined;
  image: string;
  instructions: Instruction[];
}

const KNOWN = new Set(['FROM', 'ARG', 'ENV', 'WORKDIR', 'COPY', 'RUN', 'USER', 'EXPOSE', 'VOLUME', 'HEALTHCHECK', 'STOPSIGNAL', 'ENTRYPOINT', 'CMD', 'LABEL']);

export function parseDockerfile(text: string): { args: Record<string, string>; stages: Stage[] } {
  const instructions: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i += 1) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\')) {
      i += 1;
      const next = lines[i] ?? '';
      if (/^\s*#/.test(next)) continue;
      line = `${line.slice(0, -1)} ${next.trim()}`;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile line ${start + 1}: cannot read ${JSON.stringify(line)}`);
    const keyword = m[1]!.toUpperCase();
    if (!KNOWN.has(keyword)) throw new Error(`Dockerfile line ${start + 1}: ${keyword} is not replayed by this test`);
    let rest = m[2]!.trim();
    const flags: Record<string, string> = {};
    for (let f = /^--([a-z-]+)=(\S+)\s+/.exec(rest); f; f = /^--([a-z-]+)=(\S+)\s+/.exec(rest)) {
      flags[f[1]!] = f[2]!;
      rest = rest.slice(f[0].length);
    }
    instructions.push({ keyword, flags, rest, line: start + 1 });
  }

  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'ARG' && stages.length === 0) {
      const [name, value] = ins.rest.split('=', 2) as [string, string | undefined];
      args[name] = value ?? '';
      continue;
    }
    if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.rest);
      if (!m) throw new Error(`Dockerfile line ${ins.line}: cannot read FROM ${ins.rest}`);
      const image = m[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => args[(a ?? b)!] ?? '');
      stages.push({ name: m[2], image, instructions: [] });
      continue;
    }
    if (stages.length === 0) throw new Error(`Dockerfile line ${ins.line}: ${ins.keyword} before FROM`);
    stages.at(-1)!.instructions.push(ins);
  }
  return { args, stages };
}

/** The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK's CMD), or undefined for shell form. */
export function execForm(rest: string): string[] | undefined {
  if (!rest.startsWith('[')) return undefined;
  const parsed: unknown = JSON.parse(rest);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`not an exec form: ${rest}`);
  return parsed as string[];
}

/** `ENV a=b c=d` (the only form used here) as a record. */
export function envOf(rest: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of rest.split(/\s+/)) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`ENV ${rest}: use key=value pairs`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/** Docker's pattern syntax for one path segment or `**`, as a RegExp over a slash-separated relative path. */
function patternRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i += 1) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      re += '.*';
      i += 1;
      if (pattern[i + 1] === '/') i += 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * .dockerignore as Docker applies it: each line a pattern (`!` re-includes), matched against the path and each of
 * its parent directories; the last pattern that matches decides.
 */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => ({ include: l.startsWith('!'), re: patternRegExp(l.replace(/^!/, '').replace(/^\/+|\/+$/g, '')) }));
  return (path: string) => {
    const parts = path.split('/');
    const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let ignored = false;
    for (const rule of rules) if (candidates.some((c) => rule.re.test(c))) ignored = !rule.include;
    return ignored;
  };
}

/** Relative paths of the files of `root` that the builder would receive (not ignored); excluded directories are not walked. */
export function buildContext(root: string, ignored: (path: string) => boolean): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel))) {
      const path = rel ? `${rel}/${name}` : name;
      const isDir = statSync(join(root, path)).isDirectory();
      if (isDir) {
        // An ignored directory is still walked when a later `!` rule could bring back something inside it; an
        // allow-list re-includes whole top-level entries, so ignored directories here hold nothing to bring back.
        if (!ignored(path) || !ignored(`${path}/x`)) walk(path);
      } else if (!ignored(path)) out.push(path);
    }
  };
  walk('');
  return out.sort();
}
