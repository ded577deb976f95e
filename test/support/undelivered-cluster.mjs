// A node:cluster of the primary's remembered rotations (server/undelivered-rotations.ts), as `start --workers 2` runs
// them, without a server: worker 1 remembers a credential, worker 2 asks for it. The primary prints, as JSON lines,
// every IPC message it saw and each worker's answers. With SILENT_PRIMARY=1 the primary never answers.
import cluster from 'node:cluster';

import { serveUndeliveredRotations, undeliveredRotations } from '../../dist/server/undelivered-rotations.js';

const CREDENTIAL = 'refresh-token-value-that-must-not-leave-the-worker';

if (cluster.isPrimary) {
  if (process.env.SILENT_PRIMARY !== '1') serveUndeliveredRotations();
  const answers = {};
  cluster.on('message', (worker, message) => {
    if (message && message.answers) {
      answers[worker.id] = message.answers;
      if (worker.id === 1) cluster.fork();
      else {
        console.log(JSON.stringify({ answers }));
        for (const w of Object.values(cluster.workers)) w.kill();
      }
      return;
    }
    console.log(JSON.stringify({ seen: message }));
    // Malformed asks are ignored (no answer, no crash).
  });
  cluster.fork();
} else {
  const refresh = undeliveredRotations('refresh_token');
  const registration = undeliveredRotations('registration_access_token');
  let answers;
  if (cluster.worker.id === 1) {
    const started = Date.now();
    await refresh.add(CREDENTIAL);
    // A malformed ask (not ours to answer) does not stop the primary.
    process.send({ type: 'agentauth:undelivered', id: 'x', kind: 'refresh_token', op: 'add', key: 'k' });
    answers = { added: true, addMs: Date.now() - started, hasHere: await refresh.has(CREDENTIAL) };
  } else {
    answers = {
      otherKind: await registration.has(CREDENTIAL),
      has: await refresh.has(CREDENTIAL),
      take: await refresh.take(CREDENTIAL),
      takeAgain: await refresh.take(CREDENTIAL),
      unknown: await refresh.has('another-credential'),
    };
  }
  process.send({ answers });
}
