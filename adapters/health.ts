import { deadline } from './deadline.js';
import { StorageUnavailableError } from './errors.js';
import type { Storage } from './types.js';

/**
 * Whether storage answers, kept current without a round trip per request: a ping every `intervalMs`, plus any
 * failed operation marking it down at once. Routes that issue or accept credentials refuse while it is down.
 * A ping that does not answer within `pingTimeoutMs` counts as a failure, so a hung database is seen as down within
 * `intervalMs + pingTimeoutMs` and the ping loop itself never stalls. A failed operation also asks for a ping at once
 * (one at a time, at most one per `MIN_RECHECK_MS`): one slow write on a database that answers was 503s for every
 * request until the next tick, up to `intervalMs` later; now it is one ping's round trip.
 */
/** The least time between the starts of two pings asked for by failed operations (the ticks come on top). */
export const MIN_RECHECK_MS = 100;

export class StorageHealth {
  #up = true;
  #checking = false;
  #lastCheck = 0;
  #recheck: NodeJS.Timeout | undefined;
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
    if (this.#recheck) clearTimeout(this.#recheck);
    this.#recheck = undefined;
  }

  /** Pings storage now and records the answer. */
  async check(): Promise<boolean> {
    this.#checking = true;
    this.#lastCheck = Date.now();
    try {
      await deadline(this.storage.ping(), this.pingTimeoutMs, 'storage ping');
      this.#set(true);
    } catch (err) {
      this.#set(false, err instanceof StorageUnavailableError ? err.message : String(err));
    } finally {
      this.#checking = false;
    }
    return this.#up;
  }

  /** Marks storage down at once, and (once started) pings it again as soon as allowed, to come back up just as fast. */
  markDown(err: unknown): void {
    this.#set(false, err instanceof Error ? err.message : String(err));
    if (!this.#timer || this.#checking || this.#recheck) return;
    const wait = Math.max(0, this.#lastCheck + MIN_RECHECK_MS - Date.now());
    this.#recheck = setTimeout(() => {
      this.#recheck = undefined;
      if (this.#timer && !this.#checking) void this.check();
    }, wait).unref();
  }

  #set(up: boolean, reason?: string): void {
    const changed = up !== this.#up;
    this.#up = up;
    this.#reason = up ? undefined : reason;
    if (changed) for (const fn of this.#listeners) fn(up, this.#reason);
  }
}
