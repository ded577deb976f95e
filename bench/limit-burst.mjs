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

import { Collection, MongoClient, MongoServerError } from 'mongodb';

import { MongoStorage } from '../dist/adapters/mongodb.js';
import { startFerretdb } from '../test/support/ferretdb.js';

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

// Count the store's driver calls (the bench's own load goes through `raw`, which is not counted while `counting`).
const calls = { insertOne: 0, duplicate: 0, findOne: 0 };
let counting = false;
const { insertOne, findOne } = Collection.prototype;
Collection.prototype.insertOne = async function (...args) {
  if (!counting || this.collectionName === 'bench_load') return insertOne.apply(this, args);
  calls.insertOne += 1;
  try {
    return await insertOne.apply(this, args);
  } catch (err) {
    if (err instanceof MongoServerError && err.code === 11000) calls.duplicate += 1;
    throw err;
  }
};
Collection.prototype.findOne = function (...args) {
  if (counting && this.collectionName !== 'bench_load') calls.findOne += 1;
  return findOne.apply(this, args);
};

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
  Object.assign(calls, { insertOne: 0, duplicate: 0, findOne: 0 });
  counting = true;
  const started = process.hrtime.bigint();
  const granted = (await Promise.all(Array.from({ length: takes }, () => storage.nonces.takeAttempt(key, limit, 60)))).filter(Boolean).length;
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  counting = false;
  console.log(
    `run ${run}: ${ms.toFixed(0)} ms, granted ${granted} (expected ${Math.min(limit, takes)}), ` +
      `inserts ${calls.insertOne} (${calls.duplicate} failed), point reads ${calls.findOne}`,
  );
}
loading = false;
await Promise.all(loaders);
await raw.db(dbName).dropDatabase();
await raw.close();
await storage.close();
await ferret?.stop();
