import { MongoClient } from 'mongodb';
import { startFerretdb, threadStates } from '../support/ferretdb.js';
import type { FerretdbProcess } from '../support/ferretdb.js';

/**
 * The hung-database fixture the fault tests rely on. kill(SIGSTOP) returns before a multi-threaded process has
 * stopped (one thread takes the signal, then stops the others), and in between the others go on answering: a fault
 * test that sent its requests in that window saw them served (CI, test/contract/mongodb-faults.test.ts). pause()
 * therefore resolves only once every thread is stopped. On the 2-core test machine, 61 of 200 kill() calls returned
 * with threads still running (179 of 200 with the CPUs busy).
 */

describe('FerretDB test fixture: pause()', () => {
  let db: FerretdbProcess;

  beforeAll(async () => {
    db = await startFerretdb();
  });

  afterAll(async () => {
    await db?.stop();
  });

  test('resolves only once every thread of the server is stopped (40 pauses)', async () => {
    for (let i = 0; i < 40; i += 1) {
      await db.pause();
      const states = threadStates(db.pid!);
      db.resume();
      expect(states.length).toBeGreaterThan(1);
      expect(states.filter((s) => s !== 'T' && s !== 't')).toEqual([]);
    }
  });

  test('a paused server accepts the connection and answers nothing; resumed, it answers', async () => {
    const client = new MongoClient(db.uri, { serverSelectionTimeoutMS: 2000 });
    try {
      await client.db('admin').command({ ping: 1 });
      await db.pause();
      try {
        await expect(client.db('admin').command({ ping: 1 }, { signal: AbortSignal.timeout(300) })).rejects.toThrow();
      } finally {
        db.resume();
      }
      await expect(client.db('admin').command({ ping: 1 })).resolves.toMatchObject({ ok: 1 });
    } finally {
      await client.close();
    }
  });
});
