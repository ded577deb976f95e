import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { ContractFactory, JsonRpcProvider, Wallet, getAddress } from 'ethers';
import type { InterfaceAbi } from 'ethers';
import solc from 'solc';

import { freePort } from './ferretdb.js';
import { ROOT } from './server.js';

/** The chain id of the test chain (ganache's customary local id; not a public network). */
export const EVM_CHAIN_ID = 1337;
/** The EVM rules of the test chain; the contract is compiled for the same ones. */
const HARDFORK = 'shanghai';
/** A throwaway key funded at genesis: it pays for deployments and nothing else. */
const DEPLOYER_KEY = '0x8f2a55949038a9610f50fb23b5883af3b4ecb3c3bb792cbcefbd1542c692be63';

export interface Evm {
  rpcUrl: string;
  chainId: number;
  provider: JsonRpcProvider;
  /** Funded at genesis, connected to `provider`. */
  deployer: Wallet;
  stop(): Promise<void>;
}

/** Starts a local EVM (ganache, in this process) on 127.0.0.1 with a free port; mines each transaction at once. */
export async function startEvm(): Promise<Evm> {
  const ganache = await loadGanache();
  const port = await freePort();
  const server = ganache.server({
    logging: { quiet: true },
    chain: { chainId: EVM_CHAIN_ID, hardfork: HARDFORK },
    wallet: { accounts: [{ secretKey: DEPLOYER_KEY, balance: '0x56bc75e2d63100000' /* 100 ether */ }] },
    miner: { instamine: 'eager' },
  });
  await server.listen(port, '127.0.0.1');
  const rpcUrl = `http://127.0.0.1:${port}`;
  const provider = new JsonRpcProvider(rpcUrl, EVM_CHAIN_ID, { staticNetwork: true, batchMaxCount: 1, pollingInterval: 100 });
  const reported = Number(await provider.send('eth_chainId', []));
  if (reported !== EVM_CHAIN_ID) throw new Error(`ganache reports chain id ${reported}, expected ${EVM_CHAIN_ID}`);
  return {
    rpcUrl,
    chainId: EVM_CHAIN_ID,
    provider,
    deployer: new Wallet(DEPLOYER_KEY, provider),
    async stop() {
      provider.destroy();
      await server.close();
    },
  };
}

/**
 * Loads ganache on first use. Its websocket library has no native binary for Node 22 and says so on console.warn
 * when loaded (then uses its Node.js implementation, which is all these tests need): that notice is dropped.
 */
async function loadGanache(): Promise<typeof import('ganache').default> {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    const text = String(args[0]);
    if (text.startsWith('This version of µWS is not compatible') || text.startsWith('Falling back to a NodeJS implementation')) return;
    warn(...args);
  };
  try {
    return (await import('ganache')).default;
  } finally {
    console.warn = warn;
  }
}

export interface CompiledContract {
  abi: InterfaceAbi;
  /** 0x-prefixed creation bytecode. */
  bytecode: string;
}

let compiled: CompiledContract | undefined;

/**
 * Compiles test/fixtures/OwnerWallet.sol with the solc-js compiler bundled in the `solc` package (nothing is
 * downloaded). Throws with the compiler's messages if it reports any error.
 */
export function compileOwnerWallet(): CompiledContract {
  if (compiled) return compiled;
  const file = 'OwnerWallet.sol';
  const input = {
    language: 'Solidity',
    sources: { [file]: { content: readFileSync(join(ROOT, 'test', 'fixtures', file), 'utf8') } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: HARDFORK,
      outputSelection: { [file]: { OwnerWallet: ['abi', 'evm.bytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)) as string) as {
    errors?: Array<{ severity: string; formattedMessage: string }>;
    contracts?: Record<string, Record<string, { abi: InterfaceAbi; evm: { bytecode: { object: string } } }>>;
  };
  const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length > 0) {
    throw new Error(`solc ${String(solc.version())} could not compile ${file}:\n${errors.map((e) => e.formattedMessage).join('\n')}`);
  }
  const contract = output.contracts?.[file]?.OwnerWallet;
  if (!contract || !contract.evm.bytecode.object) throw new Error(`solc produced no bytecode for OwnerWallet: ${JSON.stringify(output)}`);
  compiled = { abi: contract.abi, bytecode: `0x${contract.evm.bytecode.object}` };
  return compiled;
}

/** Deploys an OwnerWallet owned by `owner` and returns its EIP-55 address. */
export async function deployOwnerWallet(evm: Evm, owner: string): Promise<string> {
  const { abi, bytecode } = compileOwnerWallet();
  const contract = await new ContractFactory(abi, bytecode, evm.deployer).deploy(getAddress(owner));
  await contract.waitForDeployment();
  const address = getAddress(await contract.getAddress());
  if ((await evm.provider.getCode(address)) === '0x') throw new Error(`no code at ${address} after deploying OwnerWallet`);
  return address;
}
