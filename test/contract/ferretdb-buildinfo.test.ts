/**
 * The start-up warning for FerretDB v1 (MongoStorage's onFerretdbV1, docs/operations.md "FerretDB v1 is for tests"),
 * against the real MongoDB-wire test server. ferretdbV1Version's cases are in test/unit; here the test server
 * answers `buildInfo` as a FerretDB 1.x release does (test/ferretdb/main.go gives its embedded FerretDB the version
 * of the module it was built with), and init() warns once with that version; a server start logs the warning line
 * the operations guide names, and a start on the embedded store does not. It starts a FerretDB of its own, so that it
 * tests FerretDB even when MONGODB_URI names another server (MongoDB has no `ferretdbVersion`).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { ferretdbV1Version, MongoStorage } from '../../adapters/mongodb.js';
import { startFerretdb } from '../support/ferretdb.js';
import type { FerretdbProcess } from '../support/ferretdb.js';
import { logLines, newKek, ROOT, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';

/** The FerretDB version test/ferretdb/go.mod builds the test server with. */
const BUILT = /github\.com\/FerretDB\/FerretDB (v1\.\d+\.\d+)/.exec(readFileSync(join(ROOT, 'test', 'ferretdb', 'go.mod'), 'utf8'))![1]!;

let db: FerretdbProcess;
beforeAll(async () => {
  db = await startFerretdb();
});
afterAll(async () => {
  await db?.stop();
});

test('the test server answers buildInfo with the ferretdbVersion of its FerretDB release, and init() warns once with it', async () => {
  const warned: string[] = [];
  const storage = new MongoStorage({ uri: db.uri, dbName: uniqueDbName('buildinfo'), timeoutMs: 3000, onFerretdbV1: (v) => warned.push(v) });
  try {
    await storage.init();
    const info = (await storage.db.command({ buildInfo: 1 })) as Record<string, unknown>;
    expect(info.ferretdbVersion).toBe(BUILT);
    expect(ferretdbV1Version(info)).toBe(BUILT);
    expect(warned).toEqual([BUILT]);
  } finally {
    await storage.close();
  }
});

describe('agentauth start logs storage.ferretdb_v1', () => {
  const config = () => writeConfig(tempDir(), { resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }] });
  const warnings = (output: string) => logLines(output).filter((l) => l.event === 'storage.ferretdb_v1');

  test('on FerretDB v1: one warn line with the version, pointing at the operations guide', async () => {
    const server = await startServer({ AGENTAUTH_CONFIG: config(), MONGODB_URI: db.uri, MONGODB_DB: uniqueDbName('ferretdbwarn'), AGENTAUTH_KEK: newKek() });
    try {
      const lines = warnings(server.output());
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: 'warn', version: BUILT });
      expect(String(lines[0]!.msg)).toContain('docs/operations.md, "FerretDB v1 is for tests"');
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  test('on the embedded store: none', async () => {
    const dir = tempDir();
    const server = await startServer({ AGENTAUTH_CONFIG: config(), AGENTAUTH_DATA_DIR: join(dir, 'data'), AGENTAUTH_KEK: newKek() });
    try {
      expect(warnings(server.output())).toEqual([]);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
