import { rmSync } from 'node:fs';
import { join } from 'node:path';

import { Wallet } from 'ethers';

import { baseConfig } from '../support/agent-server.js';
import { guideBlock, guideDir, runGuideScript, typeProblems } from '../support/guide.js';
import { startConfigured } from '../support/server.js';
import type { RunningServer } from '../support/server.js';

/**
 * docs/wallet-sign-in.md's complete example (ethers v6 and openid-client v6), taken from the guide as written:
 * type-checked with the project's strict settings, then run as the guide says, `node agent.ts` on Node 22, against a
 * live agentauth. What it prints must be what the guide's comments say it prints.
 */

const WALLET = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');

let as: RunningServer;
let dir: string;

beforeAll(async () => {
  dir = guideDir('wallet-guide', { 'agent.ts': guideBlock('wallet-sign-in.md', '### Complete example: ethers v6 and openid-client v6') });
  ({ server: as } = await startConfigured(baseConfig()));
});

afterAll(async () => {
  await as?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('the guide\'s script type-checks under the project\'s strict settings', () => {
  expect(typeProblems([join(dir, 'agent.ts')])).toEqual([]);
});

test('`node agent.ts` registers, signs in with the wallet and refreshes, printing what the guide says', async () => {
  const stdout = await runGuideScript(join(dir, 'agent.ts'), { AGENTAUTH_ISSUER: as.url, AGENT_WALLET_KEY: WALLET.privateKey });
  const lines = stdout.trim().split('\n');
  expect(lines).toEqual([
    expect.stringMatching(/^registered [A-Za-z0-9_-]+$/),
    'dpop 300 read', // the guide: 'dpop' 300 'read'
    `did:pkh:eip155:1:${WALLET.address}`, // the guide: did:pkh:eip155:1:0x...
    'refreshed dpop 300 string',
  ]);
});
