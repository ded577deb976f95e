import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

import { Wallet } from 'ethers';

import { baseConfig } from '../support/agent-server.js';
import { guideBlock, guideDir, runGuideScript, typeProblems } from '../support/guide.js';
import { logLines, runCli, startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { authorizeWithWallet } from '../support/user-agent.js';

/**
 * docs/agents.md's complete example with openid-client v6, and the confidential client that follows it, taken from
 * the guide as written: type-checked with the project's strict settings, then run with `node agent.ts` against a
 * live agentauth. The test plays the person (it follows the printed authorization URL through the login and consent
 * pages with a wallet, then delivers the callback to the script's loopback listener). The example's API,
 * https://api.example.com, is not agentauth's: a stub loaded into the script's process answers it, after checking
 * that the call came with `Authorization: DPoP` and a proof.
 */

const REDIRECT_URI = 'http://127.0.0.1:8765/callback'; // the guide's
const WALLET = new Wallet('0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a');

const API_STUB = `
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  if (!url.startsWith('https://api.example.com/')) return realFetch(input, init);
  const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
  const bound = /^DPoP [A-Za-z0-9._~+/-]+=*$/.test(headers.get('authorization') ?? '') && (headers.get('dpop') ?? '').split('.').length === 3;
  return new Response(bound ? '{"things":[]}' : '', { status: bound ? 200 : 401, headers: { 'content-type': 'application/json' } });
};
`;

let as: RunningServer;
let env: Record<string, string>;
let dir: string;
let script: ChildProcess | undefined;

beforeAll(async () => {
  const source = `${guideBlock('agents.md', '## Complete example with openid-client v6')}\n${guideBlock('agents.md', 'For a confidential client with client credentials')}`;
  dir = guideDir('agents-guide', { 'agent.ts': source, 'api-stub.mjs': API_STUB });
  ({ server: as, env } = await startConfigured(baseConfig({ registration: { mode: 'token' } })));
});

afterAll(async () => {
  script?.kill();
  await as?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('the guide\'s example type-checks under the project\'s strict settings', () => {
  expect(typeProblems([join(dir, 'agent.ts')])).toEqual([]);
});

test('`node agent.ts` registers, signs the person in, calls the API, refreshes, introspects, revokes, and gets a client credentials token', async () => {
  const iat = await runCli(['clients', 'iat', 'create'], env);
  expect(iat.code).toBe(0);
  script = spawn(process.execPath, ['--import', join(dir, 'api-stub.mjs'), join(dir, 'agent.ts')], {
    env: { PATH: process.env.PATH, AGENTAUTH_ISSUER: as.url, AGENTAUTH_IAT: iat.stdout.trim() },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  script.stdout!.on('data', (d: Buffer) => (stdout += d));
  script.stderr!.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => script!.once('exit', resolve));

  // The person: opens the printed URL, signs in with the wallet and approves.
  const deadline = Date.now() + 20_000;
  let printed: RegExpExecArray | null = null;
  while (!(printed = /Open this URL in a browser with your wallet:\n(\S+)\n/.exec(stdout))) {
    if (script.exitCode !== null || Date.now() > deadline) throw new Error(`no authorization URL: ${stdout}${stderr}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  const { callback } = await authorizeWithWallet(new URL(printed[1]!), REDIRECT_URI, { wallet: WALLET });
  expect((await fetch(callback)).status).toBe(200);

  const code = await exited;
  if (code !== 0) throw new Error(`agent.ts exited with ${code}:\n${stdout}\n${stderr}`);
  const lines = stdout.trim().split('\n');
  expect(lines[0]).toMatch(/^registered [A-Za-z0-9_-]+ tier standard$/);
  expect(lines).toContain('dpop 300 read'); // the guide: 'dpop' 300 'read'
  expect(lines).toContain('API answered 200');
  expect(stdout).toMatch(/active: true,[\s\S]*token_type: 'DPoP'/); // the guide: { active: true, ..., token_type: 'DPoP' }
  expect(lines.at(-1)).toBe('dpop 300'); // the guide: 'dpop' 300
});

describe('the guide\'s DPoP exchange without a library (jose), for a client whose tier requires server nonces', () => {
  const STRICT_AGENT = { id: 'strict-agent', secret: 'strict-agent-secret-0123456789abcdefghij' };
  let strict: RunningServer;
  let jsDir: string;

  beforeAll(async () => {
    // The guide's code as written, then one line of the test's own that shows what it ended with.
    const source = `${guideBlock('agents.md', 'The same exchange without a library')}\nconsole.log(JSON.stringify({ status: res.status, tokens }));\n`;
    jsDir = guideDir('agents-guide-dpop', { 'dpop.ts': source });
    ({ server: strict } = await startConfigured(
      baseConfig({ clients: [{ client_id: STRICT_AGENT.id, client_secret: STRICT_AGENT.secret, grant_types: ['client_credentials'], tier: 'strict' }] }),
    ));
  });

  afterAll(async () => {
    await strict?.stop();
    rmSync(jsDir, { recursive: true, force: true });
  });

  test('it type-checks under the project\'s strict settings', () => {
    expect(typeProblems([join(jsDir, 'dpop.ts')])).toEqual([]);
  });

  test('its first request is answered use_dpop_nonce, and its one retry with the server\'s nonce gets a DPoP-bound token', async () => {
    const stdout = await runGuideScript(join(jsDir, 'dpop.ts'), { AGENTAUTH_ISSUER: strict.url, CLIENT_ID: STRICT_AGENT.id, CLIENT_SECRET: STRICT_AGENT.secret });
    const { status, tokens } = JSON.parse(stdout.trim().split('\n').at(-1)!) as { status: number; tokens: Record<string, unknown> };
    expect(status).toBe(200);
    expect(tokens).toMatchObject({ token_type: 'DPoP', scope: 'read', access_token: expect.any(String) });
    const nonces = logLines(strict.output()).filter((l) => l.event === 'grant.error' && l.error === 'use_dpop_nonce');
    expect(nonces).toHaveLength(1);
  });
});
