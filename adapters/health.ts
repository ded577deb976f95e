import { deadline } from './deadline.js';
import { StorageUnavailableError } from './errors.js';
import type { Storage } from './types.js';

/**
 * Whether storage answers, kept current without a round trip per request: a ping every `intervalMs`, plus any
 * failed operation marking it down at once. Routes that issue or accept credentials refuse while it is down.
 * A ping that does not answer within `pingTimeoutMs` counts as a failure, so a hung database is seen as down within
 * `intervalMs + pingTimeoutMs` and the ping loop itself never stalls.
 */
export class StorageHealth {
  #up = true;
  #reason: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #listeners = new Set<(up: boolean, reason?: string) => void>();

  constructor(
    private readonly storage: Storage,
    private readonly intervalMs = 1000,
    private readonly pingTimeoutMs = 2000,
  ) {}

  get up(): boolean {
    return this.#up;
  }

  get reason(): string | undefined {
    return this.#reason;
  }

  onChange(fn: (up: boolean, reason?: string) => void): void {
    this.#listeners.add(fn);
  }

  start(): void {
    if (this.#timer) return;
    const tick = async () => {
      try {
        await this.check();
      } finally {
        if (this.#timer) this.#timer = setTimeout(tick, this.intervalMs).unref();
      }
    };
    this.#timer = setTimeout(tick, this.intervalMs).unref();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Pings storage now and records the answer. */
  async check(): Promise<boolean> {
    try {
      await deadline(this.storage.ping(), this.pingTimeoutMs, 'storage ping');
      this.#set(true);
    } catch (err) {
      this.#set(false, err instanceof StorageUnavailableError ? err.message : String(err));
    }
    return this.#up;
  }

  markDown(err: unknown): void {
    this.#set(false, err instanceof Error ? err.message : String(err));
  }

  #set(up: boolean, reason?: string): void {
    const changed = up !== this.#up;
    this.#up = up;
    this.#reason = up ? undefined : reason;
    if (changed) for (const fn of this.#listeners) fn(up, this.#reason);
  }
}
