// Request material made before a measured run, so the load generator only sends bytes: DPoP proofs (one unique
// proof per request), wallet sign-in messages (one fresh nonce each, signed with ethers), tokens to introspect and
// refresh tokens to rotate.
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { Wallet } from 'ethers';

import { AGENT, OPAQUE_RESOURCE, REFRESH_AGENT, RESOURCE, WALLET_GRANT, basic } from './shared.mjs';

const b64u = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  });
  await Promise.all(lanes);
  return out;
}

/** P-256 key pairs standing for distinct agents (each proof is signed by one of them, in turn). */
export function dpopKeys(n = 32) {
  return Array.from({ length: n }, () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
    return { privateKey, jwk: { kty, crv, x, y } };
  });
}

/** `count` RFC 9449 proofs for POST `htu`, each with its own jti and a current iat (ES256, node:crypto). */
export function dpopProofs(keys, htu, count) {
  const iat = Math.floor(Date.now() / 1000);
  const headers = keys.map((k) => b64u({ typ: 'dpop+jwt', alg: 'ES256', jwk: k.jwk }));
  const proofs = new Array(count);
  for (let i = 0; i < count; i += 1) {
    const k = i % keys.length;
    const input = `${headers[k]}.${b64u({ htm: 'POST', htu, iat, jti: randomUUID() })}`;
    const sig = sign('sha256', Buffer.from(input), { key: keys[k].privateKey, dsaEncoding: 'ieee-p1363' });
    proofs[i] = `${input}.${sig.toString('base64url')}`;
  }
  return proofs;
}

async function post(url, headers, body) {
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

export const form = (params) => new URLSearchParams(params).toString();
const FORM = 'application/x-www-form-urlencoded';

/** The client_credentials request body: for the JWT API, or (`opaque`) for the opaque resource, whose tokens the server stores. */
export const clientCredentialsBody = (opaque = false) =>
  form(opaque ? { grant_type: 'client_credentials', resource: OPAQUE_RESOURCE, scope: 'files' } : { grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' });

/** A client_credentials token from `url` (JWT for the API, or opaque for the opaque resource). */
export async function clientCredentialsToken(url, { opaque = false, dpop } = {}) {
  const res = await post(
    `${url}/token`,
    { authorization: basic(AGENT), 'content-type': FORM, ...(dpop ? { dpop } : {}) },
    clientCredentialsBody(opaque),
  );
  if (res.status !== 200 || typeof res.json?.access_token !== 'string') throw new Error(`client_credentials at ${url} answered ${res.status}: ${res.text}`);
  return res.json;
}

/** 503s a fixture request is sent again after (waiting the answer's Retry-After, at most 5 s), as a client would. */
const RETRIES_AFTER_503 = 5;

/**
 * Fresh wallet nonces from POST /wallet/nonce, bound to the client that will redeem them. A 503 (the store slow or
 * briefly unreachable: a FerretDB v1 still working through the previous scenario's backlog, once) is retried after
 * its Retry-After, as a client would; anything else ends the run.
 */
export async function walletNonces(url, count, clientId) {
  return mapLimit(Array.from({ length: count }), 16, async () => {
    for (let attempt = 0; ; attempt += 1) {
      const res = await post(`${url}/wallet/nonce`, { 'content-type': FORM }, form({ client_id: clientId }));
      if (res.status === 200 && typeof res.json?.nonce === 'string') return res.json.nonce;
      if (res.status !== 503 || attempt >= RETRIES_AFTER_503) throw new Error(`POST /wallet/nonce answered ${res.status}: ${res.text}`);
      await new Promise((r) => setTimeout(r, Math.min(Number(res.headers.get('retry-after')) || 1, 5) * 1000));
    }
  });
}

/** Wallets standing for distinct accounts; messages are signed by them in turn. */
export function wallets(n = 8) {
  return Array.from({ length: n }, () => Wallet.createRandom());
}

/** Form bodies for the wallet-signature grant: one EIP-4361 message per nonce, signed (EIP-191) before the run. */
export async function walletGrantBodies(url, signers, count, clientId) {
  // agentauth's own EIP-4361 builder (compiled by `npm run build`).
  const { buildSiweMessage } = await import('../../dist/interactions/siwe/message.js');
  const { scopeResource } = await import('../../dist/interactions/siwe/binding.js');
  const nonces = await walletNonces(url, count, clientId);
  const { host } = new URL(url);
  const issuedAt = new Date();
  return nonces.map((nonce, i) => {
    const signer = signers[i % signers.length];
    const message = buildSiweMessage({
      domain: host,
      address: signer.address,
      statement: 'Grant the agent access to the API.',
      uri: url,
      chainId: 1,
      nonce,
      issuedAt,
      resources: [RESOURCE, scopeResource('read')],
    });
    return form({ grant_type: WALLET_GRANT, message, signature: signer.signMessageSync(message), resource: RESOURCE, scope: 'read' });
  });
}

/** Refresh tokens to start rotation chains from: agentauth mints them through its wallet grant. */
export async function agentauthRefreshTokens(url, count) {
  const bodies = await walletGrantBodies(url, wallets(4), count, REFRESH_AGENT.id);
  return mapLimit(bodies, 8, async (body) => {
    const res = await post(`${url}/token`, { authorization: basic(REFRESH_AGENT), 'content-type': FORM }, body);
    if (res.status !== 200 || typeof res.json?.refresh_token !== 'string') throw new Error(`wallet grant (refresh agent) answered ${res.status}: ${res.text}`);
    return res.json.refresh_token;
  });
}

/** Refresh tokens minted inside the bare provider (bench/bare-provider.mjs /__bench/refresh-tokens). */
export async function bareRefreshTokens(url, count) {
  const res = await post(`${url}/__bench/refresh-tokens?n=${count}`, {}, '');
  if (res.status !== 200) throw new Error(`bare refresh-token minting answered ${res.status}: ${res.text}`);
  return res.json.refresh_tokens;
}
