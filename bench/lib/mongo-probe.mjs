// Loaded into agentauth's server processes on the MongoDB-wire runs (NODE_OPTIONS=--import this file): counts the
// MongoDB driver operations each process makes, per collection and operation, and the duplicate-key answers among
// them. No agentauth code is changed; the counts are written to $BENCH_MONGO_PROBE_DIR/ops-<pid>.json whenever the
// process receives SIGUSR2 (the bench asks before and after the measured window) and when it exits.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const OPS = ['insertOne', 'insertMany', 'findOne', 'find', 'updateOne', 'updateMany', 'replaceOne', 'deleteOne', 'deleteMany', 'findOneAndUpdate', 'findOneAndDelete', 'countDocuments', 'aggregate'];

/**
 * Wraps the driver's Collection methods of this process and returns the counts they keep: `<collection>.<op>` per
 * call, and `<collection>.<op>!duplicate` / `!error` per failed one. `skip(collectionName)` leaves a collection out.
 * Also used in-process by bench/limit-burst.mjs.
 */
export function countDriverOps({ skip = () => false } = {}) {
  const require = createRequire(import.meta.url);
  const { Collection } = require('mongodb');
  const counts = {};
  const bump = (key) => {
    counts[key] = (counts[key] ?? 0) + 1;
  };
  // findOne calls find, insertMany calls bulkWrite, ...: count only the outermost call (inner ones are synchronous).
  let depth = 0;
  for (const op of [...OPS, 'bulkWrite']) {
    const original = Collection.prototype[op];
    if (typeof original !== 'function') continue;
    Collection.prototype[op] = function probed(...args) {
      if (depth > 0 || skip(this.collectionName)) return original.apply(this, args);
      const key = `${this.collectionName}.${op}`;
      bump(key);
      let out;
      depth += 1;
      try {
        out = original.apply(this, args);
      } finally {
        depth -= 1;
      }
      if (out && typeof out.then === 'function') {
        out.then(undefined, (err) => bump(`${key}!${err?.code === 11000 ? 'duplicate' : 'error'}`));
      }
      return out;
    };
  }
  return counts;
}

const dir = process.env.BENCH_MONGO_PROBE_DIR;
if (dir) {
  const counts = countDriverOps();
  const dump = () => writeFileSync(join(dir, `ops-${process.pid}.json`), JSON.stringify({ pid: process.pid, at: Date.now(), counts }));
  process.on('SIGUSR2', dump);
  process.on('exit', dump);
}
