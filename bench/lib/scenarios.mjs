// The benchmark scenarios (issue 6). Each one says which servers can run it, how to prepare a fresh server for it,
// and how to make a pool of `count` requests: unique material per request wherever the protocol demands it.
import {
  agentauthRefreshTokens,
  bareRefreshTokens,
  clientCredentialsBody,
  clientCredentialsToken,
  dpopKeys,
  dpopProofs,
  form,
  walletGrantBodies,
  wallets,
} from './fixtures.mjs';
import { AGENT, REFRESH_AGENT, REGISTRATION_BODY, RESOURCE, RS, WALLET_AGENT, basic } from './shared.mjs';

const FORM = 'application/x-www-form-urlencoded';
const has = (needle) => (body) => typeof body === 'string' && body.includes(needle);

const ccBody = clientCredentialsBody();
const ccHeaders = { authorization: basic(AGENT), 'content-type': FORM };
const ccOpaqueBody = clientCredentialsBody(true);

/** A pool that hands out the same request forever (nothing in it needs to be unique). */
const constant = (request) => ({ next: () => request });

/** A pool over a pre-generated array, consumed in order; undefined once used up. */
function consumeInOrder(items, toRequest) {
  let i = 0;
  return { next: () => (i < items.length ? toRequest(items[i++]) : undefined), size: items.length };
}

function introspection(tokens) {
  let i = 0;
  const headers = { authorization: basic(RS), 'content-type': FORM };
  const bodies = tokens.map((token) => form({ token, token_type_hint: 'access_token' }));
  // Introspection is read-only: a small set of valid tokens, round robin.
  return { next: () => ({ path: '/token/introspection', headers, body: bodies[i++ % bodies.length] }) };
}

async function mintTokens(url, n, opts) {
  const out = [];
  for (let i = 0; i < n; i += 1) out.push((await clientCredentialsToken(url, opts)).access_token);
  return out;
}

export const SCENARIOS = [
  {
    id: 'cc_dpop',
    title: 'client_credentials, DPoP-bound ES256 JWT (unique proof per request)',
    targets: ['embedded', 'mongodb', 'bare'],
    // Requests per second assumed before the warm-up has measured one (sizes the warm-up pool).
    estimate: 1500,
    poolFactor: 2.5,
    // Its ratio to bare is a target: alternate bare and embedded three times and report the medians.
    rounds: 5,
    verify: has('"token_type":"DPoP"'),
    async prepare() {
      return { keys: dpopKeys(32) };
    },
    async pool(server, state, count) {
      const proofs = dpopProofs(state.keys, `${server.url}/token`, count);
      return consumeInOrder(proofs, (dpop) => ({ path: '/token', headers: { ...ccHeaders, dpop }, body: ccBody }));
    },
  },
  {
    id: 'cc_bearer',
    title: 'client_credentials, bearer ES256 JWT (no DPoP)',
    targets: ['embedded', 'mongodb', 'bare'],
    verify: has('"token_type":"Bearer"'),
    async pool() {
      return constant({ path: '/token', headers: ccHeaders, body: ccBody });
    },
  },
  {
    id: 'cc_opaque',
    title: 'client_credentials, bearer opaque access token (stored by the server)',
    targets: ['embedded', 'mongodb', 'bare'],
    // A bearer token with no dot in it: an opaque reference, not a JWT.
    verify: (body) => has('"token_type":"Bearer"')(body) && /"access_token":"[A-Za-z0-9_-]+"/.test(body),
    async pool() {
      return constant({ path: '/token', headers: ccHeaders, body: ccOpaqueBody });
    },
  },
  {
    id: 'introspect_jwt',
    title: 'introspection of a JWT access token (RFC 7662, resource-server client)',
    targets: ['embedded', 'mongodb', 'bare'],
    bareNote: 'bare oidc-provider refuses to introspect JWT access tokens (400 unsupported_token_type); its column is its opaque-token introspection',
    verify: has('"active":true'),
    async prepare(server) {
      // Bare cannot introspect JWTs at all: compare with what it can do, introspecting its own opaque tokens.
      return { tokens: await mintTokens(server.url, 64, { opaque: server.kind === 'bare' }) };
    },
    async pool(_server, state) {
      return introspection(state.tokens);
    },
  },
  {
    id: 'introspect_opaque',
    title: 'introspection of an opaque access token (RFC 7662, resource-server client)',
    targets: ['embedded', 'mongodb', 'bare'],
    verify: has('"active":true'),
    async prepare(server) {
      return { tokens: await mintTokens(server.url, 64, { opaque: true }) };
    },
    async pool(_server, state) {
      return introspection(state.tokens);
    },
  },
  {
    id: 'refresh',
    title: 'refresh-token rotation (confidential client, JWT access token)',
    targets: ['embedded', 'mongodb', 'bare'],
    bareNote: "bare's starting refresh tokens are minted in-process (it has no headless grant that issues one)",
    verify: has('"refresh_token"'),
    async prepare(server, { connections }) {
      // Every request spends one refresh token and yields its successor: chains, seeded with 3 tokens per connection.
      const seeds = server.kind === 'bare' ? await bareRefreshTokens(server.url, connections * 3) : await agentauthRefreshTokens(server.url, connections * 3);
      return { queue: seeds };
    },
    async pool(_server, state) {
      const headers = { authorization: basic(REFRESH_AGENT), 'content-type': FORM };
      const { queue } = state;
      return {
        next: (context) => {
          const token = queue.shift();
          if (context) context.refreshToken = token;
          return token === undefined ? undefined : { path: '/token', headers, body: form({ grant_type: 'refresh_token', refresh_token: token, resource: RESOURCE }) };
        },
        onResponse: (status, body, context) => {
          // A 503 (storage slow or down) is retried with the same token, as a client would: the chain goes on, with
          // the successor if the rotation did happen (the refresh grace), and the 503 still counts as a failure.
          if (status === 503 && context?.refreshToken) queue.push(context.refreshToken);
          if (status !== 200) return;
          const m = /"refresh_token":"([^"]+)"/.exec(body);
          if (m) queue.push(m[1]);
        },
      };
    },
  },
  {
    id: 'dcr',
    title: 'dynamic client registration (RFC 7591, confidential client)',
    targets: ['embedded', 'mongodb', 'bare'],
    verify: has('"client_id"'),
    async pool() {
      return constant({ path: '/reg', headers: { 'content-type': 'application/json' }, body: REGISTRATION_BODY });
    },
  },
  {
    id: 'wallet',
    title: 'wallet-signature grant (EIP-4361 + EIP-191, pre-signed, unique nonces)',
    targets: ['embedded', 'mongodb'],
    bareNote: 'agentauth-only grant',
    estimate: 300,
    poolFactor: 1.5,
    verify: has('"access_token"'),
    async prepare() {
      return { signers: wallets(8) };
    },
    async pool(server, state, count) {
      const bodies = await walletGrantBodies(server.url, state.signers, count, WALLET_AGENT.id);
      const headers = { authorization: basic(WALLET_AGENT), 'content-type': FORM };
      return consumeInOrder(bodies, (body) => ({ path: '/token', headers, body }));
    },
  },
];
