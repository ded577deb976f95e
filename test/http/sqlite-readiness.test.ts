import { baseConfig, RESOURCE, RS_CLIENT } from '../support/agent-server.js';
import { logLines } from '../support/server.js';
import { serverWithStoreFile } from '../support/store-file.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * On the embedded store, /readyz follows whether the store can be written, not only read: a full disk, a file made
 * immutable or an I/O error failed every write while /readyz said ready, and each failed write marked storage down
 * until the next ping (which wrote nothing) brought it "back", so the log flapped between unreachable and reachable.
 * Every write to the server's own file is refused here by SQLite triggers, as a full disk refuses them, and allowed
 * again to stand for the space coming back.
 */
describe('embedded store: readiness while writes fail', () => {
  const running = serverWithStoreFile(baseConfig());

  const token = () =>
    fetch(`${running.server.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${RS_CLIENT.id}:${RS_CLIENT.secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
  const ready = async () => (await fetch(`${running.server.url}/readyz`)).status;

  test('/readyz answers 503 within the ping interval and stays 503 while no write succeeds; the log says so once; both come back by themselves', async () => {
    expect(await ready()).toBe(200);
    expect((await token()).status).toBe(200);
    const mark = running.server.output().length;
    const tables = ['oidc_records', 'attempts', 'audit_records', 'nonces', 'revoked_tokens'];
    running.db.exec(tables.map((t) => `CREATE TRIGGER refuse_insert_${t} BEFORE INSERT ON ${t} BEGIN SELECT RAISE(ABORT, 'test: database or disk is full'); END;
      CREATE TRIGGER refuse_update_${t} BEFORE UPDATE ON ${t} BEGIN SELECT RAISE(ABORT, 'test: database or disk is full'); END;`).join('\n'));
    try {
      // Requests keep coming, as they would: each fails its write.
      const until = Date.now() + 5_000;
      while ((await ready()) !== 503) {
        if (Date.now() > until) throw new Error('/readyz still answered 200 5 s after every write began to fail');
        expect((await token()).status).toBe(503);
        await sleep(50);
      }
      const body = (await (await fetch(`${running.server.url}/readyz`)).json()) as Record<string, unknown>;
      expect(body).toMatchObject({ status: 'unavailable', storage: 'unreachable' });
      // Three seconds of requests and polls: never ready, never served.
      for (const stop = Date.now() + 3_000; Date.now() < stop; await sleep(100)) {
        expect(await ready()).toBe(503);
        expect((await token()).status).toBe(503);
      }
      const lines = logLines(running.server.output().slice(mark));
      expect(lines.filter((l) => l.msg === 'storage reachable again')).toEqual([]);
      expect(lines.filter((l) => l.msg === 'storage unreachable').length).toBe(1);
    } finally {
      running.db.exec(tables.map((t) => `DROP TRIGGER refuse_insert_${t}; DROP TRIGGER refuse_update_${t};`).join('\n'));
    }
    const until = Date.now() + 5_000;
    while ((await ready()) !== 200) {
      if (Date.now() > until) throw new Error('/readyz did not come back within 5 s of writes succeeding again');
      await sleep(100);
    }
    expect((await token()).status).toBe(200);
  });
});
