import { writeFileSync } from 'node:fs';
import { decodeJwt } from 'jose';
import type { Command } from 'commander';

import { readCheckedKeys } from '../keys/integrity.js';
import { prepareKeyStore } from './key-store-upgrade.js';
import { archiveView } from '../keys/keyring.js';
import type { ArchivedKey } from '../keys/keyring.js';
import { deriveKeyView } from '../keys/lifecycle.js';
import { retireKey, rotateKeys, withdrawKey } from '../keys/rotation.js';
import { resolveKek } from './storage-setup.js';
import { ConfigError, issuerProblem, loadConfig, retireGraceSeconds } from './config.js';
import { answer, checkOutFile, CliUsageError, cliLogger, EXIT, requireInitialised, withJson, withStore } from './cli-context.js';
import type { CliContext } from './cli-context.js';
import type { Config } from './config.js';
import { prunedRevocations, revocationFacts, verifyAgainstArchive } from './token-verification.js';
import type { Storage } from '../adapters/types.js';
import { readJsonFile } from '../adapters/json-syntax-error.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import type { AuditEventInput } from './audit/chain.js';

/**
 * The KEK, once the key store has had its one-time integrity upgrade (keys/integrity.ts; a no-op once done) and, during
 * a rotation of the KEK, its records under the fallback re-sealed (keys/kek-rotation.ts). Every command that reads or
 * writes keys holds it: without it, no key record can be told from one written by someone else.
 */
async function keyKek(storage: Storage, config: Config): Promise<Buffer> {
  const log = cliLogger();
  const { kek, fallback } = await resolveKek(config, storage, log);
  await prepareKeyStore(storage, kek, fallback, log);
  return kek;
}

/** Every key with its windows, from records whose MACs and key pairs verified under the KEK. */
async function archiveFromStorage(storage: Storage, config: Config): Promise<ArchivedKey[]> {
  if ((await storage.keys.list()).length === 0) return []; // nothing to trust, and no KEK to generate for it
  const { keys, transitions } = await readCheckedKeys(storage.keys, await keyKek(storage, config));
  return archiveView(keys, deriveKeyView(keys, transitions, new Date(), { retireGraceSeconds: retireGraceSeconds(config) }));
}

function readArchiveFile(file: string): { issuer: unknown; keys: ArchivedKey[] } {
  // Never JSON.parse's message: it quotes the file (pointed at a KEK file by mistake, its first ten characters).
  const read = readJsonFile(file);
  if ('error' in read) throw new ConfigError(`--archive: ${read.error}`);
  const parsed = read.value;
  const shape = `--archive: ${file} must hold {"keys": [...]}, each key an object, as written by \`agentauth keys export --public\``;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(shape);
  const keys = (parsed as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'object' || k === null || Array.isArray(k))) throw new ConfigError(shape);
  return { issuer: (parsed as { issuer?: unknown }).issuer, keys: keys as ArchivedKey[] };
}

/** Appends one event to the audit log, on the CLI's own chain (server processes write theirs). */
async function recordAudit(storage: Storage, event: AuditEventInput): Promise<void> {
  const audit = new AuditLog(storage.audit, { chain: writerChain('cli') });
  try {
    await audit.record(event);
  } finally {
    await audit.close();
  }
}

type JsonOpt = { json?: boolean };

/**
 * For `keys retire|withdraw <kid>`: the store must hold keys (requireInitialised) and `kid` must be one of them; an
 * unknown kid is a negative answer (exit 1, `{"retired"|"withdrawn": null, "error": "not_found"}`).
 */
async function knownKid(storage: Storage, ctx: CliContext, verb: 'retire' | 'withdraw', kid: string, opts: JsonOpt): Promise<boolean> {
  await requireInitialised(storage, ctx, { command: `keys ${verb}` });
  if ((await storage.keys.list()).some((k) => k.kid === kid)) return true;
  process.stderr.write(`agentauth: keys ${verb}: no key ${kid} in ${ctx.location}\n`);
  answer(opts.json === true, ctx, { [verb === 'retire' ? 'retired' : 'withdrawn']: null, error: 'not_found', kid }, () => '');
  process.exitCode = EXIT.negative;
  return false;
}

/**
 * A key retired before its scheduled activation never signed (`keys retire` of a `next` key cancels its rotation): its
 * line says `activates cancelled`, not the time it was scheduled for, which the JSON answer keeps (`activates_at`).
 */
function activation(k: ArchivedKey): string {
  if (!k.activates_at) return '-';
  return k.retired_at && Date.parse(k.retired_at) <= Date.parse(k.activates_at) ? 'cancelled' : k.activates_at;
}

function keyLine(k: ArchivedKey): string {
  return [
    k.kid, k.alg, k.state.padEnd(8), `created ${k.created_at}`, `activates ${activation(k)}`, `retired ${k.retired_at ?? '-'}`, `published until ${k.published_until ?? '-'}`,
    ...(k.withdrawn_at ? [`withdrawn ${k.withdrawn_at}`] : []),
  ].join('  ');
}

/**
 * What a token was checked against, for the report: the store and issuer, or the archive file and the issuer it
 * records (null when it records none, as a file saved from GET /keys).
 */
function checkedAgainst(ctx: CliContext | undefined, archive: { file: string; issuer: unknown } | undefined, keys: readonly ArchivedKey[]): Record<string, unknown> {
  const kids = keys.map((k) => k.kid);
  if (archive) return { archive: archive.file, issuer: typeof archive.issuer === 'string' ? archive.issuer : null, kids };
  return { store: ctx!.store, location: ctx!.location, data_dir: ctx!.data_dir, issuer: ctx!.issuer, issuer_source: ctx!.issuer_source, kids };
}

/** Why a signature may be invalid here and valid at the server: the token names another issuer than the one checked. */
function issuerHint(token: string, issuer: string | null): string | undefined {
  let iss: unknown;
  try {
    iss = decodeJwt(token).iss; // unverified: only to explain a mismatch
  } catch {
    return undefined;
  }
  if (typeof iss === 'string' && issuer !== null && iss !== issuer) {
    return `the token's issuer is ${iss}, but the keys checked are those of ${issuer}: run verify with the server's environment (AGENTAUTH_DATA_DIR or MONGODB_URI/MONGODB_DB, ISSUER)`;
  }
  return undefined;
}

/** `agentauth keys list|rotate|retire|export` and `agentauth verify <token>`. */
export function registerKeyCommands(program: Command): void {
  const keys = program.command('keys').description('signing keys: states, rotation, retirement, withdrawal, public archive');

  withJson(keys.command('list'))
    .description('every key with its state (next, active, retired, archived, withdrawn) and windows')
    .action((opts: JsonOpt) =>
      // A store with no keys is answered with none, reading only (a mistyped MONGODB_DB gets no new database).
      withStore({ command: 'keys list', emptyOk: true }, async (storage, config, ctx) => {
        const list = await archiveFromStorage(storage, config);
        if (list.length === 0) process.stderr.write(`agentauth: no signing keys in ${ctx.location}\n`);
        answer(opts.json === true, ctx, { keys: list }, () => list.map(keyLine).join('\n'));
      }),
    );

  withJson(keys.command('rotate'))
    .description('publish a new key now; it signs after keys.publishDelaySeconds and the current key retires then')
    .option('--immediately', 'activate the new key now (key compromise); verifiers with a cached JWKS refetch on the unknown kid')
    .option('--init', 'allow creating the store, a key-encryption key (embedded stores) and the first key where there is none')
    .action((opts: JsonOpt & { immediately?: boolean; init?: boolean }) =>
      withStore({ command: 'keys rotate', init: opts.init === true }, async (storage, config, ctx) => {
        await requireInitialised(storage, ctx, { command: 'keys rotate', init: opts.init === true });
        const kek = await keyKek(storage, config);
        const result = await rotateKeys(storage.keys, kek, { retireGraceSeconds: retireGraceSeconds(config) }, {
          alg: config.keyAlg,
          publishDelaySeconds: config.keys.publishDelaySeconds,
          immediately: opts.immediately === true,
          reason: opts.immediately ? 'operator: immediate rotation' : 'operator rotation',
        });
        if (result.status !== 'already-scheduled') {
          await recordAudit(storage, {
            type: 'key.rotated',
            details: { kid: result.kid, activates_at: result.activatesAt.toISOString(), replaces: result.replaces, immediately: result.status === 'activated', by: 'cli', ...(result.abandoned ? { retires_abandoned: result.abandoned } : {}) },
          });
        }
        const value = { ...result, activatesAt: result.activatesAt.toISOString() };
        answer(opts.json === true, ctx, value, () =>
          result.status === 'already-scheduled'
            ? `a rotation is already scheduled: key ${result.kid} activates at ${value.activatesAt} (nothing changed)`
            : `new key ${result.kid} (${config.keyAlg}) activates at ${value.activatesAt}${result.replaces ? `, replacing ${String(result.replaces)}` : ''}${result.abandoned ? `; retired ${result.abandoned.join(', ')}, left without an activation by an interrupted rotation` : ''}`,
        );
      }),
    );

  /**
   * Retire and withdraw refuse a scheduled key this close to its activation (keys/rotation.ts KeyCommandPolicy): an
   * instance switches to it at its activation by its own clock, and reads a retire only at its next key refresh, after a
   * write that may take up to the storage timeout.
   */
  const keyCommandPolicy = (config: Config) => ({
    retireGraceSeconds: retireGraceSeconds(config),
    activationMarginSeconds: config.keys.refreshIntervalSeconds + Math.ceil(config.storage.timeoutMs / 1000),
  });

  withJson(keys.command('retire <kid>'))
    // Key ids are base64url thumbprints and may begin with '-': read them as the argument, not as an option.
    .allowUnknownOption()
    .description('retire a key that is not the signing key (it stays published until its tokens have expired)')
    .action((kid: string, opts: JsonOpt) =>
      withStore({ command: 'keys retire' }, async (storage, config, ctx) => {
        if (!(await knownKid(storage, ctx, 'retire', kid, opts))) return;
        await retireKey(storage.keys, await keyKek(storage, config), kid, keyCommandPolicy(config), 'operator');
        await recordAudit(storage, { type: 'key.retired', details: { kid, by: 'cli' } });
        answer(opts.json === true, ctx, { retired: kid }, () => `retired ${kid}`);
      }),
    );

  withJson(keys.command('withdraw <kid>'))
    .allowUnknownOption()
    .description('take a key that is not the signing key out of /jwks now, not after the retire grace (its private key was stolen): nothing it signed is trusted any more')
    .action((kid: string, opts: JsonOpt) =>
      withStore({ command: 'keys withdraw' }, async (storage, config, ctx) => {
        if (!(await knownKid(storage, ctx, 'withdraw', kid, opts))) return;
        const changed = await withdrawKey(storage.keys, await keyKek(storage, config), kid, keyCommandPolicy(config), 'operator');
        if (changed) await recordAudit(storage, { type: 'key.withdrawn', details: { kid, by: 'cli' } });
        const within = config.keys.refreshIntervalSeconds;
        answer(opts.json === true, ctx, { withdrawn: kid, changed, refresh_interval_seconds: within }, () =>
          changed
            ? `withdrew ${kid}: every instance stops publishing it and accepting its tokens within ${within} s (keys.refreshIntervalSeconds)`
            : `${kid} was already withdrawn (nothing changed)`,
        );
      }),
    );

  withJson(keys.command('export'))
    .description('write the public key archive (every key ever used, with its windows), as served at GET /keys')
    .requiredOption('--public', 'required: public keys only (the only kind that is ever exported)')
    .option('--out <file>', 'write to this file instead of standard output')
    .option('--force', 'replace the --out file if it exists')
    .option('--issuer <url>', 'the issuer to write into the archive (default: ISSUER; one of the two is required)')
    .action((opts: JsonOpt & { out?: string; force?: boolean; issuer?: string }) => {
      // The rule ISSUER follows: an archive naming an issuer no server can have would verify nothing (refused before
      // any store is opened).
      const problem = opts.issuer !== undefined ? issuerProblem(opts.issuer) : undefined;
      if (problem !== undefined) throw new CliUsageError(`keys export --issuer ${opts.issuer}: ${problem}`);
      // An --out that cannot be written is a usage error, before any store is opened.
      if (opts.out !== undefined) checkOutFile(opts.out, loadConfig(), '--out', { force: opts.force === true });
      return withStore({ command: 'keys export', ...(opts.issuer !== undefined ? { issuer: opts.issuer.replace(/\/$/, '') } : {}) }, async (storage, config, ctx) => {
        if (ctx.issuer_source === 'default') {
          throw new CliUsageError(`keys export: ISSUER is not set; the archive names the issuer of the tokens it verifies, so set ISSUER (or --issuer) to the server's issuer rather than the default ${ctx.issuer}`);
        }
        await requireInitialised(storage, ctx, { command: 'keys export' });
        const archive = { issuer: ctx.issuer, exported_at: new Date().toISOString(), keys: await archiveFromStorage(storage, config) };
        if (opts.out) {
          try {
            // Without --force, never over a file (one that appeared since the check included).
            writeFileSync(opts.out, `${JSON.stringify(archive, null, 2)}\n`, { flag: opts.force ? 'w' : 'wx' });
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new CliUsageError(`--out ${opts.out} already exists; pass --force to replace it`);
            throw err;
          }
          answer(opts.json === true, ctx, { out: opts.out, issuer: archive.issuer, keys: archive.keys.length }, () => `wrote ${archive.keys.length} public keys of ${archive.issuer} to ${opts.out}`);
        } else {
          // The archive itself is the answer (text or --json alike): the context went to stderr.
          process.stdout.write(`${JSON.stringify(archive, null, 2)}\n`);
        }
      });
    });

  withJson(program.command('verify <token>'))
    .description('verify a token agentauth signed, against the key archive in storage (needs the KEK) or an exported file; exit 1 when invalid')
    .option('--archive <file>', 'an archive written by `agentauth keys export --public` (no storage, no KEK: trusts the file as given)')
    .action(async (token: string, opts: JsonOpt & { archive?: string }) => {
      let report: Record<string, unknown> & { signature: string; claims?: Record<string, unknown> | undefined; header?: Record<string, unknown> | undefined };
      let against: Record<string, unknown>;
      if (opts.archive) {
        const file = readArchiveFile(opts.archive);
        process.stderr.write(`agentauth: verify: against the archive ${opts.archive} (issuer ${String(file.issuer ?? 'not recorded')}, ${file.keys.length} keys); no store\n`);
        report = { ...(await verifyAgainstArchive(token, file.keys)) };
        against = checkedAgainst(undefined, { file: opts.archive, issuer: file.issuer }, file.keys);
      } else {
        [report, against] = await withStore({ command: 'verify' }, async (storage, config, ctx) => {
          await requireInitialised(storage, ctx, { command: 'verify' });
          const archive = await archiveFromStorage(storage, config);
          const r: typeof report = { ...(await verifyAgainstArchive(token, archive)) };
          const checked = checkedAgainst(ctx, undefined, archive);
          if (r.signature !== 'valid' || !r.claims) return [r, checked];
          // The pruned chains' checkpoints, read once: which records still count, and whether any may be gone.
          const checkpoints = await storage.audit.checkpoints();
          const revocation = await revocationFacts(storage, r.claims, checkpoints);
          const pruned = prunedRevocations(checkpoints, r.claims);
          return [{ ...r, revoked: revocation.length > 0, revocation, ...(pruned ? { revocation_note: pruned } : {}) }, checked];
        });
      }
      const hint = issuerHint(token, (against.issuer as string | null) ?? null);
      const full = { ...report, checked_against: against, ...(hint ? { hint } : {}) };
      answer(opts.json === true, undefined, full, () =>
        [
          `signature ${report.signature}${report.reason ? `: ${String(report.reason)}` : ''}`,
          ...Object.entries(report)
            .filter(([k]) => k !== 'signature' && k !== 'reason')
            .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`),
          // An archive saved from GET /keys names no issuer (only `keys export` writes one): say so, not "issuer null".
          `checked against: ${against.archive ? `archive ${String(against.archive)}` : `${String(against.store)} ${String(against.location)}`}, ${against.issuer === null ? 'issuer not recorded in the archive' : `issuer ${String(against.issuer)}`}, keys ${(against.kids as string[]).join(', ') || '(none)'}`,
          ...(hint ? [`hint: ${hint}`] : []),
        ].join('\n'),
      );
      if (report.signature !== 'valid' || report.untrusted !== undefined) process.exitCode = EXIT.negative;
    });
}
