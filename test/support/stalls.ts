/**
 * When this (the measuring) process was not running: its event loop blocked, or the machine's scheduler (or the
 * virtual machine under it) not running it at all. A latency a test measures across such a gap is not the server's:
 * the answer may have been waiting on the socket the whole time. Tests that bound a server's latency judge it net of
 * the gaps this records, and print the gaps whenever one was subtracted.
 *
 * A timer ticks every `tickMs`; a tick that comes more than `minGapMs` late records a gap covering the lateness.
 * Ordinary lateness under load (tens of milliseconds) stays below `minGapMs` and is never subtracted.
 */
export interface StallWatch {
  /** The gaps seen so far, in Date.now() milliseconds. */
  readonly gaps: ReadonlyArray<{ from: number; to: number }>;
  /** How many milliseconds of [start, end] fell inside a recorded gap. */
  overlap(start: number, end: number): number;
  stop(): void;
}

export function watchStalls(tickMs = 20, minGapMs = 250): StallWatch {
  const gaps: Array<{ from: number; to: number }> = [];
  let last = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    const late = now - last - tickMs;
    if (late > minGapMs) gaps.push({ from: now - late, to: now });
    last = now;
  }, tickMs);
  return {
    gaps,
    overlap(start, end) {
      let ms = 0;
      for (const g of gaps) ms += Math.max(0, Math.min(end, g.to) - Math.max(start, g.from));
      return ms;
    },
    stop() {
      clearInterval(timer);
    },
  };
}
