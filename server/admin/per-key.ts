/**
 * Runs tasks one after another per key, in the order they were handed in, and tasks of different keys side by side.
 * A failed task does not stop the ones queued after it.
 */
export class PerKeyQueue {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const result = previous.then(task, task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }

  /** Keys with a task running or queued (tests). */
  get size(): number {
    return this.#tails.size;
  }
}
