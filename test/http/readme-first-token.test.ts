/**
 * The README's "A first token", followed as a new user would: its `agentauth.json` as written (the placeholder secret
 * replaced, as the README says, by `openssl rand -hex 32`'s kind of value), `AGENTAUTH_CONFIG=agentauth.json npm start`
 * in the checkout, then its curl line run with bash and the real curl. The answer must be the one the README shows,
 * the token's `aud` the one it names, verifiable against the `/jwks` it names; and `resource` may be left out while one
 * resource server is configured, as it says.
 *
 * What differs from the page, and why: the port (the README's 3000 may be taken on a test machine: PORT is set and
 * `localhost:3000` in the curl line becomes that port) and the data directory (AGENTAUTH_DATA_DIR, a fresh one, not
 * the checkout's `.agentauth`).
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

import { createRemoteJWKSet, jwtVerify } from 'jose';

import { freePort } from '../support/ferretdb.js';
import { GUIDE_PATH, guideFencedBlock, guideShellBlock, replaceExactly, runShell } from '../support/guide.js';
import { onPath } from '../support/provision.js';
import { npmCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

const README = '../README.md'; // guide paths are relative to docs/
const MARKER = '## A first token';
const PLACEHOLDER = 'replace-with-32-or-more-random-characters';

const [startLine, curlLine] = guideShellBlock(README, MARKER).trim().split('\n');
const secret = randomBytes(32).toString('hex');
const config = JSON.parse(replaceExactly(guideFencedBlock(README, MARKER, ['json']), PLACEHOLDER, secret, 'the README\'s agentauth.json')) as { clients: Array<{ client_id: string; client_secret: string }> };

let server: RunningServer;
let url: string;
let dir: string;

/** The README's curl line, on this server's port, with SECRET replaced as the README says (by `password`); what it prints. */
async function curl(line: string, password = secret): Promise<string> {
  return (await runShell(replaceExactly(replaceExactly(line, 'SECRET', password, 'the README\'s curl line'), 'http://localhost:3000', url, 'the README\'s curl line'), { PATH: GUIDE_PATH })).stdout;
}

beforeAll(async () => {
  if (!onPath('curl', GUIDE_PATH)) throw new Error("curl is not on PATH: install it (e.g. `sudo apt-get install curl`) to run the README's first token");
  // The README's page, read before anything runs: the commands this test runs are the ones it shows.
  expect(startLine).toBe('AGENTAUTH_CONFIG=agentauth.json npm start');
  expect(curlLine).toBe('curl -u svc-1:SECRET -d grant_type=client_credentials -d resource=https://api.example.com -d scope=read http://localhost:3000/token');
  expect(config.clients[0]!.client_secret).toBe(secret);
  dir = tempDir();
  const port = await freePort();
  url = `http://localhost:${port}`;
  server = await startServer({ AGENTAUTH_CONFIG: writeConfig(dir, config), AGENTAUTH_DATA_DIR: join(dir, 'data') }, port, { entry: [npmCli(), 'start', '--silent'] });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the curl line answers what the README shows, a token for https://api.example.com that verifies against /jwks', async () => {
  const answer = JSON.parse(await curl(curlLine!)) as Record<string, unknown>;
  // {"access_token":"eyJ...","expires_in":300,"scope":"read","token_type":"Bearer"}
  expect(Object.keys(answer).sort()).toEqual(['access_token', 'expires_in', 'scope', 'token_type']);
  expect(answer).toMatchObject({ expires_in: 300, scope: 'read', token_type: 'Bearer' });
  expect(String(answer.access_token)).toMatch(/^eyJ/);
  const { payload } = await jwtVerify(String(answer.access_token), createRemoteJWKSet(new URL(`${url}/jwks`)), { audience: 'https://api.example.com' });
  expect(payload.client_id).toBe('svc-1');
});

test('with its one resource server, resource may be left out; a wrong secret is refused', async () => {
  const withoutResource = JSON.parse(await curl(replaceExactly(curlLine!, ' -d resource=https://api.example.com', '', 'the README\'s curl line'))) as Record<string, unknown>;
  expect(withoutResource).toMatchObject({ token_type: 'Bearer', scope: 'read' });
  const { payload } = await jwtVerify(String(withoutResource.access_token), createRemoteJWKSet(new URL(`${url}/jwks`)), { audience: 'https://api.example.com' });
  expect(payload.aud).toBe('https://api.example.com');
  const refused = JSON.parse(await curl(curlLine!, 'not-the-secret')) as Record<string, unknown>;
  expect(refused.error).toBe('invalid_client');
});
