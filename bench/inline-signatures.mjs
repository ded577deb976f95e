#!/usr/bin/env node
// What server/crypto/inline-signatures.ts saves per signature: ES256 (P-256, SHA-256) and Ed25519 signing and
// verifying of a JWT-sized input through WebCrypto's own `crypto.subtle` (a job on libuv's thread pool each) and
// through the installed inline methods (node:crypto on the calling thread), `--ops` operations `--depth` at a time,
// alternating `--pairs` times in this process. Prints CPU per operation of the whole process (every thread:
// process.cpuUsage) and wall time per operation. `npm run build` first.
//
//   node bench/inline-signatures.mjs [--pairs 3] [--ops 20000] [--depth 16]
import { webcrypto } from 'node:crypto';
import { parseArgs } from 'node:util';

const { installInlineSignatures } = await import('../dist/server/crypto/inline-signatures.js');

const { values: opts } = parseArgs({
  options: {
    pairs: { type: 'string', default: '3' },
    ops: { type: 'string', default: '20000' },
    depth: { type: 'string', default: '16' },
  },
});

const webCrypto = webcrypto.subtle;
const inline = { sign: webCrypto.sign.bind(webCrypto), verify: webCrypto.verify.bind(webCrypto) };
installInlineSignatures(inline);

const data = Buffer.from(`eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.${'x'.repeat(400)}`);
const cases = [];
for (const [label, algorithm, generate] of [
  ['ES256', { name: 'ECDSA', hash: 'SHA-256' }, { name: 'ECDSA', namedCurve: 'P-256' }],
  ['Ed25519', { name: 'Ed25519' }, { name: 'Ed25519' }],
]) {
  const keys = await webCrypto.generateKey(generate, false, ['sign', 'verify']);
  const signature = await webCrypto.sign(algorithm, keys.privateKey, data);
  cases.push([`${label} sign`, (s) => s.sign(algorithm, keys.privateKey, data)]);
  cases.push([`${label} verify`, async (s) => {
    if (!(await s.verify(algorithm, keys.publicKey, signature, data))) throw new Error('verification failed');
  }]);
}

async function measure(subtle, op) {
  const n = Number(opts.ops);
  const depth = Number(opts.depth);
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < n; i += depth) await Promise.all(Array.from({ length: depth }, () => op(subtle)));
  const used = process.cpuUsage(cpu);
  return { cpu: (used.user + used.system) / n, wall: ((performance.now() - start) * 1000) / n };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [label, op] of cases) {
  await measure(webCrypto, op);
  await measure(inline, op);
  const results = { webCrypto: [], inline: [] };
  for (let i = 0; i < Number(opts.pairs); i += 1) {
    results.webCrypto.push(await measure(webCrypto, op));
    results.inline.push(await measure(inline, op));
  }
  const show = (rs) => `${median(rs.map((r) => r.cpu)).toFixed(1)} µs CPU (${rs.map((r) => r.cpu.toFixed(1)).join(', ')}), ${median(rs.map((r) => r.wall)).toFixed(1)} µs wall`;
  console.log(`${label.padEnd(15)} WebCrypto ${show(results.webCrypto)}; inline ${show(results.inline)}`);
}
