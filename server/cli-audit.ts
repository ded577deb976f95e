import { once } from 'node:events';
import { createReadStream, createWriteStream, renameSync, rmSync } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';

import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';

import { StorageUnavailableError } from '../adapters/errors.js';
import { DEFAULT_AUDIT_CHAIN } from '../adapters/types.js';
import type { AuditRecord, AuditStore } from '../adapters/types.js';
import { GENESIS_HASH, LogVerifier } from './audit/chain.js';
import type { LogVerification } from './audit/chain.js';
import { answer, checkOutFile, CliUsageError, EXIT, withJson, withStore } from './cli-context.js';
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
      process.stderr.write(`agentauth: the audit log in ${ctx.location} is empty (store ${ctx.store}, data directory ${ctx.data_dir})\n`);
      return;
    }
    newest.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : (a.chain ?? '').localeCompare(b.chain ?? '') || a.seq - b.seq));
    for (const record of newest.slice(-opts.lines)) await write(process.stdout, recordLine(record));
  });
}

async function exportLog(opts: { out?: string; json?: boolean }): Promise<void> {
  await withStore({ command: 'audit export', readOnly: true }, async ({ audit: store }, config, ctx) => {
    if (opts.out !== undefined) checkOutFile(opts.out, config);
    // A file is written under a temporary name and renamed when complete: a failed export leaves no partial file.
    const tmp = opts.out ? `${opts.out}.tmp-${process.pid}` : undefined;
    const file: WriteStream | undefined = tmp ? createWriteStream(tmp, { flags: 'wx', mode: 0o600 }) : undefined;
    const out: NodeJS.WritableStream = file ?? process.stdout;
    let count = 0;
    const heads: Head[] = [];
    try {
      if (file) await once(file, 'open');
      // Chain after chain, each in seq order.
      for (const chain of await store.chains()) {
        let last: AuditRecord | undefined;
        for await (const record of records(store, chain)) {
          await write(out, recordLine(record));
          count += 1;
          last = record;
        }
        if (last) heads.push({ chain, seq: last.seq, hash: last.hash });
      }
      if (file) {
        file.end();
        await once(file, 'close');
        renameSync(tmp!, opts.out!);
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

function report(result: LogVerification, unreadable: string[], json: boolean, source: Record<string, unknown>): void {
  const heads = result.chains.map((c) => ({ chain: c.chain, seq: c.verification.headSeq, hash: c.verification.headHash }));
  const named = result.chains.some((c) => c.chain !== DEFAULT_AUDIT_CHAIN);
  const ok = result.ok && unreadable.length === 0;
  if (!ok) process.exitCode = EXIT.negative;
  if (json) {
    const problems = [
      ...unreadable.map((detail) => ({ detail })),
      ...result.chains.flatMap(({ chain, verification }) => verification.problems.map((p) => ({ chain, seq: p.seq, kind: p.kind, detail: p.detail }))),
    ];
    answer(true, undefined, { ok, records: result.checked, heads, problems, source }, () => '');
    return;
  }
  if (ok) {
    process.stdout.write(`audit log OK: ${result.checked} records${chainsCount(result.chains.length, named)}, ${headsText(heads)}\n`);
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
    `audit log FAILED: ${count} problem${count === 1 ? '' : 's'} in ${result.checked} records${chainsCount(result.chains.length, named)}, ${headsText(heads)}\n`,
  );
}

async function verifyFile(path: string, json: boolean): Promise<void> {
  process.stderr.write(`agentauth: audit verify: the file ${path} (no store)\n`);
  const verifier = new LogVerifier();
  const unreadable: string[] = [];
  const input = createReadStream(path, { encoding: 'utf8' });
  const opened = once(input, 'open');
  opened.catch(() => undefined);
  try {
    await opened;
  } catch (err) {
    throw new CliUsageError(`audit verify --file: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
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
    verifier.push(parsed as AuditRecord);
  }
  report(verifier.result(), unreadable, json, { file: path });
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

async function* decodable(store: AuditStore, chain: string): AsyncGenerator<AuditRecord | Undecodable> {
  let next = 1;
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
    for (const chain of await store.chains()) {
      for await (const item of decodable(store, chain)) {
        if (item instanceof Undecodable) unreadable.push(`${chain ? `chain ${chain} ` : ''}seq ${item.seq}: edited: cannot be decoded (${item.error})`);
        else verifier.push(item);
      }
    }
    // Records stored where no chain is read: a verification of the chains alone would pass over them in silence.
    const strays = await store.strays(MAX_STRAYS + 1);
    for (const place of strays.slice(0, MAX_STRAYS)) unreadable.push(`${place}: edited: stored outside every chain (seq below 1, or a chain name agentauth does not write); no reading of the log reaches it`);
    if (strays.length > MAX_STRAYS) unreadable.push(`more records are stored outside every chain: only the first ${MAX_STRAYS} are named`);
    report(verifier.result(), unreadable, opts.json === true, { ...ctx });
  });
}

/** `agentauth audit tail|export|verify`: read, export and verify the hash-chained audit log in MongoDB. */
export function registerAuditCommands(program: Command): void {
  const audit = program
    .command('audit')
    .description('read, export and verify the hash-chained audit log (from the configured store: MongoDB, SQLite in the data directory, or audit.jsonl with the memory store)');

  withJson(audit.command('tail'))
    .description('print the newest audit records as JSON lines, oldest first')
    .option('-n, --lines <n>', 'how many records', positiveInteger, 20)
    .action(tail);

  withJson(audit.command('export'))
    .description('write every audit record as JSON lines, chain after chain in seq order; prints the heads (keep them to detect truncation later)')
    .option('--out <file>', 'write to this file instead of stdout (written in full, then renamed into place)')
    .action(exportLog);

  withJson(audit.command('verify'))
    .description('check every hash chain: exit 0 with the heads when intact, exit 1 listing each problem otherwise')
    .option('--file <file>', 'verify a file written by `audit export` instead of the stored log (no storage needed)')
    .action(verify);
}
