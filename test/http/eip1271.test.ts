import { Contract, Signature, Wallet, hashMessage, toBeHex } from 'ethers';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import * as oidc from 'openid-client';

import { createEip1271Verifier, EIP1271_MAGIC_VALUE } from '../../interactions/siwe/eip1271.js';
import type { SiweMessageFields } from '../../interactions/siwe/message.js';
import { baseConfig, insecure, introspect, RESOURCE, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { compileOwnerWallet, deployOwnerWallet, startEvm } from '../support/evm.js';
import { fetchNonce, signedSiwe } from '../support/wallet.js';
import type { Evm } from '../support/evm.js';

const GRANT = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
/** The contract wallet's owner key (an EOA). */
const ownerKey = new Wallet('0x3b1c6f0e9a52d4c8e7f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7');
/** A key that is not the owner. */
const strangerKey = new Wallet('0x5d2e8a9b0c1f3e4d6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b');
/** secp256k1 group order. */
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

describe('EIP-1271 contract wallets on a local EVM (ganache, OwnerWallet.sol compiled by solc-js)', () => {
  let evm: Evm;
  let contractWallet: string;

  beforeAll(async () => {
    evm = await startEvm();
    contractWallet = await deployOwnerWallet(evm, ownerKey.address);
  });
  afterAll(async () => {
    await evm?.stop();
  });

  describe('the contract itself and createEip1271Verifier, against the chain', () => {
    const message = 'agentauth EIP-1271 test message';
    const digest = hashMessage(message);

    test('the deployed contract names its owner and answers the magic value only for the owner', async () => {
      const contract = new Contract(contractWallet, compileOwnerWallet().abi, evm.provider);
      expect(await contract.getFunction('owner')()).toBe(ownerKey.address);
      const isValid = contract.getFunction('isValidSignature');
      expect(await isValid(digest, await ownerKey.signMessage(message))).toBe(EIP1271_MAGIC_VALUE);
      expect(await isValid(digest, await strangerKey.signMessage(message))).toBe('0xffffffff');
    });

    test('true for the owner’s signature over hashMessage(message)', async () => {
      const verify = createEip1271Verifier({ [evm.chainId]: evm.rpcUrl }, 5000);
      await expect(verify(evm.chainId, contractWallet, digest, await ownerKey.signMessage(message))).resolves.toBe(true);
    });

    test('false for the chain\'s precompiles, whose answers begin with the magic value without being it', async () => {
      const verify = createEip1271Verifier({ [evm.chainId]: evm.rpcUrl }, 5000);
      // The identity precompile (0x…04) returns its input, which begins with the function selector: the magic value.
      // (The SHA-256 precompile's answer begins with it only for a ground signature: test/unit/siwe-eip1271.test.ts.)
      const identity = '0x0000000000000000000000000000000000000004';
      expect((await evm.provider.call({ to: identity, data: '0x1626ba7e' })).toLowerCase()).toBe(EIP1271_MAGIC_VALUE);
      await expect(verify(evm.chainId, identity, digest, await strangerKey.signMessage(message))).resolves.toBe(false);
      // SHA-256 (0x…02) and ecrecover (0x…01) answer a word of their own.
      for (const precompile of ['0x0000000000000000000000000000000000000002', '0x0000000000000000000000000000000000000001']) {
        await expect(verify(evm.chainId, precompile, digest, await strangerKey.signMessage(message))).resolves.toBe(false);
      }
    });

    test('false for a signature by another key, of the wrong length, or malleated (high s)', async () => {
      const verify = createEip1271Verifier({ [evm.chainId]: evm.rpcUrl }, 5000);
      await expect(verify(evm.chainId, contractWallet, digest, await strangerKey.signMessage(message))).resolves.toBe(false);
      // The owner's signature, but over another digest.
      await expect(verify(evm.chainId, contractWallet, hashMessage('another message'), await ownerKey.signMessage(message))).resolves.toBe(false);

      const good = Signature.from(await ownerKey.signMessage(message));
      await expect(verify(evm.chainId, contractWallet, digest, good.serialized.slice(0, -2))).resolves.toBe(false); // 64 bytes
      // The same point with s' = n - s and the other parity: ecrecover yields the owner, the contract must refuse it.
      const highS = `0x${good.r.slice(2)}${toBeHex(N - BigInt(good.s), 32).slice(2)}${good.v === 27 ? '1c' : '1b'}`;
      await expect(verify(evm.chainId, contractWallet, digest, highS)).resolves.toBe(false);
    });

    test('false for an address with no code', async () => {
      const verify = createEip1271Verifier({ [evm.chainId]: evm.rpcUrl }, 5000);
      expect(await evm.provider.getCode(strangerKey.address)).toBe('0x');
      await expect(verify(evm.chainId, strangerKey.address, digest, await strangerKey.signMessage(message))).resolves.toBe(false);
    });
  });

  describe('headless wallet-signature grant as the contract wallet', () => {
    let as: AgentServer;
    let issuer: string;
    let client: oidc.Configuration;

    beforeAll(async () => {
      as = await startAgentServer(baseConfig({ wallet: { chains: { '1': {}, [String(evm.chainId)]: { rpcUrl: evm.rpcUrl } } } }));
      issuer = as.server.url;
      client = await oidc.dynamicClientRegistration(
        new URL(issuer),
        { grant_types: [GRANT, 'refresh_token'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'none', scope: 'read write' },
        oidc.None(),
        insecure,
      );
    });
    afterAll(async () => {
      await as?.server.stop();
    });

    async function nonce(): Promise<string> {
      return fetchNonce(issuer, client.clientMetadata().client_id);
    }

    /** An EIP-4361 message for `address` (the contract wallet by default, on the local chain), signed by `signer`. */
    const signed = async (signer: Wallet, change: Partial<SiweMessageFields> = {}) =>
      signedSiwe(issuer, signer, { address: contractWallet, chainId: evm.chainId, nonce: await nonce(), ...change });

    test('the owner’s signature signs in as the contract wallet: a DPoP-bound token whose sub is the contract’s did:pkh', async () => {
      const dpop = oidc.getDPoPHandle(client, await oidc.randomDPoPKeyPair('ES256'));
      const tokens = await oidc.genericGrantRequest(client, GRANT, { ...(await signed(ownerKey)), resource: RESOURCE, scope: 'read' }, { DPoP: dpop });
      expect(tokens.token_type).toBe('dpop');
      expect(tokens.scope).toBe('read');
      const sub = `did:pkh:eip155:${evm.chainId}:${contractWallet}`;
      const { payload } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer, audience: RESOURCE, typ: 'at+jwt' });
      expect(payload.sub).toBe(sub);
      expect(payload.cnf).toBeDefined();
      expect((await introspect(issuer, tokens.access_token)).sub).toBe(sub);
      expect(as.server.output()).toMatch(new RegExp(`"event":"login.succeeded","sub":"${sub}","method":"eip1271"`));
    });

    test('the owner key still signs in as itself (EIP-191) on the same chain, with its own sub', async () => {
      const tokens = await oidc.genericGrantRequest(client, GRANT, {
        ...(await signed(ownerKey, { address: ownerKey.address })),
        resource: RESOURCE,
        scope: 'read',
      });
      expect((await introspect(issuer, tokens.access_token)).sub).toBe(`did:pkh:eip155:${evm.chainId}:${ownerKey.address}`);
    });

    test('a signature by a key that is not the owner is refused: invalid_grant, signature rule', async () => {
      const attempt = oidc.genericGrantRequest(client, GRANT, { ...(await signed(strangerKey)), resource: RESOURCE, scope: 'read' });
      await expect(attempt).rejects.toMatchObject({
        error: 'invalid_grant',
        error_description: expect.stringMatching(/^signature: /),
      });
      await expect(attempt).rejects.toMatchObject({
        error_description: expect.stringContaining(
          `(it was made by ${strangerKey.address}), and the contract wallet at that address on chain ${evm.chainId} did not accept it (EIP-1271)`,
        ),
      });
      expect(as.server.output()).toMatch(/"event":"login.failed","rule":"signature"/);
    });

    test('a contract wallet on a chain without a JSON-RPC endpoint (chain 1) is refused, saying it cannot be verified there', async () => {
      const attempt = oidc.genericGrantRequest(client, GRANT, { ...(await signed(ownerKey, { chainId: 1 })), resource: RESOURCE, scope: 'read' });
      await expect(attempt).rejects.toMatchObject({
        error: 'invalid_grant',
        error_description: expect.stringMatching(/^signature: /),
      });
      await expect(attempt).rejects.toMatchObject({
        error_description: expect.stringContaining(
          `if ${contractWallet} is a contract wallet, it cannot be verified on chain 1 because no JSON-RPC endpoint is configured for it (wallet.chains.1.rpcUrl)`,
        ),
      });
    });
  });
});
