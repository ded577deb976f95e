import { MIN_RECHECK_MS, StorageHealth } from '../../adapters/health.js';
import { StorageUnavailableError } from '../../adapters/errors.js';
import type { Storage } from '../../adapters/types.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A storage whose ping answers as `answer` says, counting pings and how many run at once. */
function fakeStorage() {
  const state = { pings: 0, inFlight: 0, maxInFlight: 0, starts: [] as number[], answer: 'ok' as 'ok' | 'fail' | 'hang' };
  const storage = {
    async ping() {
      state.pings += 1;
      state.starts.push(Date.now());
      state.inFlight += 1;
      state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
      try {
        if (state.answer === 'hang') await new Promise(() => undefined);
        await sleep(5);
        if (state.answer === 'fail') throw new StorageUnavailableError('ping refused');
      } finally {
        state.inFlight -= 1;
      }
    },
  } as unknown as Storage;
  return { storage, state };
}

async function until(what: string, ok: () => boolean, withinMs = 5000): Promise<void> {
  for (const started = Date.now(); !ok(); await sleep(5)) {
    if (Date.now() - started > withinMs) throw new Error(`${what} not reached within ${withinMs} ms`);
  }
}

describe('StorageHealth: a failed operation marks storage down and asks for a ping at once', () => {
  // Ticks an hour apart: every ping these tests see is one a failed operation asked for.
  const HOUR = 3_600_000;

  test('one failed operation on storage that answers: down, then up again after one ping, not at the next tick', async () => {
    const { storage, state } = fakeStorage();
    const health = new StorageHealth(storage, HOUR, 1000);
    const changes: boolean[] = [];
    health.onChange((up) => changes.push(up));
    health.start();
    try {
      health.markDown(new StorageUnavailableError('MongoDB RefreshToken.rotate timed out after 1000 ms'));
      expect(health.up).toBe(false);
      expect(health.reason).toBe('MongoDB RefreshToken.rotate timed out after 1000 ms');
      await until('storage up again', () => health.up);
      expect(state.pings).toBe(1);
      expect(changes).toEqual([false, true]);
    } finally {
      health.stop();
    }
  });

  test('storage that stays down stays down; a burst of failures runs one ping at a time, spaced at least MIN_RECHECK_MS apart', async () => {
    const { storage, state } = fakeStorage();
    state.answer = 'fail';
    const health = new StorageHealth(storage, HOUR, 1000);
    health.start();
    try {
      const until600 = Date.now() + 600;
      while (Date.now() < until600) {
        for (let i = 0; i < 50; i += 1) health.markDown(new Error('write failed'));
        expect(health.up).toBe(false);
        await sleep(1);
      }
      await sleep(MIN_RECHECK_MS + 50);
      expect(health.up).toBe(false);
      expect(state.maxInFlight).toBe(1);
      expect(state.pings).toBeGreaterThanOrEqual(2);
      // 600 ms of failures: about one ping per MIN_RECHECK_MS, never one per failure.
      expect(state.pings).toBeLessThanOrEqual(Math.ceil(700 / MIN_RECHECK_MS) + 1);
      for (let i = 1; i < state.starts.length; i += 1) expect(state.starts[i]! - state.starts[i - 1]!).toBeGreaterThanOrEqual(MIN_RECHECK_MS - 2);
      state.answer = 'ok';
      health.markDown(new Error('write failed'));
      await until('storage up again', () => health.up);
    } finally {
      health.stop();
    }
  });

  test('a hung ping keeps storage down, bounded by pingTimeoutMs, and asks for no second ping meanwhile', async () => {
    const { storage, state } = fakeStorage();
    state.answer = 'hang';
    const health = new StorageHealth(storage, HOUR, 300);
    health.start();
    try {
      health.markDown(new Error('write timed out'));
      await until('a ping', () => state.pings === 1);
      for (let i = 0; i < 20; i += 1) health.markDown(new Error('write timed out'));
      await sleep(200);
      expect(state.pings).toBe(1);
      expect(health.up).toBe(false);
      await sleep(200); // past pingTimeoutMs: that ping counted as failed, and the next failure may ask again
      health.markDown(new Error('write timed out'));
      await until('a second ping', () => state.pings === 2);
      expect(health.reason).toBe('write timed out');
    } finally {
      health.stop();
    }
  });

  test('before start (and after stop) a failed operation marks storage down and pings nothing', async () => {
    const { storage, state } = fakeStorage();
    const health = new StorageHealth(storage, HOUR, 1000);
    health.markDown(new Error('write failed'));
    await sleep(MIN_RECHECK_MS + 50);
    expect(health.up).toBe(false);
    expect(state.pings).toBe(0);
    health.start();
    health.stop();
    health.markDown(new Error('write failed'));
    await sleep(MIN_RECHECK_MS + 50);
    expect(state.pings).toBe(0);
  });
});
