import { watchStalls } from '../support/stalls.js';

/** The measuring process's own stalls, which the storage-fault test subtracts from the latencies it judges. */
describe('watchStalls', () => {
  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
  const block = (ms: number) => {
    const until = Date.now() + ms;
    while (Date.now() < until);
  };

  test('records a blocked event loop as a gap, and overlap() counts the part of an interval inside it', async () => {
    const stalls = watchStalls(20, 250);
    try {
      await sleep(100);
      const before = Date.now();
      block(800);
      await sleep(100);
      const after = Date.now();
      expect(stalls.gaps).toHaveLength(1);
      const [gap] = stalls.gaps;
      // The gap is the lateness of the tick: the 800 ms block less at most one tick (plus however late the tick ran
      // after the block on a loaded machine).
      expect(gap!.to - gap!.from).toBeGreaterThanOrEqual(800 - 20);
      expect(gap!.to - gap!.from).toBeLessThanOrEqual(800 + 500);
      // An interval holding the whole gap gets all of it subtracted. The block's own interval gets nearly all: the gap
      // starts when the tick was due, which can be up to a tick before the block began.
      expect(stalls.overlap(gap!.from - 1000, gap!.to + 1000)).toBe(gap!.to - gap!.from);
      expect(stalls.overlap(before, after)).toBeGreaterThanOrEqual(gap!.to - gap!.from - 20);
      expect(stalls.overlap(before, after)).toBeLessThanOrEqual(gap!.to - gap!.from);
      // Only the part inside [start, end] counts; an interval outside the gap gets nothing subtracted.
      expect(stalls.overlap(gap!.from + 100, gap!.from + 300)).toBe(200);
      expect(stalls.overlap(after, after + 1000)).toBe(0);
      expect(stalls.overlap(before - 1000, before - 10)).toBe(0);
    } finally {
      stalls.stop();
    }
  });

  test('ordinary timer lateness is not a gap: an event loop that keeps turning records none', async () => {
    const stalls = watchStalls(20, 250);
    try {
      for (let i = 0; i < 20; i += 1) {
        block(30);
        await sleep(10);
      }
      expect(stalls.gaps).toEqual([]);
      expect(stalls.overlap(0, Date.now())).toBe(0);
    } finally {
      stalls.stop();
    }
  });
});
