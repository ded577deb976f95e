import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { EmbeddedStorage } from '../../adapters/memory.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { Storage } from '../../adapters/types.js';
import { tempDir, uniqueDbName } from './server.js';

export interface StorageFactory {
  name: 'embedded' | 'mongodb' | 'sqlite';
  create(label: string): Storage;
}

export function mongoUri(): string {
  const uri = process.env.MONGODB_URI;
  if (!uri) throw new Error('MONGODB_URI is not set: jest global setup should have started the FerretDB test server');
  return uri;
}

export const embeddedFactory: StorageFactory = {
  name: 'embedded',
  create: () => new EmbeddedStorage({ dataDir: tempDir('agentauth-embedded-') }),
};

export const mongoFactory: StorageFactory = {
  name: 'mongodb',
  create: (label) => new MongoStorage({ uri: mongoUri(), dbName: uniqueDbName(label), timeoutMs: 3000 }),
};

export const sqliteFactory: StorageFactory = {
  name: 'sqlite',
  create: () => new SqliteStorage({ dataDir: tempDir('agentauth-sqlite-') }),
};

export const FACTORIES: StorageFactory[] = [embeddedFactory, sqliteFactory, mongoFactory];

/** Records, for .ci/run, which backend and server the storage contract suite ran against and how many tests ran. */
export function recordContractRun(entry: Record<string, unknown>): void {
  const dir = join(process.cwd(), 'test-results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `storage-contract-${String(entry.backend)}.json`), `${JSON.stringify(entry)}\n`);
}
