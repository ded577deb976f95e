/**
 * Runs `loops` (clients working against the server) while `db` pauses: `before` ms of traffic, a pause of `pauseMs`,
 * then `after` ms for the retries to come back, then `stop()` and the loops' own ends awaited.
 */
export async function throughPause(
  db: { pause(): Promise<void>; resume(): void },
  loops: Array<Promise<void>>,
  stop: () => void,
  { before = 1500, pauseMs = 6000, after = 6000 }: { before?: number; pauseMs?: number; after?: number } = {},
): Promise<void> {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await sleep(before);
  await db.pause();
  await sleep(pauseMs);
  db.resume();
  await sleep(after);
  stop();
  await Promise.all(loops);
}
