#!/usr/bin/env node
// What the body-receipt clock (server/http/body-received.ts) adds to every request, without a network in the way:
// `--requests` request streams (node:stream Readables standing in for IncomingMessage) each get a small form body
// and are read to their end, with and without the layer run on them first, alternating `--pairs` times in this
// process. Prints CPU per request (process.cpuUsage) for each; the difference is the layer's own cost, the WeakMap
// entry and the listener included. Over HTTP the same difference is lost in the host's spread. `npm run build` first.
//
//   node bench/body-receipt-clock.mjs [--pairs 5] [--requests 200000]
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';

const { bodyReceiptClock, bodyReceivedAt } = await import('../dist/server/http/body-received.js');

const { values: opts } = parseArgs({
  options: {
    pairs: { type: 'string', default: '5' },
    requests: { type: 'string', default: '200000' },
  },
});

const body = Buffer.from(`grant_type=refresh_token&refresh_token=${'x'.repeat(43)}&client_id=${'y'.repeat(22)}`);
const next = () => Promise.resolve();

/** One request: the layer (or not), then the body arrives and is read to its end, as oidc-provider's parser does. */
async function request(withClock) {
  const req = new Readable({ read() {} });
  req.complete = false;
  if (withClock) await bodyReceiptClock({ req }, next);
  req.push(body);
  req.push(null);
  let bytes = 0;
  for await (const chunk of req) bytes += chunk.length;
  return withClock ? bodyReceivedAt(req) + bytes : bytes;
}

async function measure(withClock) {
  const n = Number(opts.requests);
  const before = process.cpuUsage();
  for (let i = 0; i < n; i += 1) await request(withClock);
  const used = process.cpuUsage(before);
  return (used.user + used.system) / n;
}

await measure(false);
await measure(true);
const results = { without: [], clock: [] };
for (let i = 0; i < Number(opts.pairs); i += 1) {
  results.without.push(await measure(false));
  results.clock.push(await measure(true));
  console.log(`pair ${i + 1}: without ${results.without.at(-1).toFixed(3)} µs/request, with the clock ${results.clock.at(-1).toFixed(3)}`);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`median: without ${median(results.without).toFixed(3)} µs/request, with the clock ${median(results.clock).toFixed(3)}`);
