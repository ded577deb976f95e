import { Wallet, hashMessage } from 'ethers';

import type { NonceStore } from '../../adapters/types.js';
import { buildSiweMessage, parseSiweMessage } from '../../interactions/siwe/message.js';
import type { SiweMessageFields } from '../../interactions/siwe/message.js';
import { NONCE_LENGTH, generateNonce } from '../../interactions/siwe/nonce.js';
import { MAX_SIGNATURE_BYTES, SiweVerificationError, signatureFormProblem, verifySiwe } from '../../interactions/siwe/verify.js';
import type { Eip1271Verifier, SiweRule, SiweRules } from '../../interactions/siwe/verify.js';

// Hardhat's well-known development accounts #0 and #1: fixed keys, so signatures are deterministic (RFC 6979).
const alice = new Wallet('0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80');
const bob = new Wallet('0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d');
const ALICE = '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266';
const BOB = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';

const NOW = new Date('2025-06-01T12:00:00.000Z');
const at = (seconds: number) => new Date(NOW.getTime() + seconds * 1000);

const rules: SiweRules = {
  domains: ['auth.example.com', 'localhost:3000'],
  origins: ['https://auth.example.com', 'http://localhost:3000'],
  chainIds: [1, 8453],
  issuedAtWindowSeconds: 300,
  clockSkewSeconds: 60,
};

/** What the test nonces are bound to (the nonce store's binding key). */
const BINDING = 'client:test-client';

/** In-memory single-use nonces, all bound to BINDING; records every lookup, consume and attempt. */
function nonceStore(...issued: string[]) {
  const live = new Set(issued);
  const known = new Map(issued.map((n) => [n, BINDING]));
  const consumed: string[] = [];
  const lookups: string[] = [];
  const attempts = new Map<string, number>();
  const store: NonceStore = {
    async issue(nonce, _ttl, binding) {
      live.add(nonce);
      known.set(nonce, binding);
    },
    async boundTo(nonce) {
      lookups.push(nonce);
      return known.get(nonce);
    },
    async consume(nonce) {
      consumed.push(nonce);
      return live.delete(nonce);
    },
    async takeAttempt(key, limit) {
      const n = attempts.get(key) ?? 0;
      if (n >= limit) return false;
      attempts.set(key, n + 1);
      return true;
    },
    async claim() {
      throw new Error('not used');
    },
    async release() {
      throw new Error('not used');
    },
  };
  return { store, consumed, live, lookups, attempts };
}

function fields(overrides: Partial<SiweMessageFields> = {}): SiweMessageFields {
  return {
    domain: 'auth.example.com',
    address: ALICE,
    statement: 'Sign in to agentauth.',
    uri: 'https://auth.example.com/interaction/Xk2',
    chainId: 1,
    nonce: 'Nonce0000000000000000001',
    issuedAt: at(-10),
    ...overrides,
  };
}

/** A message built from `overrides`, signed by `signer`, with its nonce issued. */
function signed(overrides: Partial<SiweMessageFields> = {}, signer: Wallet = alice) {
  const f = fields(overrides);
  const message = buildSiweMessage(f);
  return { message, signature: signer.signMessageSync(message), nonceBinding: BINDING, nonces: nonceStore(f.nonce) };
}

/** Signs raw text (for messages buildSiweMessage refuses to produce). */
function signedText(message: string, nonce: string, signer: Wallet = alice) {
  return { message, signature: signer.signMessageSync(message), nonceBinding: BINDING, nonces: nonceStore(nonce) };
}

async function refusal(promise: Promise<unknown>, rule: SiweRule): Promise<SiweVerificationError> {
  const err = await promise.then(
    () => {
      throw new Error(`expected a ${rule} refusal, but verification succeeded`);
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SiweVerificationError);
  const siwe = err as SiweVerificationError;
  expect({ rule: siwe.rule, message: siwe.message }).toEqual({ rule, message: expect.any(String) });
  expect(siwe.code).toBe('siwe_verification_failed');
  return siwe;
}

const now = () => NOW;

/** An EIP-1271 verifier stub with a fixed answer that records its calls. */
function eip1271Stub(answer: boolean) {
  const calls: Parameters<Eip1271Verifier>[] = [];
  const verifier: Eip1271Verifier = async (...args) => {
    calls.push(args);
    return answer;
  };
  return { verifier, calls };
}

describe('generateNonce', () => {
  test('24 alphanumeric characters (EIP-4361 nonce grammar), fresh each time, every character reachable', () => {
    const nonces = Array.from({ length: 2000 }, generateNonce);
    expect(NONCE_LENGTH).toBe(24);
    for (const n of nonces) expect(n).toMatch(/^[A-Za-z0-9]{24}$/);
    expect(new Set(nonces).size).toBe(nonces.length);
    expect(new Set(nonces.join('')).size).toBe(62);
    const message = buildSiweMessage(fields({ nonce: nonces[0]! }));
    expect(parseSiweMessage(message).nonce).toBe(nonces[0]);
  });
});

describe('buildSiweMessage', () => {
  test('writes the exact EIP-4361 text, and it parses back to the same fields', () => {
    const f = fields({
      expirationTime: at(300),
      notBefore: at(-20),
      requestId: 'interaction-Xk2',
      resources: ['https://api.example.com/mcp', 'urn:agentauth:scope:read'],
    });
    const message = buildSiweMessage(f);
    expect(message).toBe(
      [
        'auth.example.com wants you to sign in with your Ethereum account:',
        ALICE,
        '',
        'Sign in to agentauth.',
        '',
        'URI: https://auth.example.com/interaction/Xk2',
        'Version: 1',
        'Chain ID: 1',
        'Nonce: Nonce0000000000000000001',
        'Issued At: 2025-06-01T11:59:50.000Z',
        'Expiration Time: 2025-06-01T12:05:00.000Z',
        'Not Before: 2025-06-01T11:59:40.000Z',
        'Request ID: interaction-Xk2',
        'Resources:',
        '- https://api.example.com/mcp',
        '- urn:agentauth:scope:read',
      ].join('\n'),
    );
    expect(parseSiweMessage(message)).toEqual({
      domain: f.domain,
      address: ALICE,
      statement: f.statement,
      uri: f.uri,
      version: '1',
      chainId: 1,
      nonce: f.nonce,
      issuedAt: f.issuedAt,
      expirationTime: f.expirationTime,
      notBefore: f.notBefore,
      requestId: f.requestId,
      resources: f.resources,
    });
  });

  test('without a statement the statement line is left out (three line feeds between address and URI)', () => {
    const { statement: _s, ...rest } = fields();
    const message = buildSiweMessage({ ...rest, scheme: 'https' });
    expect(message.startsWith(`https://auth.example.com wants you to sign in with your Ethereum account:\n${ALICE}\n\n\nURI: `)).toBe(true);
    const parsed = parseSiweMessage(message);
    expect(parsed.statement).toBeUndefined();
    expect(parsed.scheme).toBe('https');
    expect(parsed.resources).toEqual([]);
  });

  test('refuses fields that do not form a valid message (lowercase address, line break in the statement)', () => {
    expect(() => buildSiweMessage(fields({ address: ALICE.toLowerCase() }))).toThrow(/invalid EIP-55 address/);
    expect(() => buildSiweMessage(fields({ statement: 'two\nlines' }))).toThrow(TypeError);
  });
});

describe('verifySiwe: valid signatures', () => {
  test('an EOA signature (EIP-191) verifies; sub is did:pkh with the EIP-55 address; the nonce is consumed', async () => {
    const { message, signature, nonces } = signed({ resources: ['https://api.example.com/mcp'] });
    // A fixed vector: a change in message text, hashing or signing would change this.
    expect(signature).toBe(
      '0x71762b199e9c2ae558bbf3fc2b26fd971d187d25f3c974edea99f3e000da77554f8fdd4de2f5d4a5bbf34db40c6f9d1ebed3d0b5cd9a4d92e7f0ac79d876a7af1c',
    );
    const out = await verifySiwe({ message, signature, nonceBinding: BINDING, requiredResources: ['https://api.example.com/mcp'] }, rules, { nonces: nonces.store, now });
    expect(out).toEqual({
      address: ALICE,
      chainId: 1,
      sub: `did:pkh:eip155:1:${ALICE}`,
      resources: ['https://api.example.com/mcp'],
      scopes: [],
      statement: 'Sign in to agentauth.',
      nonce: 'Nonce0000000000000000001',
      issuedAt: at(-10),
      method: 'eip191',
    });
    expect(nonces.consumed).toEqual(['Nonce0000000000000000001']);
    expect(nonces.live.size).toBe(0);
  });

  test('a second key, another chain, another allowed domain and origin, with expiry and not-before', async () => {
    const { message, signature, nonces } = signed(
      {
        domain: 'localhost:3000',
        address: BOB,
        uri: 'http://localhost:3000/',
        chainId: 8453,
        nonce: 'abcdefgh',
        expirationTime: at(120),
        notBefore: at(-5),
        requestId: 'req-1',
      },
      bob,
    );
    const eip1271 = eip1271Stub(true);
    const out = await verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now, eip1271: eip1271.verifier });
    expect(out).toMatchObject({
      address: BOB,
      chainId: 8453,
      sub: `did:pkh:eip155:8453:${BOB}`,
      method: 'eip191',
      expirationTime: at(120),
      requestId: 'req-1',
    });
    expect(eip1271.calls).toEqual([]);
  });

  test('the reference vector from spruceid/siwe (test/validation_positive.json) verifies: builder and verifier agree with another implementation', async () => {
    const message = buildSiweMessage({
      domain: 'login.xyz',
      address: '0x9D85ca56217D2bb651b00f15e694EB7E713637D4',
      statement: 'Sign-In With Ethereum Example Statement',
      uri: 'https://login.xyz',
      chainId: 1,
      nonce: 'bTyXgcQxn2htgkjJn',
      issuedAt: new Date('2022-01-27T17:09:38.578Z'),
      expirationTime: new Date('2100-01-07T14:31:43.952Z'),
    });
    const signature =
      '0xdc35c7f8ba2720df052e0092556456127f00f7707eaa8e3bbff7e56774e7f2e05a093cfc9e02964c33d86e8e066e221b7d153d27e5a2e97ccd5ca7d3f2ce06cb1b';
    const out = await verifySiwe(
      { message, signature, nonceBinding: BINDING },
      { ...rules, domains: ['login.xyz'], origins: ['https://login.xyz'] },
      { nonces: nonceStore('bTyXgcQxn2htgkjJn').store, now: () => new Date('2022-01-27T17:10:00Z') },
    );
    expect(out.sub).toBe('did:pkh:eip155:1:0x9D85ca56217D2bb651b00f15e694EB7E713637D4');
  });

  test('times within the clock skew are accepted', async () => {
    for (const f of [{ issuedAt: at(30) }, { issuedAt: at(-200), expirationTime: at(-30) }, { notBefore: at(30) }]) {
      const { message, signature, nonces } = signed(f);
      await expect(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now })).resolves.toMatchObject({ address: ALICE });
    }
  });
});

describe('verifySiwe: one refusal per rule', () => {
  test('message-format: not EIP-4361 text, CRLF line ends, a trailing newline, not a string; none consumes a nonce', async () => {
    const { message, signature, nonces } = signed();
    const bad: unknown[] = ['hello', message.replaceAll('\n', '\r\n'), `${message}\n`, { message }, message.replace('Chain ID: 1', 'Chain ID: one')];
    for (const text of bad) {
      const err = await refusal(verifySiwe({ message: text as string, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now }), 'message-format');
      expect(err.message).not.toContain(signature.slice(2, 20));
    }
    expect(nonces.consumed).toEqual([]);
    // The nonce is still there for a well-formed attempt.
    await expect(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now })).resolves.toMatchObject({ method: 'eip191' });
  });

  test('message-format: a lowercase (non-EIP-55) address is refused by the parser, even with a valid signature for it', async () => {
    const text = buildSiweMessage(fields()).replace(ALICE, ALICE.toLowerCase());
    const { message, signature, nonces } = signedText(text, fields().nonce);
    const err = await refusal(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now }), 'message-format');
    expect(err.message).toMatch(/line 2: invalid EIP-55 address/);
    // The address line as written goes with the refusal (login.failed's `address`, docs/wallet-sign-in.md), unchecksummed.
    expect(err.address).toBe(ALICE.toLowerCase());
    expect(nonces.consumed).toEqual([]);
  });

  test('domain: another site, or a scheme that does not match an accepted origin', async () => {
    let s = signed({ domain: 'evil.example.net' });
    let err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'domain');
    expect(err.message).toContain("'evil.example.net'");
    expect(err.message).toContain('auth.example.com, localhost:3000');
    expect(err.address).toBe(ALICE);

    s = signed({ scheme: 'http' });
    err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'domain');
    expect(err.message).toContain('http://auth.example.com');
  });

  test('uri: a URL on another origin, or a URI with no origin', async () => {
    let s = signed({ uri: 'https://evil.example.net/auth.example.com' });
    const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'uri');
    expect(err.message).toContain('https://evil.example.net');
    s = signed({ uri: 'urn:example:auth.example.com' });
    await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'uri');
    // The default port is the same origin.
    s = signed({ uri: 'https://auth.example.com:443/x' });
    await expect(verifySiwe(s, rules, { nonces: s.nonces.store, now })).resolves.toMatchObject({ address: ALICE });
  });

  test('uri: a spelling a URL parser repairs into an accepted origin but RFC 3986 reads without an authority, refused before the nonce is read', async () => {
    const good = fields().uri;
    for (const uri of ['https:auth.example.com/interaction/Xk2', 'https:/auth.example.com/interaction/Xk2', 'https:///auth.example.com/interaction/Xk2',
      'https:\\\\auth.example.com/interaction/Xk2', 'https:/\\auth.example.com/interaction/Xk2', 'https://\\auth.example.com/interaction/Xk2',
      'https://auth.example.com\\interaction/Xk2', 'https://']) {
      expect(new URL(uri.length > 8 ? uri : good).origin).toBe('https://auth.example.com'); // what a URL parser makes of it
      const text = buildSiweMessage(fields()).replace(`URI: ${good}`, `URI: ${uri}`);
      const { message, signature, nonces } = signedText(text, fields().nonce);
      const err = await refusal(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now }), 'uri');
      expect(err.message).toMatch(/has no authority|is not on an accepted origin/);
      expect(nonces.lookups).toEqual([]);
      expect(nonces.consumed).toEqual([]);
    }
    const text = buildSiweMessage(fields()).replace(`URI: ${good}`, 'URI: https:auth.example.com');
    const { message, signature, nonces } = signedText(text, fields().nonce);
    const err = await refusal(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now }), 'uri');
    expect(err.message).toBe("URI 'https:auth.example.com' has no authority; write it as an absolute URL, scheme://host[:port] then the path, on one of: https://auth.example.com, http://localhost:3000");
  });

  test('uri: an IPv4 host a URL parser rewrites (RFC 3986 reads these as other names) is refused; the address as written, or its default port, is not', async () => {
    const ipRules: SiweRules = { ...rules, origins: [...rules.origins, 'http://127.0.0.1:3000', 'http://127.0.0.1'] };
    for (const uri of ['http://2130706433:3000/', 'http://0x7f.0.0.1:3000/', 'http://127.1:3000/', 'http://127.0.0.1.:3000/', 'http://0177.0.0.1:3000/']) {
      expect(new URL(uri).origin).toBe('http://127.0.0.1:3000'); // what a URL parser makes of it
      const s = signed({ uri });
      const err = await refusal(verifySiwe(s, ipRules, { nonces: s.nonces.store, now }), 'uri');
      expect(err.message).toContain(`writes its host as '${uri.split('/')[2]}', not as 127.0.0.1:3000 itself`);
      expect(s.nonces.consumed).toEqual([]);
    }
    for (const uri of ['http://127.0.0.1:3000/interaction/Xk2', 'http://127.0.0.1:80/x', 'http://LOCALHOST:3000/']) {
      const s = signed({ uri });
      await expect(verifySiwe(s, ipRules, { nonces: s.nonces.store, now })).resolves.toMatchObject({ address: ALICE });
    }
  });

  test('version: the grammar only admits "1", so another version is a message-format refusal (the version rule is unreachable through the parser)', async () => {
    const text = buildSiweMessage(fields()).replace('Version: 1', 'Version: 2');
    const { message, signature, nonces } = signedText(text, fields().nonce);
    const err = await refusal(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now }), 'message-format');
    expect(err.message).toContain('invalid version');
  });

  test('message-format: a Chain ID beyond 2^53 is refused naming the number as signed, not as JavaScript rounds it', async () => {
    const text = buildSiweMessage(fields()).replace('Chain ID: 1', 'Chain ID: 9007199254740993');
    const { message, signature, nonces } = signedText(text, fields().nonce);
    const err = await refusal(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now }), 'message-format');
    expect(err.message).toBe('Chain ID 9007199254740993 is not a usable chain id (at most 9007199254740991)');
  });

  test('chain-id: a chain the server does not accept', async () => {
    const s = signed({ chainId: 5 });
    const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'chain-id');
    expect(err.message).toBe('Chain ID 5 is not accepted; expected one of: 1, 8453');
  });

  test('nonce: one this server never issued', async () => {
    const s = signed();
    const err = await refusal(verifySiwe(s, rules, { nonces: nonceStore('SomeOtherNonce00').store, now }), 'nonce');
    expect(err.message).toMatch(/was not issued by this server or has expired/);
  });

  test('nonce: replaying a message that verified fails', async () => {
    const s = signed();
    await verifySiwe(s, rules, { nonces: s.nonces.store, now });
    await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'nonce');
  });

  test('issued-at: older than the window, or further in the future than the clock skew', async () => {
    let s = signed({ issuedAt: at(-301) });
    let err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'issued-at');
    expect(err.message).toContain('more than 300 s before');
    s = signed({ issuedAt: at(61) });
    err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'issued-at');
    expect(err.message).toContain('more than 60 s after');
  });

  test('expiration-time: passed (beyond the clock skew)', async () => {
    const s = signed({ issuedAt: at(-200), expirationTime: at(-61) });
    const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'expiration-time');
    expect(err.message).toContain('expired at 2025-06-01T11:58:59.000Z');
  });

  test('expiration-time: not after Issued At, refused even when the clock skew would let the time checks pass', async () => {
    for (const expirationTime of [at(-10), at(-11)]) {
      const s = signed({ issuedAt: at(-10), expirationTime });
      const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'expiration-time');
      expect(err.message).toBe(`Expiration Time ${expirationTime.toISOString()} is not after Issued At ${at(-10).toISOString()}`);
    }
    const s = signed({ issuedAt: at(-10), expirationTime: at(-9) });
    await expect(verifySiwe(s, rules, { nonces: s.nonces.store, now })).resolves.toMatchObject({ address: ALICE });
  });

  test('not-before: not before Expiration Time, a message never valid, refused even within the clock skew', async () => {
    const s = signed({ issuedAt: at(-10), notBefore: at(20), expirationTime: at(20) });
    const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'not-before');
    expect(err.message).toBe(`Not Before ${at(20).toISOString()} is not before Expiration Time ${at(20).toISOString()}`);
  });

  test('not-before: not reached (beyond the clock skew)', async () => {
    const s = signed({ notBefore: at(120) });
    await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'not-before');
  });

  test('resources: a requested resource the user did not sign for (exact match only)', async () => {
    const s = signed({ resources: ['https://api.example.com/mcp/'] });
    const err = await refusal(
      verifySiwe({ ...s, requiredResources: ['https://api.example.com/mcp'] }, rules, { nonces: s.nonces.store, now }),
      'resources',
    );
    expect(err.message).toContain('must list https://api.example.com/mcp exactly');
    expect(err.message).toContain('it lists https://api.example.com/mcp/');
  });

  test('signature: made by another key; the message says so and mentions contract wallets, never the signature', async () => {
    const s = signed({}, bob);
    const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now }), 'signature');
    expect(err.message).toContain(`does not belong to ${ALICE}`);
    expect(err.message).toContain(`made by ${BOB}`);
    expect(err.message).toContain('JSON-RPC endpoint configured for chain 1');
    expect(err.message).not.toContain(s.signature.slice(2, 20));
  });

  test('signature: malformed (not hex, truncated, not a curve point, compact EIP-2098 form)', async () => {
    const good = signed();
    for (const signature of ['not-a-signature', '0x', '0x1234', good.signature.slice(0, -2), `0x${'00'.repeat(65)}`, good.signature.slice(0, 130), 42]) {
      const s = signed();
      await refusal(verifySiwe({ message: s.message, signature: signature as string, nonceBinding: BINDING }, rules, { nonces: s.nonces.store, now }), 'signature');
    }
  });

  test('signature: the holder\'s own signature with an EIP-155 v (37/38) is not an account key\'s; the message says which v is', async () => {
    const s = signed();
    const v = Number.parseInt(s.signature.slice(130), 16);
    const eip155 = `${s.signature.slice(0, 130)}${(v + 10).toString(16)}`;
    const err = await refusal(verifySiwe({ ...s, signature: eip155 }, rules, { nonces: s.nonces.store, now }), 'signature');
    expect(err.message).toContain(`does not belong to ${ALICE} (v is ${v + 10}; an account key's signature ends in v = 27 or 28 (0 or 1 also accepted))`);
    // The same 65 bytes go to the contract wallet check, where Safe's v values (above 30) mean something.
    const t = signed();
    const eip1271 = eip1271Stub(true);
    const safeStyle = `${t.signature.slice(0, 130)}${(v + 4).toString(16)}`;
    await expect(verifySiwe({ ...t, signature: safeStyle }, rules, { nonces: t.nonces.store, now, eip1271: eip1271.verifier })).resolves.toMatchObject({ method: 'eip1271' });
    expect(eip1271.calls).toEqual([[1, ALICE, hashMessage(t.message), safeStyle]]);
  });

  test('signature: the holder\'s own signature in its high-s form (EIP-2) is told so and how to normalise it, not that another key made it', async () => {
    const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
    const highOf = (low: string) => `${low.slice(0, 66)}${(N - BigInt(`0x${low.slice(66, 130)}`)).toString(16).padStart(64, '0')}${low.slice(130) === '1b' ? '1c' : '1b'}`;
    const HIGH = "the signature's s is in the upper half of the secp256k1 curve order (s > n/2), which the low-s rule (EIP-2) refuses as malleable; normalise it (s = n - s, and flip v between 27 and 28) and send it again";
    // No contract-wallet check configured.
    const a = signed();
    expect((await refusal(verifySiwe({ ...a, signature: highOf(a.signature) }, rules, { nonces: a.nonces.store, now }), 'signature')).message).toBe(HIGH);
    // v as 0/1 too.
    const b = signed();
    const high01 = `${highOf(b.signature).slice(0, 130)}${highOf(b.signature).slice(130) === '1b' ? '00' : '01'}`;
    expect((await refusal(verifySiwe({ ...b, signature: high01 }, rules, { nonces: b.nonces.store, now }), 'signature')).message).toBe(HIGH);
    // No endpoint for the chain (it said "the signature was not made by <address>'s key").
    const noEndpoint: Eip1271Verifier = async (chainId, address) => {
      throw new SiweVerificationError('signature', `the signature was not made by ${address}'s key (EIP-191); no JSON-RPC endpoint is configured for chain ${chainId}`, address);
    };
    const c = signed();
    expect((await refusal(verifySiwe({ ...c, signature: highOf(c.signature) }, rules, { nonces: c.nonces.store, now, eip1271: noEndpoint }), 'signature')).message).toBe(HIGH);
    // A contract wallet that refuses it: said too; one that accepts it signs in (its own check, EIP-1271).
    const d = signed();
    expect((await refusal(verifySiwe({ ...d, signature: highOf(d.signature) }, rules, { nonces: d.nonces.store, now, eip1271: eip1271Stub(false).verifier }), 'signature')).message)
      .toBe(`${HIGH}; the contract wallet at ${ALICE} on chain 1 did not accept it either (EIP-1271)`);
    const e = signed();
    await expect(verifySiwe({ ...e, signature: highOf(e.signature) }, rules, { nonces: e.nonces.store, now, eip1271: eip1271Stub(true).verifier })).resolves.toMatchObject({ method: 'eip1271' });
    // Normalised (the low-s form), it signs in; another key's low-s signature keeps its message.
    const f = signed();
    await expect(verifySiwe({ ...f, signature: highOf(highOf(f.signature)) }, rules, { nonces: f.nonces.store, now })).resolves.toMatchObject({ method: 'eip191' });
    const g = signed({}, bob);
    const other = await refusal(verifySiwe({ ...g, signature: bob.signMessageSync(g.message) }, rules, { nonces: g.nonces.store, now }), 'signature');
    expect(other.message).toMatch(new RegExp(`^the signature does not belong to ${ALICE} \\(it was made by ${BOB}\\)`));
  });

  test('signature: when the contract-wallet step refuses the signature itself (no endpoint for the chain), the refusal keeps what the account-key check found', async () => {
    const noEndpoint: Eip1271Verifier = async (chainId, address) => {
      throw new SiweVerificationError('signature', `the signature was not made by ${address}'s key (EIP-191); no JSON-RPC endpoint is configured for chain ${chainId}`, address);
    };
    const s = signed();
    const v = Number.parseInt(s.signature.slice(130), 16);
    const err = await refusal(verifySiwe({ ...s, signature: `${s.signature.slice(0, 130)}${(v + 10).toString(16)}` }, rules, { nonces: s.nonces.store, now, eip1271: noEndpoint }), 'signature');
    expect(err.message).toBe(`the signature was not made by ${ALICE}'s key (EIP-191); no JSON-RPC endpoint is configured for chain 1; v is ${v + 10}; an account key's signature ends in v = 27 or 28 (0 or 1 also accepted)`);
    const t = signed({}, bob);
    const other = await refusal(verifySiwe(t, rules, { nonces: t.nonces.store, now, eip1271: noEndpoint }), 'signature');
    expect(other.message).toMatch(new RegExp(`; it was made by ${BOB}$`));
  });

  test('signature: v as 0/1 (some hardware wallets) verifies as an account key\'s', async () => {
    const s = signed();
    const v = Number.parseInt(s.signature.slice(130), 16);
    const zeroOne = `${s.signature.slice(0, 130)}0${v - 27}`;
    await expect(verifySiwe({ ...s, signature: zeroOne }, rules, { nonces: s.nonces.store, now })).resolves.toMatchObject({ address: ALICE, method: 'eip191' });
  });

  test('contract wallet: the EIP-1271 verifier says no → signature', async () => {
    const s = signed({}, bob);
    const eip1271 = eip1271Stub(false);
    const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now, eip1271: eip1271.verifier }), 'signature');
    expect(err.message).toContain('did not accept it (EIP-1271)');
    expect(eip1271.calls).toEqual([[1, ALICE, hashMessage(s.message), s.signature]]);
  });

  test('contract wallet: the EIP-1271 verifier cannot check (no endpoint, RPC failure) → contract-wallet', async () => {
    const s = signed({}, bob);
    const eip1271: Eip1271Verifier = async () => {
      throw new SiweVerificationError('contract-wallet', 'no JSON-RPC endpoint configured for chain 1; contract wallets cannot be verified on it');
    };
    const err = await refusal(verifySiwe(s, rules, { nonces: s.nonces.store, now, eip1271 }), 'contract-wallet');
    expect(err.message).toContain('no JSON-RPC endpoint configured for chain 1');
    expect(err.address).toBe(ALICE);

    const t = signed({}, bob);
    const broken: Eip1271Verifier = async () => {
      throw new Error(`socket hang up while sending ${t.signature}`);
    };
    const wrapped = await refusal(verifySiwe(t, rules, { nonces: t.nonces.store, now, eip1271: broken }), 'contract-wallet');
    expect(wrapped.message).not.toContain(t.signature.slice(2, 20));
  });

  test('contract wallet: the EIP-1271 verifier accepts → method eip1271', async () => {
    const s = signed({}, bob);
    const eip1271 = eip1271Stub(true);
    const out = await verifySiwe(s, rules, { nonces: s.nonces.store, now, eip1271: eip1271.verifier });
    expect(out).toMatchObject({ address: ALICE, sub: `did:pkh:eip155:1:${ALICE}`, method: 'eip1271' });
    // A signature of any length is passed through to the contract (here: not a 65-byte ECDSA signature).
    const t = signed();
    const long = `0x${'ab'.repeat(200)}`;
    await expect(
      verifySiwe({ message: t.message, signature: long, nonceBinding: BINDING }, rules, { nonces: t.nonces.store, now, eip1271: eip1271.verifier }),
    ).resolves.toMatchObject({ method: 'eip1271' });
    expect(eip1271.calls.at(-1)).toEqual([1, ALICE, hashMessage(t.message), long]);
  });
});

describe('verifySiwe: the nonce is burnt by any attempt that gets past parsing', () => {
  test.each<[string, Partial<SiweMessageFields>, SiweRule]>([
    ['issued too long ago', { issuedAt: at(-3600) }, 'issued-at'],
    ['chain', { chainId: 5 }, 'chain-id'],
    ['expired', { issuedAt: at(-200), expirationTime: at(-100) }, 'expiration-time'],
  ])('after a %s refusal, a corrected message with the same nonce is refused as nonce', async (_label, bad, rule) => {
    const attempt = signed(bad);
    await refusal(verifySiwe(attempt, rules, { nonces: attempt.nonces.store, now }), rule);
    const retry = signed();
    await refusal(verifySiwe(retry, rules, { nonces: attempt.nonces.store, now }), 'nonce');
  });

  test('signatureFormProblem: what the grant and the login page refuse as a malformed request, and what they leave to the signature check', () => {
    const form = "the signature must be 0x-prefixed hex bytes (65 bytes for an account key's EIP-191 signature, at most 16384 for a contract wallet's EIP-1271 signature); ";
    const { signature } = signed();
    // The form of a signature: EIP-191's 65 bytes, and the any bytes (up to the limit) EIP-1271 hands to the contract.
    for (const ok of [signature, signature.toUpperCase().replace(/^0X/, '0x'), '0x00', `0x${'ab'.repeat(MAX_SIGNATURE_BYTES)}`]) expect(signatureFormProblem(ok)).toBeUndefined();
    for (const [bad, why] of [
      ['zz', 'it does not start with 0x'],
      [signature.slice(2), 'it does not start with 0x'],
      [`0X${signature.slice(2)}`, 'it does not start with 0x'],
      ['', 'it does not start with 0x'],
      ['0x', 'it has no hex digits after 0x'],
      ['0xzz', 'it holds a character that is not a hex digit (0-9, a-f, A-F) after 0x'],
      [`${signature} `, 'it holds a character that is not a hex digit (0-9, a-f, A-F) after 0x'],
      [signature.slice(0, -1), 'it has an odd number of hex digits (129); each byte is two'],
      [`0x${'ab'.repeat(MAX_SIGNATURE_BYTES + 1)}`, `it is ${MAX_SIGNATURE_BYTES + 1} bytes long`],
      [42, 'it is not a string'],
    ] as const) {
      expect(signatureFormProblem(bad)).toBe(`${form}${why}`);
    }
    // Never quoting what was sent.
    expect(signatureFormProblem(signature.slice(0, -1))).not.toContain(signature.slice(2, 20));
  });

  test('a signature that cannot be one (not hex, odd length, over 16 KiB, not a string) uses neither the nonce nor an attempt', async () => {
    const { message, signature, nonces } = signed();
    for (const bad of ['0xzz', 'ab'.repeat(65), '0x123', `0x${'ab'.repeat(16 * 1024 + 1)}`, 42, undefined]) {
      await refusal(verifySiwe({ message, signature: bad as string, nonceBinding: BINDING }, rules, { nonces: nonces.store, now }), 'signature');
    }
    expect(nonces.consumed).toEqual([]);
    // More refusals than the nonce has attempts, and the real signature still signs in with it.
    await expect(verifySiwe({ message, signature, nonceBinding: BINDING }, rules, { nonces: nonces.store, now })).resolves.toMatchObject({ method: 'eip191' });
  });

  test('a wrong signature also burns the nonce', async () => {
    const attempt = signed({}, bob);
    await refusal(verifySiwe(attempt, rules, { nonces: attempt.nonces.store, now }), 'signature');
    const retry = signed();
    await refusal(verifySiwe(retry, rules, { nonces: attempt.nonces.store, now }), 'nonce');
  });
});
