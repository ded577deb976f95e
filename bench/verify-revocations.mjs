#!/usr/bin/env node
// What `agentauth verify` costs to answer "revoked?" as the audit log grows (server/token-verification.ts
// `revocationFacts`), on the embedded store (SQLite): through the audit_records_revocations index
// (AuditStore.revocations), against reading every chain of the log a page at a time (how it was answered before).
// Also what the index costs: building it over an existing log (the first start after an upgrade) and inserting
// records with it. The log is written straight into the file, shaped as the store writes it: nine records in ten are
// `token.issued`, the rest revocations of other tokens, grants and clients. `npm run build` first.
//
//   node bench/verify-revocations.mjs                 # 10,000, 100,000 and 1,000,000 records
//   node bench/verify-revocations.mjs --max 100000
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { parseArgs } from 'node:util';

import { SqliteStorage } from '../dist/adapters/sqlite.js';
import { revocationFacts } from '../dist/server/token-verification.js';

const { values: opts } = parseArgs({ options: { max: { type: 'string', default: '1000000' } } });
const sizes = [10_000, 100_000, 1_000_000].filter((n) => n <= Number(opts.max));
const KINDS = ['token.revoked', 'grant.revoked', 'client.deleted', 'client.disabled'];
const record = (seq) => {
  const revoking = seq % 10 === 0;
  const type = revoking ? KINDS[(seq / 10) % 4] : 'token.issued';
  return { chain: 'host-1:3000#1', seq, time: new Date(1_790_000_000_000 + seq).toISOString(), type, client_id: `client-${seq % 500}`, sub: `did:pkh:eip155:1:0x${seq.toString(16).padStart(40, '0')}`, details: { jti: `jti-${seq}`, grant_id: `grant-${seq}`, exp: 1_790_000_300, token_type_issued: 'access_token' }, prev_hash: 'x'.repeat(64), hash: 'y'.repeat(64) };
};
// The token asked about: its own revocation is the newest record; its grant and client have none.
const claims = (n) => ({ jti: `jti-${n}`, grant_id: 'grant-none', client_id: 'client-none', iat: 1_790_000_000 });

/** How `revocationFacts` read the audit log before the index: every chain, a page of 1,000 at a time. */
async function scanned(storage, { jti, grant_id: grantId, client_id: clientId }) {
  let hits = 0;
  for (const chain of await storage.audit.chains()) {
    for (let from = 1; ; ) {
      const page = await storage.audit.list(from, 1000, chain);
      for (const r of page) {
        if ((r.type === 'token.revoked' && r.details.jti === jti) || (r.type === 'grant.revoked' && r.details.grant_id === grantId) || ((r.type === 'client.deleted' || r.type === 'client.disabled') && r.client_id === clientId)) hits += 1;
      }
      if (page.length < 1000) break;
      from = page.at(-1).seq + 1;
    }
  }
  return hits;
}

const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
const rows = [];
for (const n of sizes) {
  const dir = mkdtempSync(join(tmpdir(), 'agentauth-verify-'));
  const storage = new SqliteStorage({ dataDir: dir });
  await storage.init();
  const db = new DatabaseSync(storage.file);
  db.exec('PRAGMA busy_timeout = 10000');
  const { sql: indexSql } = db.prepare("SELECT sql FROM sqlite_schema WHERE name = 'audit_records_revocations'").get();
  const insert = db.prepare('INSERT INTO audit_records (chain, seq, record) VALUES (?, ?, ?)');
  const fill = (from, to) => {
    db.exec('BEGIN');
    for (let seq = from; seq <= to; seq += 1) insert.run('host-1:3000#1', seq, JSON.stringify(record(seq)));
    db.exec('COMMIT');
  };
  // Inserting with and without the index (the same number of records, into a log of n/2 either way).
  db.exec('DROP INDEX audit_records_revocations');
  let t0 = process.hrtime.bigint();
  fill(1, n / 2);
  const insertWithout = ms(t0) / (n / 2);
  t0 = process.hrtime.bigint();
  db.exec(indexSql);
  const build = ms(t0);
  t0 = process.hrtime.bigint();
  fill(n / 2 + 1, n);
  const insertWith = ms(t0) / (n / 2);
  const asked = claims(n - 40); // a token.revoked record (seq a multiple of 40)
  t0 = process.hrtime.bigint();
  const facts = await revocationFacts(storage, asked);
  const indexed = ms(t0);
  t0 = process.hrtime.bigint();
  const hits = await scanned(storage, asked);
  const before = ms(t0);
  if (!facts.some((f) => f.startsWith('token revoked at')) || hits !== 1) throw new Error(`wrong answer: ${JSON.stringify(facts)}, ${hits}`);
  rows.push({ records: n, before, indexed, build, insertWithout, insertWith });
  db.close();
  await storage.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log('| audit records | "revoked?" reading the log (before) | through the index | building the index over the log | insert per record without → with the index |');
console.log('| ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) console.log(`| ${r.records.toLocaleString('en')} | ${r.before.toFixed(0)} ms | ${r.indexed.toFixed(1)} ms | ${r.build.toFixed(0)} ms | ${(r.insertWithout * 1000).toFixed(1)} → ${(r.insertWith * 1000).toFixed(1)} µs |`);
