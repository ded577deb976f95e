import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { KeyMaterialError } from './errors.js';
import { KEK_BYTES } from './seal.js';

export interface KekSource {
  /** AGENTAUTH_KEK: base64 of 32 bytes. */
  kek?: string | undefined;
  /** AGENTAUTH_KEK_FILE: a file holding base64 of 32 bytes. */
  kekFile?: string | undefined;
}

export interface ResolvedKek {
  kek: Buffer;
  /** Where it came from, for the start-up log (never the key itself). */
  origin: 'AGENTAUTH_KEK' | 'AGENTAUTH_KEK_FILE' | 'data-dir' | 'generated';
  path?: string;
}

export function decodeKek(text: string, setting: string): Buffer {
  const trimmed = text.trim();
  const bytes = Buffer.from(trimmed, 'base64');
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed) || bytes.length !== KEK_BYTES) {
    throw new KeyMaterialError(`${setting} must be ${KEK_BYTES} bytes encoded as base64 (e.g. \`openssl rand -base64 32\`)`);
  }
  return bytes;
}

/** Length of a KEK file's text: base64 of KEK_BYTES bytes. */
const KEK_TEXT_LENGTH = Math.ceil(KEK_BYTES / 3) * 4;
/** How long a reader waits for a KEK file another process is still writing (see publishKekFile's fallback). */
const PARTIAL_WAIT_MS = 2000;

async function readKekFile(path: string, setting: string, waitForWriter = false): Promise<Buffer> {
  const deadline = Date.now() + PARTIAL_WAIT_MS;
  for (;;) {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new KeyMaterialError(`${setting}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    try {
      return decodeKek(text, setting);
    } catch (err) {
      // A file shorter than a key may be one another process is still writing (only on a file system without hard
      // links, where the new KEK is created in place): wait for it, briefly. A full-length malformed file fails at once.
      if (!waitForWriter || text.trim().length >= KEK_TEXT_LENGTH || Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `kek.<pid>.<hex>.tmp`: publishKekFile's temporary file. */
const KEK_TEMP = /^kek\.(\d+)\.[0-9a-f]{12}\.tmp$/;

/**
 * Removes temporary KEK files left by a process that died while generating the KEK (it unlinks its own otherwise).
 * Each holds key material: either a KEK that never got published, or a second link to the published one. A file
 * whose process is still running is that process's to remove.
 */
async function sweepKekTemps(dataDir: string): Promise<void> {
  const names = await readdir(dataDir).catch(() => [] as string[]);
  for (const name of names) {
    const m = KEK_TEMP.exec(name);
    if (!m || processAlive(Number(m[1]))) continue;
    await unlink(join(dataDir, name)).catch(() => undefined);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, owned by someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The KEK named by configuration, if any. */
export async function configuredKek(source: KekSource): Promise<ResolvedKek | undefined> {
  if (source.kek !== undefined) return { kek: decodeKek(source.kek, 'AGENTAUTH_KEK'), origin: 'AGENTAUTH_KEK' };
  if (source.kekFile !== undefined) {
    return { kek: await readKekFile(source.kekFile, 'AGENTAUTH_KEK_FILE'), origin: 'AGENTAUTH_KEK_FILE', path: source.kekFile };
  }
  return undefined;
}

export interface FallbackKekSource {
  /** AGENTAUTH_KEK_FALLBACK: base64 of 32 bytes. */
  kekFallback?: string | undefined;
  /** AGENTAUTH_KEK_FALLBACK_FILE: a file holding base64 of 32 bytes. */
  kekFallbackFile?: string | undefined;
}

/**
 * The KEK being rotated away from (AGENTAUTH_KEK_FALLBACK or _FILE), if one is configured: what was sealed, hashed or
 * keyed under it is still read; nothing new is written under it (docs/operations.md, "Rotating the KEK"). Refused when
 * it is the KEK itself, which would make a rotation that changes nothing look like one in progress.
 */
export async function fallbackKek(source: FallbackKekSource, kek: Buffer): Promise<Buffer | undefined> {
  let fallback: Buffer | undefined;
  let setting = 'AGENTAUTH_KEK_FALLBACK';
  if (source.kekFallback !== undefined) fallback = decodeKek(source.kekFallback, setting);
  else if (source.kekFallbackFile !== undefined) {
    setting = 'AGENTAUTH_KEK_FALLBACK_FILE';
    fallback = await readKekFile(source.kekFallbackFile, setting);
  }
  if (fallback?.equals(kek)) throw new KeyMaterialError(`${setting} is the KEK itself: it names the KEK being rotated away from, which must be another one`);
  return fallback;
}

/** The data directory's KEK file (`<dataDir>/kek`), used when no KEK is configured. */
export function dataDirKekPath(dataDir: string): string {
  return join(dataDir, 'kek');
}

/** Why an embedded store whose keys exist cannot start without its KEK (start and `config check` say the same). */
export function missingKekMessage(dataDir: string): string {
  return (
    `signing keys exist in ${dataDir} but no key-encryption key was found (${dataDirKekPath(dataDir)} is missing and neither ` +
    'AGENTAUTH_KEK nor AGENTAUTH_KEK_FILE is set); nothing was changed: agentauth never replaces keys it cannot open'
  );
}

/** The KEK file of the data directory, read (never created): undefined when there is none. */
export async function readDataDirKek(dataDir: string): Promise<ResolvedKek | undefined> {
  const path = dataDirKekPath(dataDir);
  if (!(await stat(path).then(() => true, () => false))) return undefined;
  return { kek: await readKekFile(path, `key-encryption key file ${path}`), origin: 'data-dir', path };
}

/**
 * The embedded store's KEK: configured, else `<dataDir>/kek`. A new one is generated (mode 0600) only when the data
 * directory holds no keys yet; with keys present and no KEK, start-up is refused rather than orphaning them.
 */
export async function embeddedKek(source: KekSource, dataDir: string, keysExist: boolean): Promise<ResolvedKek> {
  // Leftovers of a crashed first start go whichever KEK is used now (an operator may have configured one since).
  await sweepKekTemps(dataDir);
  const configured = await configuredKek(source);
  if (configured) return configured;
  const path = dataDirKekPath(dataDir);
  const exists = await stat(path).then(() => true, () => false);
  if (exists) return { kek: await readKekFile(path, `key-encryption key file ${path}`, !keysExist), origin: 'data-dir', path };
  if (keysExist) throw new KeyMaterialError(missingKekMessage(dataDir));
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const kek = randomBytes(KEK_BYTES);
  if (await publishKekFile(path, kek)) return { kek, origin: 'generated', path };
  // Another process (a sibling `--workers` worker, or a CLI command) generated it first: use theirs.
  return { kek: await readKekFile(path, `key-encryption key file ${path}`, true), origin: 'data-dir', path };
}

/**
 * Writes the new KEK to a private temporary file, syncs it, and links it into place. `link` fails with EEXIST when the
 * file already exists, so of several processes starting on one empty data directory exactly one KEK wins, and a reader
 * never sees a half-written file. Returns false when another process's KEK was there first.
 */
async function publishKekFile(path: string, kek: Buffer): Promise<boolean> {
  const text = `${kek.toString('base64')}\n`;
  const temp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const file = await open(temp, 'wx', 0o600);
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await link(temp, path);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw err;
    // A file system without hard links: an exclusive create still lets only one process win. Its file can be read
    // before it is complete; readKekFile waits for a short one to fill.
    return writeFile(path, text, { mode: 0o600, flag: 'wx' }).then(
      () => true,
      (e: NodeJS.ErrnoException) => { if (e.code === 'EEXIST') return false; throw e; },
    );
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
