import type Koa from 'koa';

/**
 * Requests whose handlers are still running. Closing the listener waits for connections, not for handlers: a client
 * that disconnects mid-request leaves its handler running (it may still be rotating a refresh token and writing the
 * audit record), so shutdown also waits for this count to reach zero before it closes the audit log and storage.
 */
export class HandlersInFlight {
  #count = 0;
  #waiting: Array<() => void> = [];

  get count(): number {
    return this.#count;
  }

  readonly middleware: Koa.Middleware = async (_ctx, next) => {
    this.#count += 1;
    try {
      await next();
    } finally {
      this.#count -= 1;
      if (this.#count === 0) for (const resolve of this.#waiting.splice(0)) resolve();
    }
  };

  /** Resolves once no handler is running (at once if none is). */
  idle(): Promise<void> {
    return this.#count === 0 ? Promise.resolve() : new Promise((resolve) => this.#waiting.push(resolve));
  }
}
