/**
 * The Dockerfile, replayed without an image builder (none on the test machines): its stages are read, the build
 * context is what .dockerignore lets through, and its steps run on this machine in a temporary root per stage.
 *
 * - Build stage: the context files its COPY lines name are copied; `npm ci` is stood in for by this checkout's
 *   node_modules (installed from the same package-lock.json, with every dev dependency, 500+ MB), and its
 *   `npm run build` runs for real, so a source directory missing from its COPY lines fails the build here.
 * - Final stage: its COPY lines are replayed, its `npm ci --omit=dev ...` RUN runs for real as written (from the npm
 *   cache where it can, else the registry), `COPY --from=build` takes the build stage's dist, and its ENTRYPOINT +
 *   CMD start the server from that production-only tree, outside this checkout so nothing resolves to the
 *   checkout's node_modules. The server must then serve discovery, a token and the health check.
 * Its other RUN line (creating the data directory) is filesystem set-up for the image and is not replayed: the
 * data directory is a temporary one here.
 */
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

import { freePort } from '../support/ferretdb.js';
import { ROOT, tempDir, writeConfig } from '../support/server.js';
import { buildContext, dockerignore, envOf, execForm, parseDockerfile } from '../support/dockerfile.js';
import type { Instruction, Stage } from '../support/dockerfile.js';

const run = promisify(execFile);
const dockerfile = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const ignored = dockerignore(readFileSync(join(ROOT, '.dockerignore'), 'utf8'));
const [buildStage, finalStage] = [dockerfile.stages[0]!, dockerfile.stages.at(-1)!];
const all = (stage: Stage, keyword: string): Instruction[] => stage.instructions.filter((i) => i.keyword === keyword);
const only = (stage: Stage, keyword: string): Instruction => {
  const found = all(stage, keyword);
  if (found.length !== 1) throw new Error(`expected one ${keyword} in stage ${stage.name ?? '(final)'}, found ${found.length}`);
  return found[0]!;
};
const SECRET = 'container-client-secret-0123456789abcdef';

describe('the Dockerfile, as written', () => {
  test('two stages on Node 22: the build stage installs everything and builds; the final stage installs production dependencies only', () => {
    expect(dockerfile.stages).toHaveLength(2);
    for (const stage of dockerfile.stages) expect(stage.image).toMatch(/^node:22(\.\d+)*-[a-z]+-slim(@sha256:[0-9a-f]{64})?$/);
    expect(buildStage.name).toBe('build');
    const buildRuns = all(buildStage, 'RUN').map((r) => r.rest);
    expect(buildRuns[0]).toMatch(/^npm ci\b/);
    expect(buildRuns[0]).not.toMatch(/--omit=dev/);
    expect(buildRuns.at(-1)).toBe('npm run build');

    const finalRuns = all(finalStage, 'RUN').map((r) => r.rest);
    expect(finalRuns.filter((r) => r.startsWith('npm '))).toEqual([expect.stringMatching(/^npm ci --omit=dev\b/)]);
    // Nothing but dist comes from the build stage: its node_modules (with dev dependencies) never reaches the image.
    const fromBuild = all(finalStage, 'COPY').filter((c) => c.flags.from !== undefined);
    expect(fromBuild.map((c) => [c.flags.from, c.rest])).toEqual([['build', '/app/dist ./dist']]);
    expect(envOf(only(finalStage, 'ENV').rest)).toMatchObject({ NODE_ENV: 'production' });
  });

  test('a non-root user, node as PID 1 in exec form (no npm, no shell), SIGTERM, and a health check', () => {
    const user = only(finalStage, 'USER').rest;
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    const entrypoint = execForm(only(finalStage, 'ENTRYPOINT').rest);
    const cmd = execForm(only(finalStage, 'CMD').rest);
    expect([...entrypoint!, ...cmd!]).toEqual(['node', 'dist/server/cli.js', 'start']);
    expect(only(finalStage, 'STOPSIGNAL').rest).toBe('SIGTERM');
    const healthcheck = only(finalStage, 'HEALTHCHECK');
    expect(healthcheck.rest).toMatch(/^CMD \[/);
    expect(execForm(healthcheck.rest.replace(/^CMD /, ''))).toEqual(['node', 'dist/server/healthcheck.js', '/healthz']);
    // The data directory the image declares is the one the server uses.
    expect(envOf(only(finalStage, 'ENV').rest).AGENTAUTH_DATA_DIR).toBe(JSON.parse(only(finalStage, 'VOLUME').rest)[0]);
  });

  test('.dockerignore keeps host installs, builds, data directories and the repository out of the build context', () => {
    for (const path of ['node_modules/koa/package.json', 'dist/server/cli.js', '.agentauth/kek', '.agentauth/agentauth.sqlite', '.git/HEAD', 'test/http/tokens.test.ts', '.env', 'docs/operations.md']) {
      expect([path, ignored(path)]).toEqual([path, true]);
    }
    for (const path of ['package.json', 'package-lock.json', 'tsconfig.build.json', 'server/cli.ts', 'adapters/sqlite.ts', 'interactions/routes.ts', 'keys/seal.ts']) {
      expect([path, ignored(path)]).toEqual([path, false]);
    }
  });
});

describe('the Dockerfile, replayed', () => {
  const root = tempDir('agentauth-image-');
  const context = buildContext(ROOT, ignored);
  /** Where a stage's absolute path lives in this replay. */
  const at = (stage: 'build' | 'final', path: string) => join(root, stage, path);
  // The production tree is about 60 MB: not left behind in the temporary directory.
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** COPY <src>... <dest> from the build context, with Docker's semantics (a directory's contents are copied). */
  function copyFromContext(stage: 'build' | 'final', workdir: string, ins: Instruction): void {
    const parts = ins.rest.split(/\s+/);
    const dest = parts.pop()!;
    const target = at(stage, dest.startsWith('/') ? dest : join(workdir, dest));
    for (const src of parts) {
      const files = context.filter((f) => f === src || f.startsWith(`${src}/`));
      if (files.length === 0) throw new Error(`COPY ${src}: not in the build context (.dockerignore)`);
      for (const file of files) {
        const out = file === src ? (dest.endsWith('/') || parts.length > 1 ? join(target, src) : target) : join(target, file.slice(src.length + 1));
        mkdirSync(dirname(out), { recursive: true });
        copyFileSync(join(ROOT, file), out);
      }
    }
  }

  function workdirOf(stage: Stage): string {
    return only(stage, 'WORKDIR').rest;
  }

  test('the build stage compiles the server from the files it copies', async () => {
    const workdir = workdirOf(buildStage);
    mkdirSync(at('build', workdir), { recursive: true });
    for (const ins of buildStage.instructions) {
      if (ins.keyword === 'COPY') copyFromContext('build', workdir, ins);
      else if (ins.keyword === 'RUN' && /^npm ci\b/.test(ins.rest)) symlinkSync(join(ROOT, 'node_modules'), join(at('build', workdir), 'node_modules'));
      else if (ins.keyword === 'RUN') await run('sh', ['-c', ins.rest], { cwd: at('build', workdir), timeout: 240_000 });
    }
    expect(existsSync(join(at('build', workdir), 'dist', 'server', 'cli.js'))).toBe(true);
    expect(existsSync(join(at('build', workdir), 'dist', 'server', 'healthcheck.js'))).toBe(true);
  }, 300_000);

  test('the final stage installs production dependencies only, and the server runs from that tree', async () => {
    const workdir = workdirOf(finalStage);
    const app = at('final', workdir);
    mkdirSync(app, { recursive: true });
    for (const ins of finalStage.instructions) {
      if (ins.keyword === 'COPY' && ins.flags.from === 'build') {
        const [src, dest] = ins.rest.split(/\s+/) as [string, string];
        cpSync(at('build', src), join(app, dest), { recursive: true });
      } else if (ins.keyword === 'COPY') {
        copyFromContext('final', workdir, ins);
      } else if (ins.keyword === 'RUN' && ins.rest.startsWith('npm ')) {
        // As written; the npm cache first, the registry for what it lacks.
        await run('sh', ['-c', ins.rest], { cwd: app, timeout: 240_000, env: { ...process.env, npm_config_prefer_offline: 'true' } });
      }
    }
    // Production dependencies are there, dev dependencies are not, and nothing above the tree could supply them.
    const pkg = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies)) expect([dep, existsSync(join(app, 'node_modules', dep))]).toEqual([dep, true]);
    for (const dep of Object.keys(pkg.devDependencies)) expect([dep, existsSync(join(app, 'node_modules', dep))]).toEqual([dep, false]);
    for (let dir = dirname(app); dir !== dirname(dir); dir = dirname(dir)) expect(existsSync(join(dir, 'node_modules'))).toBe(false);
    // The wallet sign-in's secp256k1 binding is the package's prebuilt one (install scripts are not run).
    await expect(run(process.execPath, ['-e', "require('secp256k1/bindings.js')"], { cwd: app })).resolves.toBeDefined();

    // ENTRYPOINT + CMD, with the image's environment; `node` is this Node 22.
    const [, ...args] = [...execForm(only(finalStage, 'ENTRYPOINT').rest)!, ...execForm(only(finalStage, 'CMD').rest)!];
    const port = await freePort();
    const dataDir = join(root, 'data');
    const env = {
      PATH: process.env.PATH,
      ...envOf(only(finalStage, 'ENV').rest),
      PORT: String(port),
      AGENTAUTH_DATA_DIR: dataDir,
      AGENTAUTH_CONFIG: writeConfig(root, { resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }], clients: [{ client_id: 'svc', client_secret: SECRET }] }),
    };
    const child = spawn(process.execPath, args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const healthcheck = (probeArg?: string) => {
      const probe = execForm(only(finalStage, 'HEALTHCHECK').rest.replace(/^CMD /, ''))!.slice(1);
      if (probeArg !== undefined) probe[1] = probeArg;
      return run(process.execPath, probe, { cwd: app, env }).then(() => 0, (err: { code?: number }) => err.code ?? -1);
    };
    try {
      const deadline = Date.now() + 30_000;
      while (!out.includes('"agentauth listening"')) {
        if (child.exitCode !== null) throw new Error(`the server exited at start (${child.exitCode}): ${out}`);
        if (Date.now() > deadline) throw new Error(`the server did not start: ${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = `http://127.0.0.1:${port}`;
      const discovery = await fetch(`${url}/.well-known/openid-configuration`);
      expect(discovery.status).toBe(200);
      expect(((await discovery.json()) as { token_endpoint: string }).token_endpoint).toBe(`${url}/token`);
      const token = await fetch(`${url}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`svc:${SECRET}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials&scope=read',
      });
      expect(token.status).toBe(200);
      expect(await healthcheck()).toBe(0);
      // The readiness variant (Compose, Swarm) and a probe it does not know (a usage error, exit 2).
      expect(await healthcheck('/readyz')).toBe(0);
      expect(await healthcheck('/jwks')).toBe(2);
      expect(out).toMatch(/"request_id":"healthcheck"[^\n]*"path":"\/readyz"/);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(out).toContain('"stopped"');
    // Nothing answers any more: the health check says so.
    expect(await healthcheck()).toBe(1);
  }, 300_000);
});
