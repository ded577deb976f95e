import { readFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';

import { readCheckedKeys, upgradeKeyStore } from '../keys/integrity.js';
import { archiveView } from '../keys/keyring.js';
import type { ArchivedKey } from '../keys/keyring.js';
import { deriveKeyView } from '../keys/lifecycle.js';
import { retireKey, rotateKeys } from '../keys/rotation.js';
import { initStorage, openStorage, resolveKek } from './boot.js';
import { ConfigError, loadConfig, retireGraceSeconds } from './config.js';
import type { Config } from './config.js';
import { createLogger } from './logger.js';
import { revocationFacts, verifyAgainstArchive } from './token-verification.js';
import type { Storage } from '../adapters/types.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import type { AuditEventInput } from './audit/chain.js';

async function withStorage<T>(fn: (storage: Storage, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const storage = await openStorage(config);
  try {
    await initStorage(config, storage, { warn: (_obj: object, msg: string) => void process.stderr.write(`agentauth: ${msg}\n`) });
    return await fn(storage, config);
  } finally {
    await storage.close();
  }
}

/**
 * The KEK, once the key store has had its one-time integrity upgrade (keys/integrity.ts; a no-op once done). Every
 * command that reads or writes keys holds it: without it, no key record can be told from one written by someone else.
 */
async function keyKek(storage: Storage, config: Config): Promise<Buffer> {
  const log = createLogger('warn', process.stderr);
  const { kek } = await resolveKek(config, storage, log);
  const upgraded = await upgradeKeyStore(storage.keys, kek);
  if (upgraded.keys.length > 0 || upgraded.transitions.length > 0) {
    log.warn({ event: 'keys.integrity_upgraded', keys: upgraded.keys, transitions: upgraded.transitions }, 'key store upgraded: integrity MACs written for records stored without one');
  }
  return kek;
}

/** Every key with its windows, from records whose MACs and key pairs verified under the KEK. */
async function archiveFromStorage(storage: Storage, config: Config): Promise<ArchivedKey[]> {
  if ((await storage.keys.list()).length === 0) return []; // nothing to trust, and no KEK to generate for it
  const { keys, transitions } = await readCheckedKeys(storage.keys, await keyKek(storage, config));
  return archiveView(keys, deriveKeyView(keys, transitions, new Date(), { retireGraceSeconds: retireGraceSeconds(config) }));
}

function readArchive(file: string): ArchivedKey[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`--archive: cannot read ${file} as JSON (${(err as Error).message})`);
  }
  const keys = (parsed as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw new ConfigError(`--archive: ${file} must hold {"keys": [...]} as written by \`agentauth keys export --public\``);
  return keys as ArchivedKey[];
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

const out = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);

/** `agentauth keys list|rotate|retire|export` and `agentauth verify <token>`. */
export function registerKeyCommands(program: Command): void {
  const keys = program.command('keys').description('signing keys: states, rotation, retirement, public archive');

  keys
    .command('list')
    .description('every key with its state (next, active, retired, archived) and windows')
    .action(() =>
      withStorage(async (storage, config) => {
        for (const k of await archiveFromStorage(storage, config)) {
          process.stdout.write(
            [k.kid, k.alg, k.state.padEnd(8), `created ${k.created_at}`, `activates ${k.activates_at ?? '-'}`, `retired ${k.retired_at ?? '-'}`, `published until ${k.published_until ?? '-'}`].join('  ') + '\n',
          );
        }
      }),
    );

  keys
    .command('rotate')
    .description('publish a new key now; it signs after keys.publishDelaySeconds and the current key retires then')
    .option('--immediately', 'activate the new key now (key compromise); verifiers with a cached JWKS refetch on the unknown kid')
    .action((opts: { immediately?: boolean }) =>
      withStorage(async (storage, config) => {
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
            details: { kid: result.kid, activates_at: result.activatesAt.toISOString(), replaces: result.replaces, immediately: opts.immediately === true, by: 'cli' },
          });
        }
        out({ ...result, activatesAt: result.activatesAt.toISOString() });
      }),
    );

  keys
    .command('retire <kid>')
    .description('retire a key that is not the signing key (it stays published until its tokens have expired)')
    .action((kid: string) =>
      withStorage(async (storage, config) => {
        await retireKey(storage.keys, await keyKek(storage, config), kid, { retireGraceSeconds: retireGraceSeconds(config) }, 'operator');
        await recordAudit(storage, { type: 'key.retired', details: { kid, by: 'cli' } });
        out({ retired: kid });
      }),
    );

  keys
    .command('export')
    .description('write the public key archive (every key ever used, with its windows), as served at GET /keys')
    .requiredOption('--public', 'public keys only (the only kind that is ever exported)')
    .option('--out <file>', 'write to this file instead of standard output')
    .action((opts: { out?: string }) =>
      withStorage(async (storage, config) => {
        const archive = { issuer: config.issuer, exported_at: new Date().toISOString(), keys: await archiveFromStorage(storage, config) };
        if (opts.out) writeFileSync(opts.out, `${JSON.stringify(archive, null, 2)}\n`);
        else out(archive);
      }),
    );

  program
    .command('verify <token>')
    .description('verify a token agentauth signed, against the key archive in storage (needs the KEK) or an exported file')
    .option('--archive <file>', 'an archive written by `agentauth keys export --public` (no storage, no KEK: trusts the file as given)')
    .action(async (token: string, opts: { archive?: string }) => {
      let report;
      if (opts.archive) {
        report = await verifyAgainstArchive(token, readArchive(opts.archive));
      } else {
        report = await withStorage(async (storage, config) => {
          const r = await verifyAgainstArchive(token, await archiveFromStorage(storage, config));
          if (r.signature !== 'valid' || !r.claims) return r;
          const revocation = await revocationFacts(storage, r.claims);
          return { ...r, revoked: revocation.length > 0, revocation };
        });
      }
      out(report);
      if (report.signature !== 'valid') process.exitCode = 1;
    });
}
