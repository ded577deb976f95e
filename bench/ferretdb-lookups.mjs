#!/usr/bin/env node
// What a lookup costs on the MongoDB-wire test server (FerretDB v1, SQLite backend) as a collection grows: the calls
// agentauth's MongoDB store makes on a token's path, timed through the store itself (adapters/mongodb.ts) on a fresh
// FerretDB of this script's own, with 1,000 to `--max` documents in the collection looked up. The bench's MongoDB-wire
// rows run on collections of a few thousand documents at most; this says what the same calls cost at a production
// size. `npm run build` first (and Go, for test/ferretdb/build.sh, the first time).
//
//   node bench/ferretdb-lookups.mjs                 # 1,000, 10,000 and 50,000 documents
//   node bench/ferretdb-lookups.mjs --max 100000    # up to 100,000
import { parseArgs } from 'node:util';

import { MongoStorage } from '../dist/adapters/mongodb.js';
import { startFerretdb } from '../test/support/ferretdb.js';

const { values: opts } = parseArgs({ options: { max: { type: 'string', default: '50000' }, calls: { type: 'string', default: '20' } } });
const sizes = [1_000, 10_000, 50_000, 100_000, 200_000].filter((n) => n <= Number(opts.max));
const calls = Number(opts.calls);

const ferret = await startFerretdb();
// The storage timeout as shipped (storage.timeoutMs, 2 s): a lookup slower than that fails the request with 503.
const storage = new MongoStorage({ uri: ferret.uri, dbName: 'lookups', timeoutMs: 2000 });
await storage.init();
const db = storage.db;
const CHAIN = 'host:3000#0';
const expiresAt = () => new Date(Date.now() + 3_600_000);

/** Grows each collection to `n` documents, shaped as the store writes them. */
async function grow(from, n) {
  for (let start = from; start < n; start += 1000) {
    const ids = Array.from({ length: Math.min(1000, n - start) }, (_, i) => start + i + 1);
    await db.collection('oidc_AccessToken').insertMany(
      ids.map((i) => ({ _id: `at-${i}`, payload: JSON.stringify({ kind: 'AccessToken', jti: `at-${i}`, clientId: 'agent', grantId: `g-${i}` }), expiresAt: expiresAt(), grantId: `g-${i}`, clientId: 'agent' })),
    );
    await db.collection('revoked_tokens').insertMany(ids.map((i) => ({ _id: `jti-${i}`, expiresAt: expiresAt() })));
    await storage.audit.insertBatch(
      ids.map((seq) => ({ chain: CHAIN, seq, time: new Date().toISOString(), type: 'token.issued', client_id: 'agent', details: { jti: `at-${seq}` }, prev_hash: 'p'.repeat(64), hash: 'h'.repeat(64) })),
    );
  }
}

/** Median ms of `n` calls (each awaited before the next), or the error the store answered with. */
async function time(fn, n = calls) {
  const ms = [];
  for (let i = 0; i < n; i += 1) {
    const started = process.hrtime.bigint();
    try {
      await fn(i);
    } catch (err) {
      return `fails: ${err.code ?? err.name}`;
    }
    ms.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)].toFixed(1);
}

const rows = [];
let size = 0;
for (const n of sizes) {
  await grow(size, n);
  size = n;
  // The newest documents, as a live token's would be; a lookup of one near the start would end its scan early.
  const id = (i) => n - i;
  rows.push({
    n,
    'AccessToken.find (an opaque token introspected: _id)': await time((i) => storage.model('AccessToken').find(`at-${id(i)}`)),
    'revokedTokens.isRevoked (_id)': await time((i) => storage.revokedTokens.isRevoked(`jti-${id(i)}`)),
    'revokedTokens.anyRevoked, 2 ids (a JWT with a grant: _id $in)': await time((i) => storage.revokedTokens.anyRevoked([`nope-${i}`, `grant:${i}`])),
    'AccessToken.revokeByGrantId (grantId, indexed)': await time((i) => storage.model('AccessToken').revokeByGrantId(`none-${i}`)),
    'audit.head, as at a start (a store just opened)': await time(async () => {
      const fresh = new MongoStorage({ uri: ferret.uri, dbName: 'lookups', timeoutMs: 2000 });
      try {
        await fresh.audit.head(CHAIN);
      } finally {
        await fresh.close();
      }
    }, Math.min(calls, 5)),
    'audit.head, after a failed write (the store that wrote)': await time(() => storage.audit.head(CHAIN)),
    'audit.list, a page of 1,000 (audit verify and export)': await time((i) => storage.audit.list(Math.max(1, n - 1000 * (i + 1)), 1000, CHAIN)),
  });
  console.error(`[ferretdb-lookups] ${n} documents done`);
}

const columns = Object.keys(rows[0]).filter((k) => k !== 'n');
console.log(`FerretDB v1.24 (SQLite backend), ${calls} calls each, median ms per call; "fails": the store's 2 s timeout (storage.timeoutMs) passed`);
console.log('');
console.log(`| documents in the collection | ${columns.join(' | ')} |`);
console.log(`| ---: | ${columns.map(() => '---:').join(' | ')} |`);
for (const row of rows) console.log(`| ${row.n.toLocaleString('en-US')} | ${columns.map((c) => row[c]).join(' | ')} |`);

await storage.close();
await ferret.stop();
