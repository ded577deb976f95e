import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { embeddedKek, fallbackKek } from '../../keys/kek.js';
import { ROOT } from '../support/server.js';

const run = promisify(execFile);

describe('the embedded store generates its key-encryption key once, whoever starts first', () => {
  let dir: string;
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'agentauth-kek-')); });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  test('twelve concurrent starts on an empty data directory all get one KEK; exactly one generated it', async () => {
    const dataDir = join(dir, 'data');
    const results = await Promise.all(Array.from({ length: 12 }, () => embeddedKek({}, dataDir, false)));
    expect(results.filter((r) => r.origin === 'generated')).toHaveLength(1);
    expect(results.filter((r) => r.origin === 'data-dir')).toHaveLength(11);
    const onDisk = Buffer.from((await readFile(join(dataDir, 'kek'), 'utf8')).trim(), 'base64');
    for (const r of results) expect(r.kek.equals(onDisk)).toBe(true);
    expect((await stat(join(dataDir, 'kek'))).mode & 0o777).toBe(0o600);
    expect(await readdir(dataDir)).toEqual(['kek']); // no temporary file left behind
  });

  test('separate processes racing on one data directory (as --workers does) agree on the KEK', async () => {
    const dataDir = join(dir, 'data');
    // Each child loads the module, then waits for one shared instant, so the starts overlap as closely as workers' do.
    const goAt = Date.now() + 1500;
    const script = `import(${JSON.stringify(join(ROOT, 'dist', 'keys', 'kek.js'))}).then(async (m) => {
      while (Date.now() < ${goAt});
      const r = await m.embeddedKek({}, ${JSON.stringify(dataDir)}, false);
      process.stdout.write(JSON.stringify({ origin: r.origin, kek: r.kek.toString('base64') }));
    })`;
    const outs = await Promise.all(Array.from({ length: 6 }, () => run(process.execPath, ['-e', script])));
    const results = outs.map((o) => JSON.parse(o.stdout) as { origin: string; kek: string });
    expect(results.filter((r) => r.origin === 'generated')).toHaveLength(1);
    expect(new Set(results.map((r) => r.kek)).size).toBe(1);
    expect(results[0]!.kek).toBe((await readFile(join(dataDir, 'kek'), 'utf8')).trim());
  });

  test('an existing kek file is read, never replaced', async () => {
    const kek = Buffer.alloc(32, 7);
    await writeFile(join(dir, 'kek'), `${kek.toString('base64')}\n`, { mode: 0o600 });
    const r = await embeddedKek({}, dir, true);
    expect(r.origin).toBe('data-dir');
    expect(r.kek.equals(kek)).toBe(true);
  });

  test('keys without a kek file: refused, and no new KEK is written that would orphan them', async () => {
    await expect(embeddedKek({}, dir, true)).rejects.toThrow(/signing keys exist .* nothing was changed: agentauth never replaces keys it cannot open/);
    expect(await readdir(dir)).toEqual([]);
  });

  test('temporary KEK files left by a process that died while generating are removed; a running process\'s are not', async () => {
    const dead = (await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])).stdout;
    const stale = `kek.${dead}.0123456789ab.tmp`;
    const live = `kek.${process.pid}.ba9876543210.tmp`;
    await writeFile(join(dir, stale), `${Buffer.alloc(32, 1).toString('base64')}\n`, { mode: 0o600 });
    await writeFile(join(dir, live), `${Buffer.alloc(32, 2).toString('base64')}\n`, { mode: 0o600 });
    await writeFile(join(dir, 'kek.notes.tmp'), 'not ours\n');
    const r = await embeddedKek({}, dir, false);
    expect(r.origin).toBe('generated');
    expect((await readdir(dir)).sort()).toEqual(['kek', 'kek.notes.tmp', live].sort());
  });

  test('those temporary files are removed also when the KEK is now configured (AGENTAUTH_KEK)', async () => {
    const dead = (await run(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])).stdout;
    await writeFile(join(dir, `kek.${dead}.0123456789ab.tmp`), `${Buffer.alloc(32, 1).toString('base64')}\n`, { mode: 0o600 });
    const r = await embeddedKek({ kek: Buffer.alloc(32, 3).toString('base64') }, dir, false);
    expect(r.origin).toBe('AGENTAUTH_KEK');
    expect(await readdir(dir)).toEqual([]);
  });

  test('a kek file still being written (no hard links: created in place) is waited for, then read', async () => {
    const kek = Buffer.alloc(32, 9);
    const text = `${kek.toString('base64')}\n`;
    await writeFile(join(dir, 'kek'), text.slice(0, 20), { mode: 0o600 });
    setTimeout(() => void writeFile(join(dir, 'kek'), text, { mode: 0o600 }), 300);
    const r = await embeddedKek({}, dir, false);
    expect(r.origin).toBe('data-dir');
    expect(r.kek.equals(kek)).toBe(true);
  });

  test('a short kek file that never fills is refused after the wait; with keys already stored, at once', async () => {
    await writeFile(join(dir, 'kek'), 'c2hvcnQ=\n', { mode: 0o600 });
    let started = Date.now();
    await expect(embeddedKek({}, dir, false)).rejects.toThrow(/must be 32 bytes encoded as base64/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    started = Date.now();
    await expect(embeddedKek({}, dir, true)).rejects.toThrow(/must be 32 bytes encoded as base64/);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  test('a malformed kek file is refused with what it must hold', async () => {
    await writeFile(join(dir, 'kek'), 'not a key\n');
    await expect(embeddedKek({}, dir, false)).rejects.toThrow(/must be 32 bytes encoded as base64/);
  });
});

describe('the fallback KEK of a rotation (AGENTAUTH_KEK_FALLBACK, AGENTAUTH_KEK_FALLBACK_FILE)', () => {
  const kek = Buffer.alloc(32, 1);
  const other = Buffer.alloc(32, 2);

  test('none configured: none; from the variable or from a file: that key', async () => {
    expect(await fallbackKek({}, kek)).toBeUndefined();
    expect(await fallbackKek({ kekFallback: other.toString('base64') }, kek)).toEqual(other);
    const dir = await mkdtemp(join(tmpdir(), 'agentauth-kek-fallback-'));
    try {
      await writeFile(join(dir, 'old-kek'), `${other.toString('base64')}\n`, { mode: 0o600 });
      expect(await fallbackKek({ kekFallbackFile: join(dir, 'old-kek') }, kek)).toEqual(other);
      await expect(fallbackKek({ kekFallbackFile: join(dir, 'missing') }, kek)).rejects.toThrow(/^AGENTAUTH_KEK_FALLBACK_FILE: cannot read .*missing \(ENOENT\)/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('refused, naming the setting: not 32 bytes of base64, or the KEK itself', async () => {
    await expect(fallbackKek({ kekFallback: 'c2hvcnQ=' }, kek)).rejects.toThrow(/^AGENTAUTH_KEK_FALLBACK must be 32 bytes encoded as base64/);
    await expect(fallbackKek({ kekFallback: kek.toString('base64') }, kek)).rejects.toThrow(/^AGENTAUTH_KEK_FALLBACK is the KEK itself/);
  });
});
