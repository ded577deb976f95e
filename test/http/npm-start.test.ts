/**
 * `npm start`, the documented way to run a checkout, stops the way `agentauth start` does: SIGTERM or SIGINT sent to
 * the npm process alone (as a supervisor or `docker stop` sends it to a container's main process) reaches the
 * server, which drains its in-flight request and exits 0, and npm exits 0 after it.
 */
import { join } from 'node:path';

import { logLines, npmCli, startServer, tempDir, writeConfig } from '../support/server.js';
import { tokenRequestAcrossSignal } from '../support/drain.js';

const SECRET = 'npm-start-client-secret-0123456789abcdef';
const CONFIG = {
  resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
  clients: [{ client_id: 'svc', client_secret: SECRET }],
};

const NPM_CLI = npmCli();

describe.each(['SIGTERM', 'SIGINT'] as const)('%s to `npm start`', (signal) => {
  test('reaches the server: the in-flight request completes, the server stops, npm exits 0', async () => {
    const dir = tempDir();
    const server = await startServer(
      { AGENTAUTH_CONFIG: writeConfig(dir, CONFIG), AGENTAUTH_DATA_DIR: join(dir, 'data') },
      undefined,
      { entry: [NPM_CLI, 'start', '--silent'] },
    );
    const serverPid = logLines(server.output()).find((l) => l.msg === 'agentauth listening')?.pid as number;
    // npm runs the server as its child process, not in its own process.
    expect(serverPid).toEqual(expect.any(Number));
    expect(serverPid).not.toBe(server.child.pid);

    let stoppedBeforeAnswer = false;
    // A request in flight: headers sent, body only half sent when the signal arrives, sent to npm only (not to its
    // process group).
    const inFlight = tokenRequestAcrossSignal(server.url, { id: 'svc', secret: SECRET }, () => server.child.kill(signal), () => {
      stoppedBeforeAnswer = server.output().includes('"stopped"');
    });
    const done = await inFlight;
    expect(done.status).toBe(200);
    expect(typeof done.json.access_token).toBe('string');
    expect(stoppedBeforeAnswer).toBe(false);

    expect(await server.exited).toBe(0);
    const lines = logLines(server.output());
    expect(lines.find((l) => l.msg === 'signal received')).toMatchObject({ signal, pid: serverPid });
    expect(lines.at(-1)).toMatchObject({ msg: 'stopped', pid: serverPid });
    // The server process is gone (not left listening as an orphan) and the port is free.
    expect(() => process.kill(serverPid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    await expect(fetch(`${server.url}/healthz`)).rejects.toThrow();
  });
});
