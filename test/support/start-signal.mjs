// For the processes that race in test/contract/sqlite-store.test.ts: say "ready" on stdout, wait for "go <epoch ms>" on
// stdin, then spin until that moment, which every process of a race is given alike (a timer could fire a few
// milliseconds late in one process and not another).
import { createInterface } from 'node:readline';

export async function readyThenGo() {
  process.stdout.write('ready\n');
  let at = Date.now();
  for await (const line of createInterface({ input: process.stdin })) {
    const match = /^go (\d+)$/.exec(line);
    if (match) {
      at = Number(match[1]);
      break;
    }
  }
  while (Date.now() < at) {
    // spin
  }
}
