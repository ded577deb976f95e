import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';

import { Interface, Wallet, hashMessage } from 'ethers';

import type { NonceStore } from '../../adapters/types.js';
import { EIP1271_MAGIC_VALUE, createEip1271Verifier } from '../../interactions/siwe/eip1271.js';
import { buildSiweMessage } from '../../interactions/siwe/message.js';
import { SiweVerificationError, verifySiwe } from '../../interactions/siwe/verify.js';

// A stand-in JSON-RPC node on localhost: answers eth_call according to `mode` and records what it was asked.
type Mode = 'magic' | 'other' | 'no-code' | 'revert' | 'revert-message' | 'node-error' | 'node-error-revert-word' | 'http-500' | 'hang' | 'magic-then-junk' | 'identity' | 'magic-long' | 'magic-short';

const abi = new Interface(['function isValidSignature(bytes32 hash, bytes signature) view returns (bytes4)']);
const CONTRACT = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
const DIGEST = hashMessage('hello');
const SIGNATURE = `0x${'ab'.repeat(130)}`;
const word = (bytes4: string) => `${bytes4}${'0'.repeat(56)}`;

let mode: Mode = 'magic';
const calls: { method: string; to: string; hash: string; signature: string }[] = [];
let server: Server;
let url: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const rpc = JSON.parse(body) as { id: number; method: string; params: [{ to: string; data: string }, string] };
      const [hash, signature] = abi.decodeFunctionData('isValidSignature', rpc.params[0].data) as unknown as [string, string];
      calls.push({ method: rpc.method, to: rpc.params[0].to, hash, signature });
      const reply = (payload: object) => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, ...payload }));
      };
      switch (mode) {
        case 'magic': return reply({ result: word(EIP1271_MAGIC_VALUE) });
        case 'other': return reply({ result: word('0xffffffff') });
        // Answers that begin with the magic value and are not its ABI word: what the SHA-256 precompile returns for a
        // ground signature, what the identity precompile returns (its input: the selector is the magic value), a
        // word with more after it, and a bare bytes4.
        case 'magic-then-junk': return reply({ result: `${EIP1271_MAGIC_VALUE}${'98f95d61'.repeat(7)}` });
        case 'identity': return reply({ result: rpc.params[0].data });
        case 'magic-long': return reply({ result: `${word(EIP1271_MAGIC_VALUE)}${'0'.repeat(64)}` });
        case 'magic-short': return reply({ result: EIP1271_MAGIC_VALUE });
        case 'no-code': return reply({ result: '0x' });
        case 'revert': return reply({ error: { code: 3, message: 'execution reverted', data: '0x' } });
        case 'node-error': return reply({ error: { code: -32000, message: 'header not found' } });
        // A revert told only in words (ganache), and node trouble whose words merely contain "revert".
        case 'revert-message': return reply({ error: { code: -32000, message: 'VM Exception while processing transaction: revert' } });
        case 'node-error-revert-word': return reply({ error: { code: -32000, message: 'rate limited; will revert to normal soon' } });
        case 'http-500':
          res.statusCode = 500;
          return res.end('upstream down');
        case 'hang': return undefined;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  calls.length = 0;
});

/** A nonce store holding `nonce`, bound to the client `agent`, usable once. */
function nonceStore(nonce: string): NonceStore {
  const live = new Set([nonce]);
  return {
    issue: async (n) => void live.add(n),
    boundTo: async (n) => (live.has(n) ? 'client:agent' : undefined),
    consume: async (n) => live.delete(n),
    takeAttempt: async () => true,
    claim: async () => {
      throw new Error('not used');
    },
    release: async () => {
      throw new Error('not used');
    },
  };
}

async function contractWalletError(promise: Promise<unknown>): Promise<SiweVerificationError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(SiweVerificationError);
  expect((err as SiweVerificationError).rule).toBe('contract-wallet');
  expect((err as SiweVerificationError).message).not.toContain(SIGNATURE.slice(2, 20));
  return err as SiweVerificationError;
}

describe('createEip1271Verifier', () => {
  test('calls isValidSignature(digest, signature) on the wallet with eth_call; the magic value means valid', async () => {
    mode = 'magic';
    const verify = createEip1271Verifier({ 8453: url }, 2000);
    await expect(verify(8453, CONTRACT, DIGEST, SIGNATURE)).resolves.toBe(true);
    expect(calls).toEqual([{ method: 'eth_call', to: CONTRACT.toLowerCase(), hash: DIGEST, signature: SIGNATURE }]);
  });

  test.each<[Mode]>([['other'], ['no-code'], ['revert'], ['revert-message'], ['magic-then-junk'], ['identity'], ['magic-long'], ['magic-short']])('%s: the contract does not accept the signature → false', async (m) => {
    mode = m;
    const verify = createEip1271Verifier({ 1: url }, 2000);
    await expect(verify(1, CONTRACT, DIGEST, SIGNATURE)).resolves.toBe(false);
  });

  test('a chain without an endpoint is named, and no call is made', async () => {
    const verify = createEip1271Verifier({ 1: url }, 2000);
    const err = await contractWalletError(verify(10, CONTRACT, DIGEST, SIGNATURE));
    expect(err.message).toBe('no JSON-RPC endpoint configured for chain 10; contract wallets cannot be verified on it');
    expect(calls).toEqual([]);
  });

  test.each<[Mode, RegExp]>([
    ['node-error', /header not found/],
    ['node-error-revert-word', /JSON-RPC error -32000: rate limited; will revert to normal soon/],
    ['http-500', /chain 1 failed/],
    ['hang', /did not answer within 300 ms/],
  ])('%s: the signature could not be checked → contract-wallet', async (m, pattern) => {
    mode = m;
    const verify = createEip1271Verifier({ 1: url }, 300);
    const err = await contractWalletError(verify(1, CONTRACT, DIGEST, SIGNATURE));
    expect(err.message).toMatch(pattern);
  });

  test('end to end: a contract wallet signs in through verifySiwe (method eip1271) with the EIP-191 digest of the message', async () => {
    mode = 'magic';
    const nonce = 'ContractWalletNonce0001';
    const nonces = nonceStore(nonce);
    const now = new Date('2025-06-01T12:00:00Z');
    const message = buildSiweMessage({
      domain: 'auth.example.com',
      address: CONTRACT,
      uri: 'https://auth.example.com/',
      chainId: 8453,
      nonce,
      issuedAt: now,
    });
    // An owner key's signature: it does not recover to the contract address, so EIP-1271 decides.
    const signature = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d').signMessageSync(message);
    const out = await verifySiwe(
      { message, signature, nonceBinding: 'client:agent' },
      { domains: ['auth.example.com'], origins: ['https://auth.example.com'], chainIds: [8453], issuedAtWindowSeconds: 300, clockSkewSeconds: 60 },
      { nonces, now: () => now, eip1271: createEip1271Verifier({ 8453: url }, 2000) },
    );
    expect(out).toMatchObject({ address: CONTRACT, sub: `did:pkh:eip155:8453:${CONTRACT}`, method: 'eip1271' });
    expect(calls).toEqual([{ method: 'eth_call', to: CONTRACT.toLowerCase(), hash: hashMessage(message), signature }]);
  });

  test('the zero address and the precompiles are never asked: nobody signs for 0x…0000 to 0x…ffff', async () => {
    mode = 'magic'; // even a node that would answer the magic value
    const now = new Date('2025-06-01T12:00:00Z');
    for (const address of ['0x0000000000000000000000000000000000000000', '0x0000000000000000000000000000000000000002', '0x0000000000000000000000000000000000000004', '0x0000000000000000000000000000000000000100', '0x000000000000000000000000000000000000FFff']) {
      const nonce = `ReservedNonce${address.slice(-4)}0001`;
      const nonces = nonceStore(nonce);
      const message = buildSiweMessage({ domain: 'auth.example.com', address, uri: 'https://auth.example.com/', chainId: 8453, nonce, issuedAt: now });
      const err = await verifySiwe(
        { message, signature: SIGNATURE, nonceBinding: 'client:agent' },
        { domains: ['auth.example.com'], origins: ['https://auth.example.com'], chainIds: [8453], issuedAtWindowSeconds: 300, clockSkewSeconds: 60 },
        { nonces, now: () => now, eip1271: createEip1271Verifier({ 8453: url }, 2000) },
      ).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(SiweVerificationError);
      expect({ address, rule: (err as SiweVerificationError).rule, message: (err as SiweVerificationError).message }).toEqual({
        address, rule: 'signature', message: expect.stringMatching(/is a reserved system address \(the zero address or a precompile\)/),
      });
    }
    expect(calls).toEqual([]);
  });
});
