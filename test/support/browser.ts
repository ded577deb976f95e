import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { getBytes, isHexString } from 'ethers';
import type { Wallet } from 'ethers';

/** Debian's chromium package. playwright-core never downloads a browser; this is the only one the tests use. */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/**
 * A new page of `context` that records console errors (CSP violations are reported there; "Failed to load resource"
 * is left to the response check), failed requests, and error responses other than the favicon Chromium asks for by
 * itself and the URLs in `allowed` (a page expected to answer an error status itself).
 */
export async function watchedPage(context: Browser | BrowserContext, allowed: readonly string[] = []): Promise<{ page: Page; problems: string[] }> {
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });
  page.on('requestfailed', (r) => problems.push(`failed: ${r.url()}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && !allowed.includes(r.url()) && new URL(r.url()).pathname !== '/favicon.ico') problems.push(`${r.status()}: ${r.url()}`);
  });
  return { page, problems };
}

/**
 * Headless Chromium for the browser tests. `--no-sandbox` because the tests may run as root; the rest keeps the
 * browser from reaching anything but the loopback servers the tests start.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export interface TestWalletOptions {
  /** EIP-155 chain id the wallet reports (eth_chainId); 1 unless told. */
  chainId?: number;
  /** Reject every personal_sign as a user would (EIP-1193 error 4001); can be changed later with `rejectSignatures`. */
  rejectSignatures?: boolean;
  /** Sign with this key instead of the wallet's own (the reported account stays the wallet's): to test server refusals. */
  signer?: Pick<Wallet, 'signMessage'>;
}

export interface TestWalletHandle {
  /** The lowercase account the wallet reports, as many real wallets do. */
  readonly account: string;
  /** Every EIP-1193 request the page made, in order. */
  readonly requests: Array<{ method: string; params: unknown }>;
  /** Every message the wallet signed (personal_sign), in order. */
  readonly signed: string[];
  /** From now on, reject (or sign) personal_sign requests. */
  rejectSignatures(reject: boolean): void;
}

/** A signature the user refused, as the page sees it: EIP-1193 `{ code: 4001 }`. */
export const USER_REJECTED = { code: 4001, message: 'User rejected the request.' } as const;

type SignResult = { signature: string } | { error: { code: number; message: string } };

/**
 * Injects an EIP-1193 provider as `window.ethereum` into every page of `target` (before any page script runs),
 * backed by `wallet`: eth_requestAccounts / eth_accounts (lowercase address), eth_chainId (hex), personal_sign
 * (params [message, address], signed in Node through an exposed binding). Any other method throws EIP-1193 4200
 * (unsupported method). Call once per page or context (the binding's name can be exposed only once).
 */
export async function injectTestWallet(target: BrowserContext | Page, wallet: Wallet, opts: TestWalletOptions = {}): Promise<TestWalletHandle> {
  const account = wallet.address.toLowerCase();
  const chainId = opts.chainId ?? 1;
  const signer = opts.signer ?? wallet;
  let reject = opts.rejectSignatures ?? false;
  const requests: Array<{ method: string; params: unknown }> = [];
  const signed: string[] = [];

  await target.exposeFunction('__testWalletRequest', (method: string, params: unknown) => {
    requests.push({ method, params });
  });
  await target.exposeFunction('__testWalletSign', async (message: string, address: string): Promise<SignResult> => {
    if (typeof message !== 'string' || typeof address !== 'string') {
      return { error: { code: -32602, message: 'personal_sign expects [message, address]' } };
    }
    if (address.toLowerCase() !== account) {
      return { error: { code: 4100, message: `The requested account ${address} has not been authorized by the user.` } };
    }
    if (reject) return { error: { ...USER_REJECTED } };
    // Like real wallets: a 0x-hex message is the bytes to sign, anything else is UTF-8 text.
    const payload = isHexString(message) ? getBytes(message) : message;
    const signature = await signer.signMessage(payload);
    signed.push(isHexString(message) ? Buffer.from(getBytes(message)).toString('utf8') : message);
    return { signature };
  });

  await target.addInitScript(
    ({ account: acct, chainIdHex }: { account: string; chainIdHex: string }) => {
      type Binding = (...args: unknown[]) => Promise<unknown>;
      const g = globalThis as unknown as Record<string, unknown>;
      const providerError = (code: number, message: string) => Object.assign(new Error(message), { code });
      g.ethereum = {
        isTestWallet: true,
        async request(args: { method: string; params?: unknown[] }) {
          const { method, params } = args ?? ({} as { method: string });
          await (g.__testWalletRequest as Binding)(method, params ?? null);
          switch (method) {
            case 'eth_requestAccounts':
            case 'eth_accounts':
              return [acct];
            case 'eth_chainId':
              return chainIdHex;
            case 'personal_sign': {
              const [message, address] = Array.isArray(params) ? params : [];
              const result = (await (g.__testWalletSign as Binding)(message, address)) as
                | { signature: string }
                | { error: { code: number; message: string } };
              if ('error' in result) throw providerError(result.error.code, result.error.message);
              return result.signature;
            }
            default:
              throw providerError(4200, `The test wallet does not support ${String(method)}.`);
          }
        },
        on() {},
        removeListener() {},
      };
    },
    { account, chainIdHex: `0x${chainId.toString(16)}` },
  );

  return {
    account,
    requests,
    signed,
    rejectSignatures(value: boolean) {
      reject = value;
    },
  };
}
