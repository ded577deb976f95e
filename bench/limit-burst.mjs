#!/usr/bin/env node
// A shared limit's counter on MongoDB under a burst: `--takes` concurrent takes of one key with limit `--limit`
// (MongoStorage.nonces.takeAttempt, as the shared limits call it), `--runs` times with a fresh key, optionally while
// another client writes in a loop (`--load N`: N concurrent inserts at all times). Prints per run the burst's wall
// time, how many takes were granted (always min(limit, takes)) and the driver calls the burst made, failed
// (duplicate-key) inserts among them. Starts its own FerretDB test server unless `--uri` is given (then it works in a
// new database of its own, dropped at the end). `npm run build` first.
//
//   node bench/limit-burst.mjs --limit 40 --takes 60 --runs 5 --load 4
//   node bench/limit-burst.mjs --limit 1000 --takes 60 --runs 5 --load 4
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { MongoClient } from 'mongodb';

import { MongoStorage } from '../dist/adapters/mongodb.js';
import { startFerretdb } from '../test/support/ferretdb.js';
import { countDriverOps } from './lib/mongo-probe.mjs';

const { values: opts } = parseArgs({
  options: {
    uri: { type: 'string' },
    limit: { type: 'string', default: '40' },
    takes: { type: 'string', default: '60' },
    runs: { type: 'string', default: '5' },
    load: { type: 'string', default: '0' },
  },
});
const [limit, takes, runs, load] = [opts.limit, opts.takes, opts.runs, opts.load].map(Number);

// Count the store's driver calls (bench/lib/mongo-probe.mjs); the background load's collection is left out.
const counts = countDriverOps({ skip: (name) => name === 'bench_load' });
const count = (key) => Object.entries(counts).reduce((n, [k, v]) => (k.endsWith(key) ? n + v : n), 0);

const ferret = opts.uri ? undefined : await startFerretdb();
const uri = opts.uri ?? ferret.uri;
const dbName = `bench_limits_${randomBytes(4).toString('hex')}`;
const storage = new MongoStorage({ uri, dbName, timeoutMs: 3000 });
try {
  await storage.init();
} catch (err) {
  console.error(`limit-burst: ${err instanceof Error ? err.message : String(err)}`);
  await ferret?.stop();
  process.exit(1);
}

let loading = load > 0;
const raw = new MongoClient(uri);
const loadCollection = raw.db(dbName).collection('bench_load');
const loaders = Array.from({ length: load }, async () => {
  while (loading) await loadCollection.insertOne({ at: new Date(), pad: randomBytes(256).toString('base64') });
});

await storage.nonces.takeAttempt(`warm-${randomBytes(4).toString('hex')}`, limit, 60); // connection pool, indexes
console.log(`limit ${limit}, ${takes} concurrent takes, ${runs} runs, ${load} concurrent background inserts, ${opts.uri ? `${uri.replace(/\/\/[^@/]*@/, '//')} (credentials not shown), database ${dbName} (dropped at the end)` : 'FerretDB test server'}`);
for (let run = 1; run <= runs; run += 1) {
  const key = `burst-${randomBytes(6).toString('hex')}`;
  for (const k of Object.keys(counts)) delete counts[k];
  const started = process.hrtime.bigint();
  const granted = (await Promise.all(Array.from({ length: takes }, () => storage.nonces.takeAttempt(key, limit, 60)))).filter(Boolean).length;
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(
    `run ${run}: ${ms.toFixed(0)} ms, granted ${granted} (expected ${Math.min(limit, takes)}), ` +
      `inserts ${count('.insertOne')} (${count('.insertOne!duplicate')} failed), point reads ${count('.findOne')}`,
  );
}
loading = false;
await Promise.all(loaders);
await raw.db(dbName).dropDatabase();
await raw.close();
await storage.close();
await ferret?.stop();
