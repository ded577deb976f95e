import { StorageUnavailableError } from '../../adapters/errors.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { startFerretdb } from '../support/ferretdb.js';
import type { FerretdbProcess } from '../support/ferretdb.js';
import { uniqueDbName } from '../support/server.js';
import { watchStalls } from '../support/stalls.js';

/**
 * MongoStorage against a database of the test's own that hangs (SIGSTOP) and that crashes and comes back
 * (SIGKILL, restart on the same port and files): calls are bounded by timeoutMs, and after pings have failed for
 * max(5 s, 3 × timeoutMs) the client is replaced by a new one that serves once the server is back.
 */

const TIMEOUT_MS = 500;
/** max(5 s, 3 × timeoutMs) */
const REPLACE_AFTER_MS = 5000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Latencies are net of the times this process stood still (test/support/stalls.ts), as in storage-faults.test.ts. */
const stalls = watchStalls();
afterAll(() => stalls.stop());

async function settle(call: Promise<unknown>): Promise<{ err: unknown; ms: number }> {
  const started = Date.now();
  const net = () => {
    const ended = Date.now();
    return ended - started - stalls.overlap(started, ended);
  };
  try {
    await call;
    return { err: undefined, ms: net() };
  } catch (err) {
    return { err, ms: net() };
  }
}

describe('MongoStorage when its server hangs, or crashes and restarts', () => {
  let db: FerretdbProcess;
  let storage: MongoStorage;
  const replaced: string[] = [];

  beforeAll(async () => {
    db = await startFerretdb();
    storage = new MongoStorage({ uri: db.uri, dbName: uniqueDbName('faults'), timeoutMs: TIMEOUT_MS, onReconnect: (reason) => replaced.push(reason) });
    await storage.init();
  });

  afterAll(async () => {
    await storage?.close();
    await db?.stop();
  });

  test('a hung server fails every call, and the ping, with StorageUnavailableError after timeoutMs, not later', async () => {
    await storage.model('Grant').upsert('g1', { kind: 'Grant' }, 60);
    await db.pause();
    try {
      const calls = await Promise.all([
        settle(storage.ping()),
        settle(storage.model('Grant').find('g1')),
        settle(storage.model('AuthorizationCode').consume('c1')),
        settle(storage.model('RefreshToken').consumption('r1')),
        settle(storage.model('RefreshToken').setSuccessor('r1', 'r2')),
        settle(storage.audit.head()),
        settle(storage.keys.list()),
      ]);
      for (const { err, ms } of calls) {
        expect(err).toBeInstanceOf(StorageUnavailableError);
        expect(ms).toBeLessThanOrEqual(TIMEOUT_MS + 1000);
      }
      // Naming the setting that bounds it, for the operator who reads it in a log or in "agentauth: cannot start: ...".
      expect((calls[5]!.err as Error).message).toBe(`MongoDB audit.head timed out after ${TIMEOUT_MS} ms (storage.timeoutMs)`);
    } finally {
      db.resume();
    }
    expect(await storage.model('Grant').find('g1')).toMatchObject({ kind: 'Grant' });
    // A ping that succeeds ends the streak of failed ones this pause began (the later tests count from their own).
    await storage.ping();
  });

  test('rotations cut by a hung server leave each token unused, or used with its successor stored and recorded', async () => {
    const store = storage.model('RefreshToken');
    const chains = 30;
    const cut: Array<{ token: string; next: string }> = [];
    let rotated = 0;
    // Seeded one by one, each given a few tries: 30 writes at once on a loaded host can outlast this file's 500 ms.
    for (let c = 0; c < chains; c += 1) {
      for (let attempt = 1; ; attempt += 1) {
        try {
          await store.upsert(`rt-cut-${c}-0`, { kind: 'RefreshToken', grantId: `g-cut-${c}` }, 600);
          break;
        } catch (err) {
          if (!(err instanceof StorageUnavailableError) || attempt === 5) throw err;
        }
      }
    }
    const chain = async (c: number) => {
      let token = `rt-cut-${c}-0`;
      for (let n = 1; ; n += 1) {
        const next = `rt-cut-${c}-${n}`;
        try {
          expect(await store.rotate(token, next, { kind: 'RefreshToken', grantId: `g-cut-${c}` }, 600, true)).toBe(true);
          rotated += 1;
          token = next;
        } catch (err) {
          expect(err).toBeInstanceOf(StorageUnavailableError);
          cut.push({ token, next });
          return;
        }
      }
    };
    const running = Array.from({ length: chains }, (_, c) => chain(c));
    // Every chain rotates until a write is cut; pause once they have all been going for a while (not after a fixed
    // time, which a slow host spends on the first rotations).
    // A chain may also be cut before the pause by a write slower than 500 ms on a loaded host: it is checked the same.
    for (let waited = 0; rotated < chains * 3 && cut.length < chains && waited < 20_000; waited += 20) await sleep(20);
    expect(rotated).toBeGreaterThan(0);
    await db.pause(); // every chain has a rotation in flight, cut at whichever of its writes it had reached
    await sleep(TIMEOUT_MS * 3);
    db.resume();
    await Promise.all(running);
    await sleep(1000); // what the database applies late, once it runs again
    expect(cut).toHaveLength(chains);
    for (const { token, next } of cut) {
      const mark = await store.consumption(token);
      if (mark === undefined) {
        // Unused: still rotatable; a successor stored before the cut is an orphan nobody holds.
        expect(await store.find(token)).toMatchObject({ kind: 'RefreshToken' });
      } else {
        // Used: the successor it was used for is both stored and recorded, for the refresh grace to hand out.
        expect(mark).toEqual({ at: expect.any(Number), successor: next });
        expect(await store.find(next)).toMatchObject({ kind: 'RefreshToken' });
      }
    }
  });

  test(`after pings have failed for ${REPLACE_AFTER_MS} ms the client is replaced, and the new one serves once the server is back`, async () => {
    const first = storage.client;
    await db.kill();
    const down = Date.now();
    // Failing pings, but not yet for long enough: the client is kept.
    while (Date.now() - down < REPLACE_AFTER_MS - 1500) {
      await expect(storage.ping()).rejects.toBeInstanceOf(StorageUnavailableError);
      await sleep(250);
    }
    expect(storage.client).toBe(first);
    expect(replaced).toEqual([]);
    // Failing for longer: replaced, and the reason reported.
    while (Date.now() - down < REPLACE_AFTER_MS + 1500) {
      await expect(storage.ping()).rejects.toBeInstanceOf(StorageUnavailableError);
      await sleep(250);
    }
    expect(storage.client).not.toBe(first);
    expect(replaced.length).toBeGreaterThanOrEqual(1);
    expect(replaced[0]).toMatch(/MongoDB ping/);

    db = await startFerretdb({ port: db.port, dir: db.dir });
    const back = Date.now();
    for (;;) {
      const { err } = await settle(storage.ping());
      if (!err) break;
      if (Date.now() - back > 10_000) throw new Error(`storage did not come back: ${String(err)}`);
      await sleep(250);
    }
    // Same data, through the new client.
    expect(await storage.model('Grant').find('g1')).toMatchObject({ kind: 'Grant' });
    await storage.model('Grant').upsert('g2', { kind: 'Grant' }, 60);
    expect(await storage.model('Grant').find('g2')).toMatchObject({ kind: 'Grant' });
  });
});
