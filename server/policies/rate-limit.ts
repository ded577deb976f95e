/**
 * Fixed-window counter per key (client IP for open registration). Per process: with N instances the effective
 * quota is N times the configured one; put a shared limiter in front if that matters.
 */
export class WindowLimiter {
  readonly #windows = new Map<string, { start: number; count: number }>();

  constructor(private readonly max: number, private readonly windowSeconds: number) {}

  /** Counts a hit; `retryAfter` (seconds) is set when the key is over its quota. */
  hit(key: string, now = Date.now()): { allowed: boolean; retryAfter: number } {
    const windowMs = this.windowSeconds * 1000;
    let w = this.#windows.get(key);
    if (!w || now - w.start >= windowMs) {
      w = { start: now, count: 0 };
      this.#windows.set(key, w);
      if (this.#windows.size > 100_000) this.#prune(now);
    }
    w.count += 1;
    if (w.count <= this.max) return { allowed: true, retryAfter: 0 };
    return { allowed: false, retryAfter: Math.max(1, Math.ceil((w.start + windowMs - now) / 1000)) };
  }

  #prune(now: number): void {
    const windowMs = this.windowSeconds * 1000;
    for (const [k, w] of this.#windows) if (now - w.start >= windowMs) this.#windows.delete(k);
  }
}
