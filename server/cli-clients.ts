import type { Command } from 'commander';

import type { Storage } from '../adapters/types.js';
import { readCheckedKeys } from '../keys/integrity.js';
import { prepareKeyStore } from './key-store-upgrade.js';
import { AuditLog } from './audit/log.js';
import { writerChain } from './audit/writer-chain.js';
import { credentialStorage, resolveKek } from './storage-setup.js';
import { ClientSecretHasher } from './client-secrets.js';
import { ConfigError, loadConfig } from './config.js';
import type { Config } from './config.js';
import { ClientAdmin, checkClientId, checkIatId } from './admin/client-admin.js';
import type { AdminActor } from './admin/client-admin.js';
import { AdminError } from './admin/errors.js';
import { MAX_PAGE_SIZE } from './admin/client-routes.js';
import { answer, cliLogger, EXIT, requireInitialised, withStore } from './cli-context.js';

const CLI: AdminActor = { kind: 'cli' };
const out = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);

/**
 * Every client, page by page as the admin API serves them, written as one JSON array as `out` would write it: the
 * store may hold more clients than one process should hold in one string.
 */
async function outEveryClient(admin: ClientAdmin): Promise<void> {
  let written = 0;
  // Nothing is written before the first page is read: a store that fails at once leaves no half array on stdout.
  for (let after: string | undefined, more = true; more; ) {
    const page = await admin.listPage(after, MAX_PAGE_SIZE);
    if (after === undefined) process.stdout.write('[');
    for (const view of page.clients) process.stdout.write(`${written++ === 0 ? '\n' : ',\n'}${JSON.stringify(view, null, 2).replace(/^/gm, '  ')}`);
    after = page.next;
    more = page.next !== undefined;
  }
  process.stdout.write(written === 0 ? ']\n' : '\n]\n');
}
const note = (text: string): void => void process.stderr.write(`agentauth: ${text}\n`);

/** A refusal: one line, and under --json the answer. Naming nothing (not found, not changeable) is a negative answer (1); malformed input a usage error (2). */
function refused(err: AdminError): void {
  note(err.message);
  const exitCode = err.code === 'invalid_request' ? EXIT.usage : 1;
  if (process.argv.includes('--json')) answer(true, undefined, { error: err.code, error_description: err.message, exit_code: exitCode }, () => '');
  process.exitCode = exitCode;
}

function where(config: Config, storage: Storage): string {
  if (storage.kind === 'mongodb') return `MongoDB database ${config.mongodb!.dbName}`;
  return `${storage.kind === 'sqlite' ? 'SQLite' : 'embedded'} store in ${config.dataDir}`;
}

/**
 * Opens the configured store for client administration. The credential is the server's key-encryption key: the
 * store must already hold signing keys (a server started on it) and the KEK must verify them (keys/integrity.ts),
 * so a wrong or missing KEK, or a wrong data directory, changes nothing. The KEK also keys the client-secret hashes.
 */
async function withClientAdmin(fn: (admin: ClientAdmin) => Promise<void>, checkArgument?: () => void): Promise<void> {
  // A malformed id is a usage error, said before any store is opened (docs/operations.md, "The command line").
  try {
    checkArgument?.();
  } catch (err) {
    if (!(err instanceof AdminError)) throw err;
    refused(err);
    return;
  }
  if (loadConfig().store === 'memory') {
    throw new ConfigError('AGENTAUTH_STORE: clients of the memory store live inside the server process; administer them through its admin API');
  }
  // As every command: says which store it uses, and refuses (creating nothing) where there is none.
  await withStore({ command: 'clients' }, async (storage, config, ctx) => {
    const audit = new AuditLog(storage.audit, { chain: writerChain('cli') });
    try {
      // The refusal every command gives a store no server has run on (naming the variables to check and --init).
      await requireInitialised(storage, ctx, { command: 'clients' });
      const log = cliLogger();
      const { kek, fallback } = await resolveKek(config, storage, log);
      await prepareKeyStore(storage, kek, fallback, log);
      await readCheckedKeys(storage.keys, kek);
      note(`using the ${where(config, storage)} (issuer ${config.issuer})`);
      const admin = new ClientAdmin({
        // Initial access tokens are stored under keyed hashes, as the server stores them (adapters/sealed-credential-ids.ts).
        storage: credentialStorage(config, storage, kek, fallback),
        hasher: new ClientSecretHasher(kek, fallback),
        staticClients: config.clients,
        audit: (event) => audit.record(event),
      });
      await fn(admin);
    } catch (err) {
      if (!(err instanceof AdminError)) throw err;
      refused(err);
    } finally {
      await audit.close();
    }
  });
}

/**
 * `agentauth clients list|show|disable|enable|delete|rotate-secret` and `agentauth clients iat list|revoke`, on the
 * `clients` and `clients iat` commands of server/cli.ts. Output is JSON on stdout (with or without `--json`); secrets are never printed except
 * the new secret of rotate-secret, once.
 */
/**
 * A subcommand answering in JSON (`--json` accepted like on every command). One whose argument is an id reads an id
 * beginning with '-' as the argument, not as an option: generated ids are base64url and may begin with '-'.
 */
function subcommand(parent: Command, spec: string): Command {
  const command = parent.command(spec).option('--json', 'answer in JSON on stdout (these commands always do; accepted like on every command)');
  return spec.includes('<') ? command.allowUnknownOption() : command;
}

export function registerClientCommands(clients: Command, iat: Command): void {
  subcommand(clients, 'list')
    .description('list clients: registered ones and those of the configuration file (no secrets)')
    .action(() => withClientAdmin((admin) => outEveryClient(admin)));
  subcommand(clients, 'show <client_id>')
    .description("show one client's metadata and state (no secrets)")
    .action((id: string) => withClientAdmin(async (admin) => out(await admin.show(id)), () => checkClientId(id)));
  subcommand(clients, 'disable <client_id>')
    .description('stop token issuance to a client at once, on every instance, and revoke its grants and tokens')
    .action((id: string) =>
      withClientAdmin(async (admin) => {
        const view = await admin.disable(id, CLI);
        out(view);
        note(view.already_disabled ? `client ${id} was disabled already (since ${view.disabled_at ?? 'an earlier disable'}): it stays disabled, and its grants and tokens stay revoked` : `client ${id} disabled; its grants and tokens are revoked`);
      }, () => checkClientId(id)),
    );
  subcommand(clients, 'enable <client_id>')
    .description('let a disabled client obtain tokens again (tokens revoked by the disable stay revoked)')
    .action((id: string) =>
      withClientAdmin(async (admin) => {
        const view = await admin.enable(id, CLI);
        out(view);
        note(view.already_enabled ? `client ${id} was not disabled; nothing changed` : `client ${id} enabled`);
      }, () => checkClientId(id)),
    );
  subcommand(clients, 'delete <client_id>')
    .description('delete a registered client and revoke everything it held')
    .action((id: string) =>
      withClientAdmin(async (admin) => {
        await admin.delete(id, CLI);
        note(`client ${id} deleted; its grants, tokens and registration access tokens are revoked`);
      }, () => checkClientId(id)),
    );
  subcommand(clients, 'rotate-secret <client_id>')
    .description('give a confidential client a new secret (printed once; the old one stops working at once)')
    .action((id: string) =>
      withClientAdmin(async (admin) => {
        const { client, clientSecret } = await admin.rotateSecret(id, CLI);
        out({ ...client, client_secret: clientSecret });
        note(`client ${id}: new secret printed once above; it is stored only as a hash`);
      }, () => checkClientId(id)),
    );
  subcommand(iat, 'list')
    .description('list live initial access tokens by fingerprint (the tokens themselves are never shown)')
    .action(() => withClientAdmin(async (admin) => out(await admin.listIats())));
  subcommand(iat, 'revoke <id>')
    .description('revoke an initial access token, by the fingerprint `clients iat list` shows or by the token')
    .action((id: string) =>
      withClientAdmin(async (admin) => {
        out(await admin.revokeIat(id, CLI));
        note('initial access token revoked');
      }, () => checkIatId(id)),
    );
}
