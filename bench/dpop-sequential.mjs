#!/usr/bin/env node
// A focused measurement of the DPoP token path, not the benchmark (bench/run.mjs): starts `agentauth start` on the
// embedded store, sends DPoP client_credentials requests (one fresh proof each, `--keys` agent keys in turn;
// sequential unless --concurrency) and prints the server's CPU per request (utime + stime from /proc, all threads). Used for the DPoP key import
// cache (docs/performance.md); compare builds by pointing --cli at another dist/server/cli.js.
//
//   node bench/dpop-sequential.mjs [--requests 2000] [--keys 32] [--rounds 3] [--concurrency 1] [--cli dist/server/cli.js] [--cpu-prof DIR]
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { dpopKeys, dpopProofs, form, mapLimit } from './lib/fixtures.mjs';
import { cpuMicros } from './lib/proc.mjs';
import { startAgentauth } from './lib/servers.mjs';
import { AGENT, RESOURCE, agentauthConfig, basic } from './lib/shared.mjs';

const { values: opts } = parseArgs({
  options: {
    requests: { type: 'string', default: '2000' },
    keys: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '3' },
    cli: { type: 'string', default: 'dist/server/cli.js' },
    concurrency: { type: 'string', default: '1' },
    'cpu-prof': { type: 'string' },
  },
});
const requests = Number(opts.requests);

const startServer = () =>
  startAgentauth({ config: agentauthConfig(), cli: resolve(opts.cli), ...(opts['cpu-prof'] ? { profileDir: resolve(opts['cpu-prof']) } : {}) });

async function send(url, proofs) {
  const headers = { authorization: basic(AGENT), 'content-type': 'application/x-www-form-urlencoded' };
  const body = form({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' });
  await mapLimit(proofs, Number(opts.concurrency), async (dpop) => {
    const res = await fetch(`${url}/token`, { method: 'POST', headers: { ...headers, dpop }, body });
    const json = await res.json();
    if (res.status !== 200 || json.token_type !== 'DPoP') throw new Error(`token endpoint answered ${res.status}: ${JSON.stringify(json)}`);
  });
}

const keys = dpopKeys(Number(opts.keys));
const server = await startServer();
try {
  await send(server.url, dpopProofs(keys, `${server.url}/token`, 300)); // warm-up (JIT, every key seen once)
  const results = [];
  for (let round = 0; round < Number(opts.rounds); round += 1) {
    const proofs = dpopProofs(keys, `${server.url}/token`, requests);
    const before = cpuMicros(server.pid);
    const t0 = process.hrtime.bigint();
    await send(server.url, proofs);
    const wall = Number(process.hrtime.bigint() - t0) / 1e3;
    const cpu = cpuMicros(server.pid) - before;
    results.push(cpu / requests);
    console.log(`round ${round + 1}: ${requests} requests, server CPU ${(cpu / requests).toFixed(0)} µs/req, wall ${(wall / requests).toFixed(0)} µs/req`);
  }
  const sorted = [...results].sort((a, b) => a - b);
  console.log(`median server CPU: ${sorted[Math.floor(sorted.length / 2)].toFixed(0)} µs/req (${opts.cli}, ${opts.keys} keys)`);
} finally {
  await server.stop();
}
