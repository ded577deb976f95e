import { createHash } from 'node:crypto';
import { jest } from '@jest/globals';
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import { PRIMARY_TIMEOUT_MS, RememberedRotations, STORE_WAIT_MS, sharedRotations } from '../../server/undelivered-rotations.js';
import { ROOT } from '../support/server.js';

/** Runs test/support/undelivered-cluster.mjs (a primary and two workers); its JSON lines. */
function runCluster(env: Record<string, string> = {}): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'test', 'support', 'undelivered-cluster.mjs')], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`the cluster exited ${code}: ${err}`));
      else resolve(out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>));
    });
  });
}

describe('rotations answered 503, remembered for every worker by the primary', () => {
  test('a worker remembers, the other worker takes it once; only a hash crosses the IPC channel', async () => {
    const lines = await runCluster();
    const { answers } = lines.find((l) => l.answers) as { answers: Record<string, Record<string, unknown>> };
    expect(answers['1']).toMatchObject({ added: true, hasHere: true });
    expect(answers['2']).toEqual({ otherKind: false, has: true, take: true, takeAgain: false, unknown: false });
    const seen = lines.filter((l) => l.seen).map((l) => JSON.stringify(l.seen));
    expect(seen.length).toBeGreaterThan(0);
    for (const message of seen) expect(message).not.toContain('refresh-token-value');
  });

  test('a primary that does not answer: the add waits at most its timeout, and nothing counts as remembered (fail closed)', async () => {
    const lines = await runCluster({ SILENT_PRIMARY: '1' });
    const { answers } = lines.find((l) => l.answers) as { answers: Record<string, Record<string, unknown>> };
    expect(answers['1']).toMatchObject({ added: true, hasHere: false });
    expect(answers['1']!.addMs).toBeGreaterThanOrEqual(PRIMARY_TIMEOUT_MS - 50);
    expect(answers['1']!.addMs).toBeLessThan(PRIMARY_TIMEOUT_MS * 3);
    expect(answers['2']).toEqual({ otherKind: false, has: false, take: false, takeAgain: false, unknown: false });
  }, 30_000);

  test('a set: has keeps, take forgets, an add renews', () => {
    const set = new RememberedRotations();
    expect(set.apply('has', 'k')).toBe(false);
    set.apply('add', 'k');
    expect(set.apply('has', 'k')).toBe(true);
    expect(set.apply('take', 'k')).toBe(true);
    expect(set.apply('take', 'k')).toBe(false);
    expect(set.apply('has', 'k')).toBe(false);
  });

  test('a set: expires after 15 minutes, and keeps at most 10,000 (the oldest go first)', () => {
    const now = Date.now();
    const clock = jest.spyOn(Date, 'now').mockReturnValue(now);
    try {
      const set = new RememberedRotations();
      for (let i = 0; i <= 10_000; i += 1) set.apply('add', `k${i}`);
      expect(set.apply('has', 'k0')).toBe(false);
      expect(set.apply('has', 'k1')).toBe(true);
      expect(set.apply('has', 'k10000')).toBe(true);
      clock.mockReturnValue(now + 15 * 60_000 + 1);
      expect(set.apply('has', 'k1')).toBe(false);
    } finally {
      clock.mockRestore();
    }
  });
});

describe('refresh rotations answered 503, recorded in the store for the other instances', () => {
  /** A store of claims that fails while `failing` is set, and can hang. */
  function claims() {
    const held = new Map<string, string>();
    const consumed = new Set<string>();
    const state = { failing: false, hang: false, calls: 0 };
    return {
      state,
      held,
      store: {
        async claim(key: string, value: string) {
          state.calls += 1;
          if (state.hang) await new Promise(() => undefined);
          if (state.failing) throw new Error('store down');
          if (!held.has(key)) held.set(key, value);
          return held.get(key)!;
        },
        async boundTo(key: string) {
          if (state.failing) throw new Error('store down');
          return held.get(key);
        },
        async consume(key: string) {
          if (state.failing) throw new Error('store down');
          if (!held.has(key) || consumed.has(key)) return false;
          consumed.add(key);
          return true;
        },
      },
    };
  }

  test('recorded in the store at once when it can be, under a hash of the token; another instance finds it there', async () => {
    const { store, held } = claims();
    await sharedRotations('refresh_token', store).add('refresh-token-A');
    expect([...held.keys()]).toEqual([expect.stringMatching(/^undelivered:refresh_token:[A-Za-z0-9_-]{43}$/)]);
    expect(JSON.stringify([...held])).not.toContain('refresh-token-A');
    // What another instance recorded (nothing of it in this process's memory) is found in the store.
    held.set(`undelivered:refresh_token:${createHash('sha256').update(JSON.stringify(['refresh-token-B'])).digest('base64url')}`, 'answered-503');
    expect(await sharedRotations('refresh_token', store).has('refresh-token-B')).toBe(true);
    expect(await sharedRotations('refresh_token', store).has('refresh-token-never')).toBe(false);
  });

  /** Whether `promise` has settled, after letting every ready callback run. */
  async function settled(promise: Promise<unknown>): Promise<boolean> {
    let done = false;
    void promise.then(() => (done = true), () => (done = true));
    await jest.advanceTimersByTimeAsync(0);
    return done;
  }

  // The store's waits run on fake timers: how long the 503 waits is then exact, whatever the machine's load (on real
  // timers, a loaded CI machine fired the 250 ms timer late enough to fail a bound of 450 ms).
  test('a store that fails: the 503 waits at most STORE_WAIT_MS, and the record is written once the store is back', async () => {
    jest.useFakeTimers();
    try {
      const { store, held, state } = claims();
      state.failing = true;
      const adding = sharedRotations('refresh_token', store).add('refresh-token-C');
      await jest.advanceTimersByTimeAsync(STORE_WAIT_MS);
      expect(await settled(adding)).toBe(true);
      expect(held.size).toBe(0);
      state.failing = false;
      // Retried every second while remembered.
      await jest.advanceTimersByTimeAsync(1_000);
      expect(held.size).toBe(1);
      expect(await sharedRotations('refresh_token', store).has('refresh-token-C')).toBe(true);
    } finally {
      jest.useRealTimers();
    }
  });

  test('take: exactly one taker, here or at another instance; a store that fails leaves it remembered for the next try', async () => {
    const { store, held, state } = claims();
    const here = sharedRotations('registration_access_token', store);
    await here.add('rat-1');
    expect(await sharedRotations('registration_access_token', store).take('rat-1')).toBe(true);
    expect(await here.take('rat-1')).toBe(false);
    // Recorded by another instance only (nothing here): taken once, through the store.
    held.set(`undelivered:registration_access_token:${createHash('sha256').update(JSON.stringify(['rat-2'])).digest('base64url')}`, 'answered-503');
    expect(await here.has('rat-2')).toBe(true);
    expect((await Promise.all([here.take('rat-2'), here.take('rat-2'), here.take('rat-2')])).sort()).toEqual([false, false, true]);
    // The store fails while deciding: an error (the request answers 503), and the rotation is still known.
    await here.add('rat-3');
    state.failing = true;
    await expect(here.take('rat-3')).rejects.toThrow('store down');
    state.failing = false;
    expect(await here.take('rat-3')).toBe(true);
    expect(await here.take('rat-3')).toBe(false);
  });

  test('a rotation is remembered with its successor: a 503 for the rotation to one successor says nothing of a rotation to another', async () => {
    const { store, held } = claims();
    const here = sharedRotations('registration_access_token', store);
    await here.add('rat-5', 'successor-never-stored');
    // Keyed by a hash of both: neither value is in the store.
    expect(JSON.stringify([...held])).not.toMatch(/rat-5|successor-never-stored/);
    for (const asked of [here, sharedRotations('registration_access_token', store)]) {
      expect(await asked.has('rat-5', 'successor-stored-later')).toBe(false);
      expect(await asked.has('rat-5')).toBe(false);
      expect(await asked.take('rat-5', 'successor-stored-later')).toBe(false);
    }
    expect(await sharedRotations('registration_access_token', store).has('rat-5', 'successor-never-stored')).toBe(true);
    expect(await sharedRotations('registration_access_token', store).take('rat-5', 'successor-never-stored')).toBe(true);
    // A token value that holds the successor's start cannot stand for the pair.
    await here.add('rat-6', 'x');
    expect(await here.has('rat-6\nx')).toBe(false);
  });

  test('forget: after a delete used the token up, an earlier 503 of a delete with it gives nothing, here or elsewhere', async () => {
    const { store } = claims();
    const here = sharedRotations('registration_access_token', store);
    await here.add('rat-4');
    await here.forget('rat-4');
    expect(await here.take('rat-4')).toBe(false);
    expect(await sharedRotations('registration_access_token', store).take('rat-4')).toBe(false);
  });

  test('a store that hangs: the 503 still waits at most STORE_WAIT_MS; a lookup that fails is an error, not a "no" (the caller answers 503)', async () => {
    jest.useFakeTimers();
    try {
      const { store, state } = claims();
      state.hang = true;
      const adding = sharedRotations('refresh_token', store).add('refresh-token-D');
      await jest.advanceTimersByTimeAsync(STORE_WAIT_MS - 1);
      expect(await settled(adding)).toBe(false);
      await jest.advanceTimersByTimeAsync(1);
      expect(await settled(adding)).toBe(true);
      state.hang = false;
      state.failing = true;
      await expect(sharedRotations('refresh_token', store).has('refresh-token-E')).rejects.toThrow('store down');
    } finally {
      jest.useRealTimers();
    }
  });
});
