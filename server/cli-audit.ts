import { once } from 'node:events';
import { createReadStream, createWriteStream, existsSync, linkSync, renameSync, rmSync } from 'node:fs';
import { link, open } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';

import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';

import { AuditCheckpointError, StorageUnavailableError } from '../adapters/errors.js';
import { DEFAULT_AUDIT_CHAIN, chainOf, checkpointFrom } from '../adapters/types.js';
import type { AuditCheckpoint, AuditRecord, AuditStore } from '../adapters/types.js';
import { ChainVerifier, GENESIS_HASH, LogVerifier } from './audit/chain.js';
import type { LogVerification } from './audit/chain.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import { answer, checkOutFile, CliUsageError, EXIT, storeDescription, withJson, withStore } from './cli-context.js';
import type { CliContext } from './cli-context.js';

/** Records read from storage per round trip. */
const PAGE = 1000;

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('must be a whole number of at least 1');
  return n;
}

/**
 * Opens storage only (no keys, no server), for reading (nothing created: a read-only database user is enough), runs
 * `fn` on the audit store and closes storage again. With the memory store that is the audit.jsonl file in the data
 * directory. Refuses (exit 2) where there is no store.
 */
async function withAuditStore<T>(command: string, fn: (store: AuditStore, ctx: CliContext) => Promise<T>): Promise<T> {
  return withStore({ command, readOnly: true }, (storage, _config, ctx) => fn(storage.audit, ctx));
}

/** Records of one chain with seq ≥ from, ascending, a page at a time. */
async function* records(store: AuditStore, chain: string, from = 1): AsyncGenerator<AuditRecord> {
  let next = from;
  for (;;) {
    const page = await store.list(next, PAGE, chain);
    if (page.length === 0) return;
    yield* page;
    next = page.at(-1)!.seq + 1;
    if (page.length < PAGE) return;
  }
}

/** One record as a JSON line, fields in a fixed order; fields agentauth did not write are kept (verify flags them). */
function recordLine(record: AuditRecord): string {
  const { chain, seq, time, type, client_id: clientId, sub, details, prev_hash: prevHash, hash, ...extra } = record;
  return `${JSON.stringify({ chain, seq, time, type, client_id: clientId, sub, details, prev_hash: prevHash, hash, ...extra })}\n`;
}

/**
 * The export line of a pruned chain, before its records: the last record removed (`audit prune`), which the first
 * record kept links to. It has no `seq` of its own, so no reader takes it for a record.
 */
function prunedLine({ chain, seq, hash, time, pruned_at: prunedAt }: AuditCheckpoint): string {
  return `${JSON.stringify({ chain, pruned_through: { seq, hash, time, pruned_at: prunedAt } })}\n`;
}

async function write(out: NodeJS.WritableStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}

interface Head {
  chain: string;
  seq: number | undefined;
  hash: string | undefined;
}

/**
 * The heads to keep for truncation checks: `head seq N hash H` for a log of only the default chain (or none),
 * otherwise one `<chain> seq N hash H` per chain.
 */
function headsText(heads: Head[]): string {
  if (heads.length === 0 || (heads.length === 1 && heads[0]!.chain === DEFAULT_AUDIT_CHAIN)) {
    return `head seq ${heads[0]?.seq ?? 0} hash ${heads[0]?.hash ?? GENESIS_HASH}`;
  }
  return `heads ${heads.map((h) => `${h.chain || '(default)'} seq ${h.seq ?? 0} hash ${h.hash ?? GENESIS_HASH}`).join(', ')}`;
}

const chainsCount = (n: number, named: boolean) => (named ? ` in ${n} chain${n === 1 ? '' : 's'}` : '');

async function tail(opts: { lines: number; json?: boolean }): Promise<void> {
  await withAuditStore('audit tail', async (store, ctx) => {
    // The newest records of every chain, merged by time.
    const newest: AuditRecord[] = [];
    for (const chain of await store.chains()) {
      const head = await store.head(chain);
      if (!head) continue;
      for await (const record of records(store, chain, Math.max(1, head.seq - opts.lines + 1))) {
        if (record.seq > head.seq) break;
        newest.push(record);
      }
    }
    if (newest.length === 0) {
      // Nothing on stdout (JSON lines: zero lines), and where it looked on stderr.
      process.stderr.write(`agentauth: the audit log in ${ctx.location} is empty (${storeDescription(ctx)})\n`);
      return;
    }
    newest.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : (a.chain ?? '').localeCompare(b.chain ?? '') || a.seq - b.seq));
    for (const record of newest.slice(-opts.lines)) await write(process.stdout, recordLine(record));
  });
}

async function exportLog(opts: { out?: string; force?: boolean; json?: boolean }): Promise<void> {
  await withStore({ command: 'audit export', readOnly: true }, async ({ audit: store }, config, ctx) => {
    if (opts.out !== undefined) checkOutFile(opts.out, config, '--out', { force: opts.force === true });
    // A file is written under a temporary name and renamed when complete: a failed export leaves no partial file.
    const tmp = opts.out ? `${opts.out}.tmp-${process.pid}` : undefined;
    const file: WriteStream | undefined = tmp ? createWriteStream(tmp, { flags: 'wx', mode: 0o600 }) : undefined;
    const out: NodeJS.WritableStream = file ?? process.stdout;
    let count = 0;
    const heads: Head[] = [];
    try {
      if (file) await once(file, 'open');
      const checkpoints = new Map((await store.checkpoints()).map((c) => [c.chain, c]));
      // Chain after chain, each in seq order; a pruned chain opens with the line saying where it starts.
      for (const chain of await store.chains()) {
        let last: AuditRecord | undefined;
        const checkpoint = checkpoints.get(chain);
        if (checkpoint) await write(out, prunedLine(checkpoint));
        for await (const record of records(store, chain, checkpoint ? checkpoint.seq + 1 : 1)) {
          await write(out, recordLine(record));
          count += 1;
          last = record;
        }
        if (last) heads.push({ chain, seq: last.seq, hash: last.hash });
      }
      if (file) {
        file.end();
        await once(file, 'close');
        if (opts.force) renameSync(tmp!, opts.out!);
        else {
          // Without --force, a file that appeared at the name while the export ran is not replaced either: a hard link
          // fails where a rename would overwrite.
          try {
            linkSync(tmp!, opts.out!);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new CliUsageError(`--out ${opts.out!} already exists; pass --force to replace it`);
            throw err;
          }
          rmSync(tmp!, { force: true });
        }
      }
    } catch (err) {
      if (file) {
        // Writes still pending report their failure on the stream: it is this error that is reported, once.
        file.on('error', () => undefined);
        file.destroy();
        rmSync(tmp!, { force: true });
      }
      throw err;
    }
    process.stderr.write(`exported ${count} audit records${opts.out ? ` to ${opts.out}` : ''}; ${headsText(heads)}\n`);
    // With --out, stdout is free for the summary; without, it holds the records themselves (JSON lines).
    if (opts.out && opts.json) answer(true, ctx, { out: opts.out, records: count, heads }, () => '');
  });
}

/** Where a pruned chain starts: after `seq` (the records up to it were removed by `audit prune`). */
interface PrunedStart {
  chain: string;
  seq: number;
}

const prunedText = (pruned: PrunedStart[]) =>
  pruned.length === 0 ? '' : `; pruned: ${pruned.map((p) => `${p.chain || '(default)'} starts after seq ${p.seq}`).join(', ')}`;

function report(result: LogVerification, unreadable: string[], json: boolean, source: Record<string, unknown>, pruned: PrunedStart[] = []): void {
  const heads = result.chains.map((c) => ({ chain: c.chain, seq: c.verification.headSeq, hash: c.verification.headHash }));
  const named = result.chains.some((c) => c.chain !== DEFAULT_AUDIT_CHAIN);
  const ok = result.ok && unreadable.length === 0;
  if (!ok) process.exitCode = EXIT.negative;
  // Nothing to verify is not evidence of an intact log: an auditor pointed at the wrong store (a mistyped MONGODB_DB,
  // another data directory) is told so on stderr, whatever the format; the answer stays "ok" with 0 records, exit 0.
  if (ok && result.checked === 0 && pruned.length === 0) {
    const where = typeof source.location === 'string' ? ` in ${source.location}` : typeof source.file === 'string' ? ` in ${source.file}` : '';
    process.stderr.write(`agentauth: the audit log${where} holds no records: nothing was verified; is this the server's store (AGENTAUTH_DATA_DIR, MONGODB_URI, MONGODB_DB) or its export?\n`);
  }
  if (json) {
    const problems = [
      ...unreadable.map((detail) => ({ detail })),
      ...result.chains.flatMap(({ chain, verification }) => verification.problems.map((p) => ({ chain, seq: p.seq, kind: p.kind, detail: p.detail }))),
    ];
    answer(true, undefined, { ok, records: result.checked, heads, pruned, problems, source }, () => '');
    return;
  }
  if (ok) {
    process.stdout.write(`audit log OK: ${result.checked} records${chainsCount(result.chains.length, named)}, ${headsText(heads)}${prunedText(pruned)}\n`);
    return;
  }
  for (const line of unreadable) process.stdout.write(`${line}\n`);
  let problems = 0;
  for (const { chain, verification } of result.chains) {
    for (const p of verification.problems) {
      problems += 1;
      process.stdout.write(`${chain ? `chain ${chain} ` : ''}seq ${p.seq}: ${p.kind}: ${p.detail}\n`);
    }
  }
  const count = problems + unreadable.length;
  process.stdout.write(
    `audit log FAILED: ${count} problem${count === 1 ? '' : 's'} in ${result.checked} records${chainsCount(result.chains.length, named)}, ${headsText(heads)}${prunedText(pruned)}\n`,
  );
}

/** An export file, read through: its verdict, and what `audit prune` checks an archive for. */
interface ExportFileReading {
  result: LogVerification;
  unreadable: string[];
  /** Per chain in the file: the seq its records start after (0: from seq 1; else the pruned-chain line's). */
  starts: Map<string, number>;
  /** The hash of each record asked for (`want`: chain → seq), by `${chain}\n${seq}`. */
  found: Map<string, string>;
}

async function readExportFile(path: string, want: ReadonlyMap<string, number> = new Map()): Promise<ExportFileReading> {
  const verifier = new LogVerifier();
  const unreadable: string[] = [];
  const starts = new Map<string, number>();
  const found = new Map<string, string>();
  const input = createReadStream(path, { encoding: 'utf8' });
  const opened = once(input, 'open');
  opened.catch(() => undefined);
  try {
    await opened;
  } catch (err) {
    throw new CliUsageError(`cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let lineNo = 0;
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    lineNo += 1;
    if (line.trim() === '') continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      unreadable.push(`line ${lineNo}: edited: not JSON`);
      continue;
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      unreadable.push(`line ${lineNo}: edited: not a JSON object`);
      continue;
    }
    if ('pruned_through' in parsed) {
      const { chain, pruned_through: through } = parsed as { chain?: unknown; pruned_through: unknown };
      const name = typeof chain === 'string' ? chain : DEFAULT_AUDIT_CHAIN;
      let checkpoint: AuditCheckpoint;
      try {
        const fields = typeof through === 'object' && through !== null ? through : {};
        checkpoint = checkpointFrom(name, Number((fields as { seq?: unknown }).seq), { ...fields, chain });
      } catch {
        unreadable.push(`line ${lineNo}: edited: a pruned-chain line that is not what audit export writes`);
        continue;
      }
      if (starts.has(name) || !verifier.startAfter(name, checkpoint.seq, checkpoint.hash)) {
        unreadable.push(`line ${lineNo}: edited: the pruned-chain line of ${name || 'the default chain'} is not the first line of that chain`);
        continue;
      }
      starts.set(name, checkpoint.seq);
      continue;
    }
    const record = parsed as AuditRecord;
    const chain = chainOf(record);
    if (!starts.has(chain)) starts.set(chain, 0);
    if (want.get(chain) === record.seq && typeof record.hash === 'string') found.set(`${chain}\n${record.seq}`, record.hash);
    verifier.push(record);
  }
  return { result: verifier.result(), unreadable, starts, found };
}

async function verifyFile(path: string, json: boolean): Promise<void> {
  process.stderr.write(`agentauth: audit verify: the file ${path} (no store)\n`);
  let reading: ExportFileReading;
  try {
    reading = await readExportFile(path);
  } catch (err) {
    if (err instanceof CliUsageError) throw new CliUsageError(`audit verify --file: ${err.message}`);
    throw err;
  }
  const pruned = [...reading.starts].filter(([, seq]) => seq > 0).map(([chain, seq]) => ({ chain, seq }));
  report(reading.result, reading.unreadable, json, { file: path }, pruned);
}

/**
 * Like records(), but a stored record that cannot even be decoded (its details are not JSON text) is reported
 * instead of ending the read: after a page fails, records are read one at a time until past the broken one.
 */
class Undecodable {
  constructor(
    readonly seq: number,
    readonly error: string,
  ) {}
}

async function* decodable(store: AuditStore, chain: string, from = 1): AsyncGenerator<AuditRecord | Undecodable> {
  let next = from;
  for (;;) {
    let page: AuditRecord[];
    try {
      page = await store.list(next, PAGE, chain);
    } catch (err) {
      if (err instanceof StorageUnavailableError) throw err;
      try {
        page = await store.list(next, 1, chain);
      } catch (one) {
        if (one instanceof StorageUnavailableError) throw one;
        yield new Undecodable(next, one instanceof Error ? one.message : String(one));
        next += 1;
        continue;
      }
    }
    if (page.length === 0) return;
    for (const record of page) yield record.undecodable === undefined ? record : new Undecodable(record.seq, record.undecodable);
    next = page.at(-1)!.seq + 1;
  }
}

/** Records stored outside every chain that verify names one by one. */
const MAX_STRAYS = 100;

async function verify(opts: { file?: string; json?: boolean }): Promise<void> {
  if (opts.file !== undefined) {
    await verifyFile(opts.file, opts.json === true);
    return;
  }
  await withAuditStore('audit verify', async (store, ctx) => {
    const verifier = new LogVerifier();
    const unreadable: string[] = [];
    const checkpoints = await storedCheckpoints(store, unreadable);
    const chains = await store.chains();
    for (const c of checkpoints.values()) {
      verifier.startAfter(c.chain, c.seq, c.hash);
      const name = c.chain ? `chain ${c.chain} ` : '';
      // A prune always keeps a chain's newest record: a pruned chain with none left was deleted after it.
      if (!chains.includes(c.chain)) unreadable.push(`${name}seq ${c.seq + 1}: deleted: the chain was pruned through seq ${c.seq} but holds no record now`);
      const below = await belowCheckpoint(store, c);
      if (below > 0) unreadable.push(`${name}seq ${c.seq}: edited: ${below} record${below === 1 ? ' is' : 's are'} stored at or below the checkpoint (seq ${c.seq}), where no verification reads: left by an interrupted audit prune (running it again removes them), or planted`);
    }
    for (const chain of chains) {
      const checkpoint = checkpoints.get(chain);
      for await (const item of decodable(store, chain, checkpoint ? checkpoint.seq + 1 : 1)) {
        if (item instanceof Undecodable) unreadable.push(`${chain ? `chain ${chain} ` : ''}seq ${item.seq}: edited: cannot be decoded (${item.error})`);
        else verifier.push(item);
      }
    }
    // Records stored where no chain is read: a verification of the chains alone would pass over them in silence.
    const strays = await store.strays(MAX_STRAYS + 1);
    for (const place of strays.slice(0, MAX_STRAYS)) unreadable.push(`${place}: edited: stored outside every chain (seq below 1, or a chain name agentauth does not write); no reading of the log reaches it`);
    if (strays.length > MAX_STRAYS) unreadable.push(`more records are stored outside every chain: only the first ${MAX_STRAYS} are named`);
    report(verifier.result(), unreadable, opts.json === true, { ...ctx }, [...checkpoints.values()].map(({ chain, seq }) => ({ chain, seq })));
  });
}

/** How many records of the checkpoint's chain are stored at or below it (an interrupted prune leaves some). */
async function belowCheckpoint(store: AuditStore, checkpoint: AuditCheckpoint): Promise<number> {
  let count = 0;
  for await (const record of records(store, checkpoint.chain)) {
    if (record.seq > checkpoint.seq) break;
    count += 1;
  }
  return count;
}

/** The stored checkpoints by chain; an altered one is reported (in `problems`) and its chain read from seq 1. */
async function storedCheckpoints(store: AuditStore, problems: string[]): Promise<Map<string, AuditCheckpoint>> {
  try {
    return new Map((await store.checkpoints()).map((c) => [c.chain, c]));
  } catch (err) {
    if (!(err instanceof AuditCheckpointError)) throw err;
    problems.push(`${err.chain ? `chain ${err.chain} ` : ''}checkpoint: edited: ${err.message}; every chain is read from seq 1`);
    return new Map();
  }
}

/** Records removed per write when pruning: each batch is its own short write, so servers' writes wait little. */
const PRUNE_BATCH = 5000;

/** What `audit prune` removes from one chain: from `from` through `through`, the last record before the cut-off. */
interface PrunePlan {
  chain: string;
  from: number;
  through: AuditRecord;
  count: number;
}

/**
 * Per chain, the records older than `cutoff` (time strictly before it), from where the chain starts now up to, never
 * including, its newest record (which writers continue from). Each chain's prefix is verified on the way: a chain
 * that does not verify up to the cut-off is not pruned at all (its problems are returned), since pruning would remove
 * the evidence.
 */
async function planPrune(store: AuditStore, cutoff: number, checkpoints: ReadonlyMap<string, AuditCheckpoint>): Promise<{ plans: PrunePlan[]; problems: string[] }> {
  const plans: PrunePlan[] = [];
  const problems: string[] = [];
  for (const chain of await store.chains()) {
    const head = await store.head(chain);
    if (!head) continue;
    const checkpoint = checkpoints.get(chain);
    const from = checkpoint ? checkpoint.seq + 1 : 1;
    const verifier = new ChainVerifier(checkpoint ? { startSeq: from, startPrevHash: checkpoint.hash } : {});
    const name = chain ? `chain ${chain} ` : '';
    let last: AuditRecord | undefined;
    let count = 0;
    for await (const item of decodable(store, chain, from)) {
      if (item instanceof Undecodable) {
        problems.push(`${name}seq ${item.seq}: edited: cannot be decoded (${item.error})`);
        break;
      }
      if (item.seq >= head.seq || !(Date.parse(item.time) < cutoff)) break;
      verifier.push(item);
      last = item;
      count += 1;
    }
    for (const p of verifier.result().problems) problems.push(`${name}seq ${p.seq}: ${p.kind}: ${p.detail}`);
    if (last && problems.length === 0) plans.push({ chain, from, through: last, count });
  }
  return { plans, problems };
}

/** `--older-than <N>d` or `--before <date-time>`, as a time in ms; a usage error otherwise. */
function cutoffOf(opts: { before?: string; olderThan?: string }, now: number): number {
  if ((opts.before === undefined) === (opts.olderThan === undefined)) throw new CliUsageError('audit prune: give exactly one of --before <date-time> and --older-than <days>d');
  if (opts.olderThan !== undefined) {
    const days = /^([1-9][0-9]{0,5})d$/.exec(opts.olderThan)?.[1];
    if (days === undefined) throw new CliUsageError(`audit prune: --older-than must be a whole number of days followed by d, e.g. 90d (got ${JSON.stringify(opts.olderThan.slice(0, 40))})`);
    return now - Number(days) * 86_400_000;
  }
  const before = opts.before!;
  const at = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/.test(before) ? Date.parse(before) : Number.NaN;
  if (Number.isNaN(at)) throw new CliUsageError(`audit prune: --before must be an ISO 8601 date or date-time with its offset, e.g. 2026-01-01 or 2026-01-01T00:00:00Z (got ${JSON.stringify(before.slice(0, 40))})`);
  if (at > now) throw new CliUsageError(`audit prune: --before ${before} is in the future`);
  return at;
}

/** Why `archive` does not hold what `plans` would remove, or undefined when it does (a verified export reaching each). */
async function archiveProblem(archive: string, plans: PrunePlan[]): Promise<string | undefined> {
  const reading = await readExportFile(archive, new Map(plans.map((p) => [p.chain, p.through.seq])));
  if (!reading.result.ok || reading.unreadable.length > 0) return `the archive ${archive} does not verify (run agentauth audit verify --file ${archive})`;
  for (const p of plans) {
    const name = p.chain || 'the default chain';
    const start = reading.starts.get(p.chain);
    if (start === undefined) return `the archive ${archive} holds no record of ${name}`;
    if (start >= p.from) return `the archive ${archive} holds ${name} only after seq ${start}, not from seq ${p.from}`;
    if (reading.found.get(`${p.chain}\n${p.through.seq}`) !== p.through.hash) {
      return `the archive ${archive} does not hold ${name} up to seq ${p.through.seq} as stored (export again, then prune)`;
    }
  }
  return undefined;
}

/**
 * Writes the records `plans` will remove, each chain opening with its current checkpoint's line, to `path`: a new file
 * (mode 0600, never one that exists), synced to disk and linked into place, its directory synced, before anything is
 * removed.
 */
async function writePruneArchive(store: AuditStore, path: string, plans: PrunePlan[], checkpoints: ReadonlyMap<string, AuditCheckpoint>): Promise<number> {
  const tmp = `${path}.tmp-${process.pid}`;
  const handle = await open(tmp, 'wx', 0o600);
  let count = 0;
  try {
    let buffer = '';
    for (const p of plans) {
      const checkpoint = checkpoints.get(p.chain);
      if (checkpoint) buffer += prunedLine(checkpoint);
      for await (const record of records(store, p.chain, p.from)) {
        if (record.seq > p.through.seq) break;
        buffer += recordLine(record);
        count += 1;
        if (buffer.length >= 1 << 20) {
          await handle.write(buffer);
          buffer = '';
        }
      }
    }
    await handle.write(buffer);
    await handle.sync();
    await handle.close();
    // link, not rename: an archive someone wrote there meanwhile is never replaced.
    await link(tmp, path);
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw (err as NodeJS.ErrnoException).code === 'EEXIST' ? new CliUsageError(`audit prune: --archive-to ${path} exists; nothing was removed`) : err;
  } finally {
    rmSync(tmp, { force: true });
  }
  const dir = await open(dirname(resolve(path)), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return count;
}

async function prune(opts: { before?: string; olderThan?: string; archive?: string; archiveTo?: string; discard?: boolean; dryRun?: boolean; json?: boolean }): Promise<void> {
  const now = Date.now();
  const cutoff = cutoffOf(opts, now);
  if ([opts.archive !== undefined, opts.archiveTo !== undefined, opts.discard === true].filter(Boolean).length !== 1) {
    throw new CliUsageError('audit prune: give one of --archive-to <new file> (write the records to remove there first), --archive <file> (an `audit export` holding them) or, to remove them unarchived, --discard');
  }
  await withStore({ command: 'audit prune' }, async (storage, config, ctx) => {
    if (opts.archiveTo !== undefined) {
      checkOutFile(opts.archiveTo, config, '--archive-to');
      if (existsSync(opts.archiveTo)) throw new CliUsageError(`audit prune: --archive-to ${opts.archiveTo} exists; name a new file (archives are never replaced)`);
    }
    if (ctx.store === 'memory') {
      throw new CliUsageError(`audit prune: the memory store's audit log is the file ${ctx.location}/audit.jsonl, which is not pruned; move it aside while no server runs`);
    }
    const store = storage.audit;
    const checkpoints = new Map((await store.checkpoints()).map((c) => [c.chain, c]));
    // Records left at or below a checkpoint by an interrupted prune: no verification reads them. Removed (first) only
    // once every check below has passed, so that a refused prune removes nothing.
    const leftBehind: AuditCheckpoint[] = [];
    let leftovers = 0;
    for (const c of checkpoints.values()) {
      const below = await belowCheckpoint(store, c);
      if (below > 0) leftBehind.push(c);
      leftovers += below;
    }
    const { plans, problems } = await planPrune(store, cutoff, checkpoints);
    const before = new Date(cutoff).toISOString();
    if (problems.length > 0) {
      process.exitCode = EXIT.negative;
      answer(opts.json === true, ctx, { ok: false, before, pruned: [], problems }, () =>
        [...problems, `audit prune FAILED: the log does not verify up to ${before}; nothing was removed (run agentauth audit verify)`].join('\n'),
      );
      return;
    }
    if (opts.archive !== undefined && plans.length > 0) {
      const problem = await archiveProblem(opts.archive, plans);
      if (problem) throw new CliUsageError(`audit prune: ${problem}; nothing was removed`);
    }
    if (opts.archiveTo !== undefined && plans.length > 0 && !opts.dryRun) {
      const written = await writePruneArchive(store, opts.archiveTo, plans, checkpoints);
      // Read back as any archive is: it must verify and hold every record to go, as stored.
      const problem = await archiveProblem(opts.archiveTo, plans);
      if (problem) throw new Error(`audit prune: ${problem}; nothing was removed`);
      process.stderr.write(`agentauth: audit prune: wrote ${written} records to ${opts.archiveTo} (synced to disk)\n`);
    }
    // The file named is one that holds the records (an --archive-to with nothing to prune writes none).
    const archive = opts.archive ?? (plans.length > 0 ? opts.archiveTo : undefined) ?? null;
    const leftoverLine = (verb: string) => {
      if (leftovers > 0) process.stderr.write(`agentauth: audit prune: ${leftovers} record${leftovers === 1 ? '' : 's'} left at or below a checkpoint by an earlier prune ${verb} removed\n`);
    };
    if (opts.dryRun) {
      leftoverLine('would be');
      // Everything checked as for the real run (the log up to the cut-off, the archive); nothing removed or recorded.
      const plan = plans.map((p) => ({ chain: p.chain, from_seq: p.from, through_seq: p.through.seq, through_time: p.through.time, records: p.count }));
      answer(opts.json === true, ctx, { ok: true, dry_run: true, before, archive, would_prune: plan }, () =>
        plan.length === 0
          ? `nothing to prune: no audit record before ${before} (each chain's newest record is always kept)`
          : [
              ...plan.map((p) => `${p.chain ? `chain ${p.chain}` : 'default chain'}: would remove ${p.records} records, seq ${p.from_seq}–${p.through_seq} (up to ${p.through_time})`),
              `audit prune --dry-run: would remove ${plan.reduce((n, p) => n + p.records, 0)} records before ${before}; nothing was removed`,
            ].join('\n'),
      );
      return;
    }
    for (const c of leftBehind) await store.prune(c, PRUNE_BATCH);
    leftoverLine(leftovers === 1 ? 'was' : 'were');
    const prunedAt = new Date(now).toISOString();
    const pruned: Array<{ chain: string; from_seq: number; through_seq: number; through_time: string; removed: number }> = [];
    for (const p of plans) {
      const removed = await store.prune({ chain: p.chain, seq: p.through.seq, hash: p.through.hash, time: p.through.time, pruned_at: prunedAt }, PRUNE_BATCH);
      pruned.push({ chain: p.chain, from_seq: p.from, through_seq: p.through.seq, through_time: p.through.time, removed });
    }
    if (pruned.length > 0) {
      // The prune itself is on the record, in the CLI's own chain.
      const log = new AuditLog(store, { chain: writerChain('cli') });
      try {
        await log.record({ type: 'audit.pruned', details: { before, archive, chains: pruned.map(({ chain, through_seq: seq, removed }) => ({ chain, through_seq: seq, removed })) } });
      } finally {
        await log.close();
      }
    }
    const removed = pruned.reduce((n, p) => n + p.removed, 0);
    answer(opts.json === true, ctx, { ok: true, before, archive, pruned }, () =>
      pruned.length === 0
        ? `nothing to prune: no audit record before ${before} (each chain's newest record is always kept)`
        : [
            ...pruned.map((p) => `${p.chain ? `chain ${p.chain}` : 'default chain'}: removed ${p.removed} records, seq ${p.from_seq}–${p.through_seq} (up to ${p.through_time}); it now starts after seq ${p.through_seq}`),
            `audit prune: removed ${removed} records before ${before} from ${pruned.length} chain${pruned.length === 1 ? '' : 's'}${archive ? `, all of them in ${archive}` : ' (not archived: --discard)'}`,
          ].join('\n'),
    );
  });
}

/** `agentauth audit tail|export|verify`: read, export and verify the hash-chained audit log in MongoDB. */
export function registerAuditCommands(program: Command): void {
  const audit = program
    .command('audit')
    .description('read, export, verify and prune the hash-chained audit log (from the configured store: MongoDB, SQLite in the data directory, or audit.jsonl with the memory store)');

  withJson(audit.command('tail'))
    .description('print the newest audit records as JSON lines, oldest first')
    .option('-n, --lines <n>', 'how many records', positiveInteger, 20)
    .action(tail);

  withJson(audit.command('export'))
    .description('write every audit record as JSON lines, chain after chain in seq order; prints the heads (keep them to detect truncation later)')
    .option('--out <file>', 'write to this file instead of stdout (written in full, then renamed into place)')
    .option('--force', 'replace the --out file if it exists')
    .action(exportLog);

  withJson(audit.command('verify'))
    .description('check every hash chain: exit 0 with the heads when intact, exit 1 listing each problem otherwise')
    .option('--file <file>', 'verify a file written by `audit export` instead of the stored log (no storage needed)')
    .action(verify);

  withJson(audit.command('prune'))
    .description('remove audit records older than a cut-off (each chain keeps its newest record); the chains still verify, from where they now start')
    .option('--older-than <days>', 'remove records older than this many days, e.g. 90d')
    .option('--before <date-time>', 'remove records from before this ISO 8601 date or date-time')
    .option('--archive <file>', 'an `audit export` file holding every record to remove: checked (it must verify and match the store) before anything is removed')
    .option('--archive-to <file>', 'write the records to remove to this new file first (synced, read back and checked), then remove them')
    .option('--discard', 'remove the records without checking that they were archived')
    .option('--dry-run', 'check everything and say what would be removed, removing nothing')
    .action(prune);
}
