import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

import { startConfigured } from './server.js';
import type { RunningServer } from './server.js';

/**
 * A server on the embedded store with its SQLite file open beside it, for tests that make the store fail by adding
 * triggers to the server's own file (standing for a full disk or a failing store) and remove them again (its recovery).
 */
export interface ServerWithStoreFile {
  server: RunningServer;
  db: DatabaseSync;
  close(): Promise<void>;
}

export async function startWithStoreFile(config: unknown): Promise<ServerWithStoreFile> {
  const started = await startConfigured(config);
  const db = new DatabaseSync(join(started.env.AGENTAUTH_DATA_DIR!, 'agentauth.sqlite'));
  // The server's writer may hold the write lock when a trigger is added or dropped: wait for it, as the server's own
  // connections do, rather than fail with "database is locked" (seen under CI load).
  db.exec('PRAGMA busy_timeout = 10000');
  return {
    server: started.server,
    db,
    async close() {
      db.close();
      await started.server.stop();
    },
  };
}

/** A trigger that refuses `op` on `table` (optionally only `when`), as a failing store would. */
export const refuseWrites = (name: string, op: 'INSERT' | 'UPDATE' | 'DELETE', table: string, when = ''): string =>
  `CREATE TRIGGER ${name} BEFORE ${op} ON ${table} ${when} BEGIN SELECT RAISE(ABORT, 'test: writes refused'); END;`;

/** Both triggers that refuse every insert and update of records of one oidc-provider model. */
export const refuseModelWrites = (model: string): string =>
  [
    refuseWrites('refuse_writes', 'INSERT', 'oidc_records', `WHEN NEW.model = '${model}'`),
    refuseWrites('refuse_updates', 'UPDATE', 'oidc_records', `WHEN NEW.model = '${model}'`),
  ].join('\n');

/** Runs `fn` while `triggers` are in the file `db`, and removes them again. */
export async function withTriggers<T>(db: DatabaseSync, triggers: string, fn: () => Promise<T>): Promise<T> {
  const names = [...triggers.matchAll(/CREATE TRIGGER (\w+)/g)].map((m) => m[1]!);
  db.exec(triggers);
  try {
    return await fn();
  } finally {
    db.exec(names.map((n) => `DROP TRIGGER ${n};`).join('\n'));
  }
}

/**
 * Runs `fn` while `triggers` are in the file, then removes them and waits until the server has seen its store recover
 * (a failed write has it answer 503 to everything until its next good ping: docs/operations.md, "Storage outages").
 */
export async function whileRefusing<T>({ server, db }: Pick<ServerWithStoreFile, 'server' | 'db'>, triggers: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await withTriggers(db, triggers, fn);
  } finally {
    await untilReady(server);
  }
}

/** Until `server` answers /readyz 200 again (its store recovered), for at most 15 s. */
export async function untilReady(server: Pick<ServerWithStoreFile['server'], 'url'>): Promise<void> {
  const until = Date.now() + 15_000;
  while ((await fetch(`${server.url}/readyz`)).status !== 200) {
    if (Date.now() > until) throw new Error('the server did not recover within 15 s of its store');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts a server with its store file for the enclosing describe (beforeAll, closed in afterAll); the server and the
 * file are read through the returned object once started.
 */
export function serverWithStoreFile(config: unknown): Pick<ServerWithStoreFile, 'server' | 'db'> {
  let running: ServerWithStoreFile | undefined;
  beforeAll(async () => {
    running = await startWithStoreFile(config);
  });
  afterAll(() => running?.close());
  const started = () => {
    if (!running) throw new Error('the server with its store file is not started yet (use it inside a test)');
    return running;
  };
  return {
    get server() {
      return started().server;
    },
    get db() {
      return started().db;
    },
  };
}
