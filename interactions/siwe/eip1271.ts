import type { Interface, JsonRpcProvider } from 'ethers';

import { SiweVerificationError } from './errors.js';
import type { Eip1271Verifier } from './verify.js';

/** `bytes4(keccak256("isValidSignature(bytes32,bytes)"))`, returned by a contract that accepts the signature. */
export const EIP1271_MAGIC_VALUE = '0x1626ba7e';
/**
 * The whole answer of a contract that accepts: the ABI encoding of the `bytes4` magic value, one 32-byte word padded
 * with zeros. Nothing else counts. ethers' ABI decoder, used here before, read the first four bytes of any answer of
 * whole words, so a contract whose answer merely began with the magic value was taken as accepting: the SHA-256
 * precompile (0x…02), on every chain, for a signature ground (about 2^32 hashes) to make its hash begin so, which let
 * anyone sign in as that address.
 */
export const EIP1271_ACCEPTED = `${EIP1271_MAGIC_VALUE}${'00'.repeat(28)}`;

type Ethers = typeof import('ethers');

/** ethers, loaded on the first contract-wallet check (≈ 15 MB that processes never asked to verify one do not pay). */
let ethersModule: Promise<{ ethers: Ethers; abi: Interface }> | undefined;
function loadEthers(): Promise<{ ethers: Ethers; abi: Interface }> {
  ethersModule ??= import('ethers').then((ethers) => ({
    ethers,
    abi: new ethers.Interface(['function isValidSignature(bytes32 hash, bytes signature) view returns (bytes4)']),
  }));
  return ethersModule;
}

/**
 * An EIP-1271 verifier that asks the contract wallet over JSON-RPC (`eth_call` of `isValidSignature`), one endpoint
 * per chain id. The signature is valid only if the call returns the magic value; a revert, an account without code
 * or any other answer means "not valid". An unconfigured chain, a transport or node error, or no answer within
 * `timeoutMs` throws SiweVerificationError('contract-wallet'): the signature could not be checked.
 */
export function createEip1271Verifier(endpoints: Record<number, string>, timeoutMs: number): Eip1271Verifier {
  const providers = new Map<number, JsonRpcProvider>();
  const providerFor = ({ FetchRequest, JsonRpcProvider: Provider }: Ethers, chainId: number): JsonRpcProvider => {
    let provider = providers.get(chainId);
    if (!provider) {
      const url = Object.hasOwn(endpoints, chainId) ? endpoints[chainId] : undefined;
      if (url === undefined) {
        throw new SiweVerificationError(
          'contract-wallet',
          `no JSON-RPC endpoint configured for chain ${chainId}; contract wallets cannot be verified on it`,
        );
      }
      const request = new FetchRequest(url);
      request.timeout = timeoutMs;
      // staticNetwork: never probe eth_chainId; batchMaxCount 1: send each call at once, unbatched.
      provider = new Provider(request, chainId, { staticNetwork: true, batchMaxCount: 1 });
      providers.set(chainId, provider);
    }
    return provider;
  };

  return async (chainId, address, digest, signature) => {
    const { ethers, abi: ABI } = await loadEthers();
    const provider = providerFor(ethers, chainId);
    const data = ABI.encodeFunctionData('isValidSignature', [digest, signature]);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new SiweVerificationError('contract-wallet', `the JSON-RPC endpoint for chain ${chainId} did not answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    let result: string;
    try {
      result = await Promise.race([provider.call({ to: address, data }), timeout]);
    } catch (err) {
      if (err instanceof SiweVerificationError) throw err;
      if (isRevert(ethers, err)) return false;
      throw new SiweVerificationError(
        'contract-wallet',
        `the EIP-1271 call to ${address} on chain ${chainId} failed: ${describeRpcError(err)}`,
        address,
        { cause: err },
      );
    } finally {
      clearTimeout(timer);
    }
    // No code at the address ("0x"), an answer of another length, or another word: not valid.
    return typeof result === 'string' && result.toLowerCase() === EIP1271_ACCEPTED;
  };
}

/**
 * How nodes word a revert when they give no EIP-1474 code: geth and its kin "execution reverted", ganache "VM Exception
 * while processing transaction: revert", hardhat "... reverted ...". Not any message with "revert" in it: "rate
 * limited; will revert to normal soon" is the node failing, not the contract answering.
 */
const REVERT_MESSAGE = /execution reverted|VM Exception while processing transaction: revert|\breverted\b/i;

/**
 * ethers reports every JSON-RPC error of an eth_call as CALL_EXCEPTION, including node trouble ("header not
 * found", rate limits); only an error the node describes as a revert (EIP-1474 code 3, or a revert's wording in the
 * message) is the contract's answer.
 */
function isRevert({ isError }: Ethers, err: unknown): boolean {
  if (!isError(err, 'CALL_EXCEPTION')) return false;
  const rpc = (err.info as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  return rpc?.code === 3 || (typeof rpc?.message === 'string' && REVERT_MESSAGE.test(rpc.message));
}

/** A short description without the request payload (which holds the signature). */
function describeRpcError(err: unknown): string {
  const rpc = (err as { info?: { error?: { code?: unknown; message?: unknown } } }).info?.error;
  if (rpc && typeof rpc.message === 'string') return `JSON-RPC error ${String(rpc.code)}: ${rpc.message.slice(0, 200)}`;
  const e = err as { code?: unknown; shortMessage?: unknown };
  if (typeof e.shortMessage === 'string') return `${String(e.code)}: ${e.shortMessage.slice(0, 200)}`;
  return typeof e.code === 'string' ? e.code : 'unexpected error';
}
