import { Wallet } from 'ethers';

import { baseConfig } from '../support/agent-server.js';
import { startFerretdb } from '../support/ferretdb.js';
import { throughPause } from '../support/pause.js';
import type { FerretdbProcess } from '../support/ferretdb.js';
import { publicRefreshed, publicTier, signInPublic } from '../support/public-client.js';
import { newKek, startServer, tempDir, uniqueDbName, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const wallet = new Wallet('0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6');
const CHAINS = 12;
const GRACE = 1;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Refresh chains running while the database pauses for longer than the grace window: a rotation sent just before the
 * pause is answered 503 when storage.timeoutMs runs out and applied by the database when it resumes, so the token is
 * used up and nobody received its successor. Each client retries the same token after every 503, as told. Before,
 * most chains ended there: the retry came after the window and revoked the grant as a reuse (11 of 12 in a run of
 * this test without the change; an operator pass saw the same on a 10 s pause). Now no grant is revoked, and no chain
 * ends: MongoDB's rotation stores the successor before the consume whose marker records it, so a pause that cuts it
 * leaves the token unused or used with its successor recorded. When it consumed first, a cut between the consume and
 * the successor's insert ended the chain with invalid_grant "retry" (0 to 5 of 12 per run).
 */
describe('refresh chains through a database pause longer than the grace (own FerretDB)', () => {
  let db: FerretdbProcess;
  let server: RunningServer;

  beforeAll(async () => {
    db = await startFerretdb();
    const config = writeConfig(tempDir(), { ...baseConfig({ registration: { quota: { max: 1000 } }, tiers: { standard: publicTier(GRACE) } }), storage: { timeoutMs: 1000 } });
    server = await startServer({ AGENTAUTH_CONFIG: config, MONGODB_URI: db.uri, MONGODB_DB: uniqueDbName('refreshpause'), AGENTAUTH_KEK: newKek() });
  });
  afterAll(async () => {
    await server?.stop();
    await db?.stop();
  });

  test(`${CHAINS} chains refreshing through a 6 s pause: none is revoked as a reuse, none ends`, async () => {
    const clients: Array<Awaited<ReturnType<typeof signInPublic>>> = [];
    for (let i = 0; i < CHAINS; i += 1) clients.push(await signInPublic(server.url, wallet));
    let stop = false;
    const ended: Array<{ chain: number; status: number; body: Record<string, unknown> }> = [];
    let unavailable = 0;
    const chain = async (i: number) => {
      let token = clients[i]!.tokens.refresh_token!;
      while (!stop) {
        const res = await publicRefreshed(server.url, clients[i]!.clientId, token);
        if (res.status === 200) token = res.body.refresh_token as string;
        else if (res.status === 503) {
          unavailable += 1;
          await sleep(500);
        } else {
          ended.push({ chain: i, ...res });
          return;
        }
      }
      // The chain's token still works once storage is back. A 503 here is retried as in the loop: a single slow
      // write on a loaded host (1000 ms is this server's timeoutMs) marks storage down until the next ping.
      let last = await publicRefreshed(server.url, clients[i]!.clientId, token);
      for (let retries = 0; last.status === 503 && retries < 20; retries += 1) {
        await sleep(500);
        last = await publicRefreshed(server.url, clients[i]!.clientId, token);
      }
      if (last.status !== 200) ended.push({ chain: i, ...last });
    };
    // The 6 s after the pause are long enough for every chain's retries to come back past the window.
    await throughPause(db, clients.map((_, i) => chain(i)), () => { stop = true; });
    expect(unavailable).toBeGreaterThan(0);
    // Neither "refresh token already used" (a reuse, which revokes the grant) nor a token used up with no successor.
    expect(ended).toEqual([]);
  });
});
