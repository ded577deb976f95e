#!/usr/bin/env node
// What `agentauth subjects revoke <sub>` (and POST /admin/subjects/:sub/revoke) costs as the store grows: the time to
// find and revoke one person's grants and sessions among `n` other people's, on the embedded store (SQLite) through
// the store itself (adapters/sqlite.ts), and with --mongodb on a FerretDB of this script's own. The other people's
// grants and sessions are written straight into the file (or collections), shaped as the store writes them.
// `npm run build` first.
//
//   node bench/subject-revoke.mjs                     # 10,000, 100,000 and 300,000 grants and as many sessions
//   node bench/subject-revoke.mjs --max 1000000
//   node bench/subject-revoke.mjs --mongodb --max 20000
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { parseArgs } from 'node:util';

import { SqliteStorage } from '../dist/adapters/sqlite.js';
import { MongoStorage } from '../dist/adapters/mongodb.js';
import { revokeSubject } from '../dist/server/subject-revocation.js';

const { values: opts } = parseArgs({ options: { max: { type: 'string', default: '300000' }, mongodb: { type: 'boolean', default: false }, legacy: { type: 'boolean', default: false } } });
const sizes = [1_000, 10_000, 100_000, 300_000, 1_000_000].filter((n) => n <= Number(opts.max));
const SUB = 'did:pkh:eip155:1:0x00000000000000000000000000000000000000Aa';
const other = (i) => `did:pkh:eip155:1:0x${i.toString(16).padStart(40, '0')}`;
const hour = () => Date.now() + 3_600_000;
const grant = (id, accountId) => ({ kind: 'Grant', jti: id, accountId, clientId: 'agent', openid: { scope: 'openid' }, exp: Math.floor(hour() / 1000) });
const session = (id, accountId) => ({ kind: 'Session', jti: id, uid: `uid-${id}`, accountId, loginTs: Math.floor(Date.now() / 1000), exp: Math.floor(hour() / 1000) });

let storage;
// As this build of the store writes them (an accountId field on Grant and Session records); --legacy: as the store wrote them before.
const accountField = !opts.legacy;
let write;
let stop = async () => {};
if (opts.mongodb) {
  const { startFerretdb } = await import('../test/support/ferretdb.js');
  const ferret = await startFerretdb();
  storage = new MongoStorage({ uri: ferret.uri, dbName: 'subjects', timeoutMs: 60_000 });
  await storage.init();
  write = async (model, docs) => {
    const toDoc = ([id, payload]) => ({ _id: id, payload: JSON.stringify(payload), expiresAt: new Date(hour()), ...(payload.uid ? { uid: payload.uid } : {}), clientId: 'agent', ...(model === 'Grant' ? { grantId: id } : {}), ...(accountField ? { accountId: payload.accountId } : {}) });
    await storage.db.collection(`oidc_${model}`).insertMany(docs.map(toDoc));
  };
  stop = async () => {
    await storage.close?.();
    await ferret.stop?.();
  };
} else {
  const dir = mkdtempSync(join(tmpdir(), 'agentauth-subjects-'));
  storage = new SqliteStorage({ dataDir: dir });
  await storage.init();
  const db = new DatabaseSync(storage.file);
  db.exec('PRAGMA busy_timeout = 10000');
  const insert = db.prepare('INSERT INTO oidc_records (model, id, payload, expires_at, grant_id, uid, client_id) VALUES (?, ?, ?, ?, ?, ?, ?)');
  write = async (model, docs) => {
    db.exec('BEGIN');
    for (const [id, payload] of docs) insert.run(model, id, JSON.stringify(payload), hour(), model === 'Grant' ? id : null, payload.uid ?? null, 'agent');
    db.exec('COMMIT');
  };
  stop = async () => {
    db.close();
    await storage.close?.();
    rmSync(dir, { recursive: true, force: true });
  };
}

const rows = [];
let size = 0;
let round = 0;
for (const n of sizes) {
  for (let start = size; start < n; start += 5000) {
    const ids = Array.from({ length: Math.min(5000, n - start) }, (_, i) => start + i);
    await write('Grant', ids.map((i) => [`g-${i}`, grant(`g-${i}`, other(i))]));
    await write('Session', ids.map((i) => [`s-${i}`, session(`s-${i}`, other(i))]));
  }
  size = n;
  round += 1;
  // The person's own: 3 grants and 1 session, new each round.
  await write('Grant', [0, 1, 2].map((k) => [`mine-${round}-${k}`, grant(`mine-${round}-${k}`, SUB)]));
  await write('Session', [[`mine-${round}`, session(`mine-${round}`, SUB)]]);
  const started = process.hrtime.bigint();
  const result = await revokeSubject(storage, SUB, async () => undefined);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  rows.push({ 'other grants and sessions': `${n.toLocaleString('en')} + ${n.toLocaleString('en')}`, 'revoked': `${result?.grants.length ?? 0} grants, ${result?.sessions ?? 0} session`, ms: ms.toFixed(1) });
  console.error(JSON.stringify(rows.at(-1)));
}
console.log(`\n| store | other people's grants + sessions | revoked | ms |\n| --- | ---: | --- | ---: |`);
for (const r of rows) console.log(`| ${opts.mongodb ? 'MongoDB wire (FerretDB)' : 'embedded (SQLite)'} | ${r['other grants and sessions']} | ${r.revoked} | ${r.ms} |`);
await stop();
process.exit(0);
