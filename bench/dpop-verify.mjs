#!/usr/bin/env node
// DPoP proof verification in isolation, as oidc-provider's validateDpop makes it: jose's
// jwtVerify(proof, EmbeddedJWK, { algorithms, typ: 'dpop+jwt' }) and the key's RFC 7638 thumbprint, for fresh ES256
// proofs signed by `--keys` agent keys in turn. Prints this process's CPU per proof (process.cpuUsage: every thread).
// With --cache, agentauth's public key import cache (dist/server/crypto/public-key-import-cache.js; `npm run build`
// first) is installed as `agentauth start` installs it. Alternate the two in separate processes to compare:
//
//   for i in 1 2 3 4 5; do node bench/dpop-verify.mjs; node bench/dpop-verify.mjs --cache; done
import { parseArgs } from 'node:util';

import { calculateJwkThumbprint, EmbeddedJWK, jwtVerify } from 'jose';

import { dpopKeys, dpopProofs } from './lib/fixtures.mjs';

const { values: opts } = parseArgs({
  options: { cache: { type: 'boolean', default: false }, keys: { type: 'string', default: '32' }, proofs: { type: 'string', default: '4000' } },
});
const count = Number(opts.proofs);
let cache;
if (opts.cache) {
  const { installPublicKeyImportCache } = await import('../dist/server/crypto/public-key-import-cache.js');
  cache = installPublicKeyImportCache();
}

const keys = dpopKeys(Number(opts.keys));
const verify = async (proof) => {
  const { protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { algorithms: ['ES256', 'EdDSA', 'Ed25519'], typ: 'dpop+jwt' });
  await calculateJwkThumbprint(protectedHeader.jwk);
};
for (const p of dpopProofs(keys, 'https://as.example/token', 300)) await verify(p); // warm-up: JIT, every key seen once
const proofs = dpopProofs(keys, 'https://as.example/token', count);
const start = process.cpuUsage();
const t0 = performance.now();
for (const p of proofs) await verify(p);
const cpu = process.cpuUsage(start);
const wall = performance.now() - t0;
console.log(
  `${opts.cache ? 'with cache   ' : 'without cache'}: CPU ${((cpu.user + cpu.system) / count).toFixed(0)} µs/proof, wall ${((wall * 1000) / count).toFixed(0)} µs/proof` +
    ` (${opts.keys} keys${cache ? `; cache ${cache.hits} hits, ${cache.misses} misses` : ''})`,
);
