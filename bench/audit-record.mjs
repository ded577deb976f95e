#!/usr/bin/env node
// What one token.issued audit record costs, by itself: the records the audit trail writes for a bearer token
// (tokenIssuedEvent, then AuditLog.record: normalised, chained, hashed, batched per event-loop turn), written by
// N concurrent recorders, each waiting for its record to be durable before the next, as a request does.
// Against two stores: one that answers at once (the JavaScript alone) and the SQLite store as shipped (the writer
// thread's round trip and its commit, synchronous = FULL, in a temporary directory). Prints records per second,
// event-loop time per record (performance.eventLoopUtilization) and the CPU of all the process's threads per record.
//
//   node bench/audit-record.mjs [--in-flight 16] [--records 20000] [--rounds 2]
//
// Needs `npm run build` first. In flight 1 is a request alone (a commit per record); 16 is the bench's connections.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    'in-flight': { type: 'string', default: '16' },
    records: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '2' },
  },
});
const inFlight = Number(opt['in-flight']);
const records = Number(opt.records);
const rounds = Number(opt.rounds);
if (![inFlight, records, rounds].every((n) => Number.isInteger(n) && n > 0)) {
  process.stderr.write('usage: node bench/audit-record.mjs [--in-flight 16] [--records 20000] [--rounds 2]\n');
  process.exit(2);
}

process.removeAllListeners('warning'); // node:sqlite's experimental warning
const dist = new URL('../dist/', import.meta.url);
const { tokenIssuedEvent } = await import(new URL('server/audit/trail.js', dist).href);
const { AuditLog } = await import(new URL('server/audit/log.js', dist).href);
const { SqliteStorage } = await import(new URL('adapters/sqlite.js', dist).href);

// A bearer access token as agentauth issues it (the trail reads its header and claims back; the signature is not checked).
const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const token = [
  b64({ alg: 'ES256', typ: 'at+jwt', kid: 'k'.repeat(43) }),
  b64({ jti: 'j'.repeat(43), sub: 'svc', iat: 1700000000, exp: 1700000300, scope: 'read', client_id: 'svc', iss: 'http://localhost:3000', aud: 'https://api.example.com' }),
  's'.repeat(86),
].join('.');
const event = () => tokenIssuedEvent(token, 'access_token', { grant_type: 'client_credentials', client_id: 'svc' });

const instant = { head: async () => undefined, insertBatch: async (batch) => batch.length, list: async () => [], chains: async () => [] };
const dir = mkdtempSync(join(tmpdir(), 'agentauth-audit-record-'));
const sqlite = new SqliteStorage({ dataDir: dir, busyTimeoutMs: 2000, sweepIntervalMs: 3_600_000, synchronous: 'full' });
await sqlite.init();

/** N recorders, each recording and awaiting one record at a time, until `count` records are written. */
async function record(log, count) {
  let started = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (started < count) {
        started += 1;
        await log.record(event());
      }
    }),
  );
}

async function measure(store) {
  const log = new AuditLog(store);
  await record(log, Math.min(2000, records)); // warm-up
  const elu0 = performance.eventLoopUtilization();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await record(log, records);
  const wall = performance.now() - t0;
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.cpuUsage(cpu0);
  return { perSecond: (records / wall) * 1000, eventLoop: (elu.active * 1000) / records, allThreads: (cpu.user + cpu.system) / records };
}

const rows = [];
try {
  for (let round = 1; round <= rounds; round += 1) {
    for (const [label, store] of [['store answering at once', instant], ['SQLite store (as shipped)', sqlite.audit]]) {
      const m = await measure(store);
      rows.push({ label, ...m });
      process.stdout.write(`round ${round} ${label}: ${m.perSecond.toFixed(0)} records/s, event loop ${m.eventLoop.toFixed(1)} µs/record, all threads ${m.allThreads.toFixed(1)} µs/record\n`);
    }
  }
} finally {
  await sqlite.close();
  rmSync(dir, { recursive: true, force: true });
}

const range = (xs, digits = 1) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;
process.stdout.write(`\ntoken.issued audit records, ${inFlight} in flight, ${records} per round, ${rounds} rounds (range):\n\n`);
process.stdout.write('| store | records/s | event loop µs/record | all threads µs/record |\n| --- | ---: | ---: | ---: |\n');
for (const label of [...new Set(rows.map((r) => r.label))]) {
  const mine = rows.filter((r) => r.label === label);
  process.stdout.write(`| ${label} | ${range(mine.map((r) => r.perSecond), 0)} | ${range(mine.map((r) => r.eventLoop))} | ${range(mine.map((r) => r.allThreads))} |\n`);
}
