/**
 * The start-up warning for FerretDB v1 (MongoStorage's onFerretdbV1, docs/operations.md "FerretDB v1 is for tests")
 * reads `buildInfo` from the real MongoDB-wire server. ferretdbV1Version's cases are in test/unit; this holds the
 * read itself to the test server: it answers `buildInfo` with the `ferretdbVersion` field the warning relies on, and
 * this project's build of it reports its version as "unknown", for which init() says nothing.
 */
import { ferretdbV1Version, MongoStorage } from '../../adapters/mongodb.js';
import { mongoUri } from '../support/storages.js';
import { uniqueDbName } from '../support/server.js';

test('the test server answers buildInfo with a ferretdbVersion, and init() with onFerretdbV1 completes without calling it for "unknown"', async () => {
  const warned: string[] = [];
  const storage = new MongoStorage({ uri: mongoUri(), dbName: uniqueDbName('buildinfo'), timeoutMs: 3000, onFerretdbV1: (v) => warned.push(v) });
  try {
    await storage.init();
    const info = (await storage.db.command({ buildInfo: 1 })) as Record<string, unknown>;
    expect(info.ferretdbVersion).toBe('unknown');
    expect(ferretdbV1Version(info)).toBeUndefined();
    expect(warned).toEqual([]);
    // The same answer, as a FerretDB 1.x release reports its version, is what the warning fires for.
    expect(ferretdbV1Version({ ...info, ferretdbVersion: 'v1.24.2' })).toBe('v1.24.2');
  } finally {
    await storage.close();
  }
});
