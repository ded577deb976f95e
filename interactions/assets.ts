import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Static files for the interaction pages, served by agentauth itself (no CDN). */

const STYLE = `
:root { font-family: system-ui, sans-serif; color: #1b1f24; background: #f6f7f9; }
main { max-width: 34rem; margin: 3rem auto; padding: 2rem; background: #fff; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.08); overflow-wrap: anywhere; }
h1 { font-size: 1.4rem; margin-top: 0; }
ul.resources { padding-left: 1.2rem; } .resource { font-family: ui-monospace, monospace; word-break: break-all; }
ul.scopes { margin: .25rem 0 .5rem; } .muted { color: #6a737d; }
button { font: inherit; padding: .6rem 1.1rem; border-radius: 6px; border: 1px solid #0b5fff; background: #0b5fff; color: #fff; cursor: pointer; margin: .25rem .5rem .25rem 0; }
button.secondary { background: #fff; color: #0b5fff; } button:disabled { opacity: .5; cursor: default; }
a.button { display: inline-block; padding: .6rem 1.1rem; border-radius: 6px; border: 1px solid #0b5fff; color: #0b5fff; text-decoration: none; margin: .25rem .5rem .25rem 0; overflow-wrap: anywhere; }
form { display: inline; } .actions { margin-top: 1rem; }
.error { color: #b3261e; } .info { color: #1b1f24; } code { word-break: break-all; }
.client-source { font-size: .95rem; } .client-host { font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
.warning { background: #fff4e5; border: 1px solid #b26a00; border-left-width: 4px; color: #5f3700; padding: .6rem .8rem; border-radius: 6px; }
`;

const LOGIN_JS = `(() => {
  'use strict';
  const data = JSON.parse(document.getElementById('login-data').textContent);
  const status = document.getElementById('status');
  const button = document.getElementById('connect');
  const show = (text, error) => { status.textContent = text; status.className = error ? 'error' : 'info'; };
  // EIP-4361 statements are printable ASCII without some characters; keep the client's name readable without them.
  const clean = (s) => String(s).replace(/[^\\x20-\\x7e]|["%<>\\\\^\`{|}]/g, '').slice(0, 200);
  if (!window.ethereum || typeof window.ethereum.request !== 'function') {
    show('No browser wallet was found. Install an EIP-1193 wallet (window.ethereum) such as MetaMask, or, for an agent, use the wallet-signature grant instead.', true);
    button.disabled = true;
    return;
  }
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      show('Waiting for your wallet…');
      const accounts = await window.ethereum.request({ method: 'eth_requestAccounts' });
      if (!accounts || !accounts[0]) throw new Error('The wallet returned no account.');
      const address = window.ethers.getAddress(accounts[0]);
      const chainId = Number.parseInt(await window.ethereum.request({ method: 'eth_chainId' }), 16);
      if (!data.chainIds.includes(chainId)) throw new Error('Your wallet is on chain ' + chainId + '; switch it to chain ' + data.chainIds.join(' or ') + '.');
      const nonceRes = await fetch(data.nonceUrl, { method: 'POST', headers: { accept: 'application/json' } });
      if (!nonceRes.ok) throw new Error('Could not get a sign-in nonce (HTTP ' + nonceRes.status + ').');
      const { nonce } = await nonceRes.json();
      // The client's name is the client's own text: quoted, and shortened first, so that it can neither pose as
      // agentauth's words nor push out what the signature grants (the resources and scopes) at the 200-character cut.
      const head = clean('Sign in to ' + data.domain + ' and allow the application ');
      const tail = clean(' to access ' + (data.resources.length ? data.resources.join(', ') : 'your account') + (data.scopes.length ? ' with scopes ' + data.scopes.join(' ') : '') + '.');
      // A name of characters a SIWE statement cannot hold (any script but ASCII) leaves nothing: the client_id then.
      let name = clean(data.clientName).replace(/'/g, '').trim() || clean(data.clientId).replace(/'/g, '');
      const room = Math.max(8, 200 - head.length - tail.length - 2);
      if (name.length > room) name = name.slice(0, room - 3) + '...';
      const statement = (head + "'" + name + "'" + tail).slice(0, 200);
      const lines = [data.domain + ' wants you to sign in with your Ethereum account:', address, '', statement, '',
        'URI: ' + data.uri, 'Version: 1', 'Chain ID: ' + chainId, 'Nonce: ' + nonce, 'Issued At: ' + new Date().toISOString(),
        'Request ID: ' + data.uid];
      if (data.resources.length) { lines.push('Resources:'); for (const r of data.resources) lines.push('- ' + r); }
      const message = lines.join('\\n');
      show('Sign the message in your wallet…');
      const signature = await window.ethereum.request({ method: 'personal_sign', params: [message, address] });
      const res = await fetch(data.loginUrl, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify({ message, signature }) });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error_description || ('Sign-in failed (HTTP ' + res.status + ').'));
      show('Signed in. Continuing…');
      window.location.assign(body.redirect_to);
    } catch (err) {
      show(err && err.message ? err.message : String(err), true);
      button.disabled = false;
    }
  });
})();
`;

const require = createRequire(import.meta.url);
let ethersBundle: Buffer | undefined;

export interface Asset {
  type: string;
  body: string | Buffer;
}

export function asset(name: string): Asset | undefined {
  switch (name) {
    case 'style.css':
      return { type: 'text/css; charset=utf-8', body: STYLE };
    case 'login.js':
      return { type: 'text/javascript; charset=utf-8', body: LOGIN_JS };
    case 'ethers.umd.min.js':
      // ethers' own browser build, for EIP-55 checksums in the page; served from the installed package.
      // (`dist/` is not in the package's exports map, so it is found next to the resolved entry point.)
      ethersBundle ??= readFileSync(join(dirname(require.resolve('ethers')), '..', 'dist', 'ethers.umd.min.js'));
      return { type: 'text/javascript; charset=utf-8', body: ethersBundle };
    default:
      return undefined;
  }
}
