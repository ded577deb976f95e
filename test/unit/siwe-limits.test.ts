import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { Wallet } from 'ethers';

import type { NonceStore } from '../../adapters/types.js';
import { SCOPE_RESOURCE_PREFIX, scopeResource, signedScopes } from '../../interactions/siwe/binding.js';
import { ParsedMessage } from '@spruceid/siwe-parser';

import { buildSiweMessage, parseSiweMessage } from '../../interactions/siwe/message.js';
import type { SiweMessageFields } from '../../interactions/siwe/message.js';
import { MAX_DOMAIN_LENGTH, MAX_MESSAGE_LENGTH, MAX_RESOURCES, outlineSiweMessage } from '../../interactions/siwe/outline.js';
import { MAX_ATTEMPTS_PER_NONCE, SiweVerificationError, verifySiwe } from '../../interactions/siwe/verify.js';
import type { SiweInput, SiweRule, SiweRules } from '../../interactions/siwe/verify.js';

const alice = new Wallet('0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80');
const ALICE = alice.address;
const NOW = new Date('2025-06-01T12:00:00.000Z');
const now = () => NOW;
const NONCE = 'LimitNonce00000000000001';
const BINDING = 'client:agent-1';

const rules: SiweRules = {
  domains: ['auth.example.com'],
  origins: ['https://auth.example.com'],
  chainIds: [1],
  issuedAtWindowSeconds: 300,
  clockSkewSeconds: 60,
};

/** Nonce store double that records every call, so a test can tell which checks ran before a refusal. */
function recordingStore(bindings: Record<string, string> = { [NONCE]: BINDING }) {
  const calls: string[] = [];
  const consumed = new Set<string>();
  const attempts = new Map<string, number>();
  const store: NonceStore = {
    async issue() {
      throw new Error('not used');
    },
    async boundTo(nonce) {
      calls.push(`boundTo ${nonce}`);
      return bindings[nonce];
    },
    async consume(nonce) {
      calls.push(`consume ${nonce}`);
      if (consumed.has(nonce) || !(nonce in bindings)) return false;
      consumed.add(nonce);
      return true;
    },
    async takeAttempt(key, limit) {
      calls.push(`takeAttempt ${key}`);
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
  return { store, calls, consumed };
}

const fields = (overrides: Partial<SiweMessageFields> = {}): SiweMessageFields => ({
  domain: 'auth.example.com',
  address: ALICE,
  statement: 'Sign in to agentauth.',
  uri: 'https://auth.example.com/',
  chainId: 1,
  nonce: NONCE,
  issuedAt: new Date(NOW.getTime() - 10_000),
  resources: ['https://api.example.com'],
  ...overrides,
});

function input(message: string, extra: Partial<SiweInput> = {}): SiweInput {
  return { message, signature: alice.signMessageSync(message), nonceBinding: BINDING, ...extra };
}

async function refusal(promise: Promise<unknown>, rule: SiweRule): Promise<SiweVerificationError> {
  const err = await promise.then(
    () => new Error(`expected a ${rule} refusal, but verification succeeded`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SiweVerificationError);
  expect((err as SiweVerificationError).rule).toBe(rule);
  return err as SiweVerificationError;
}

/**
 * The largest message a real sign-in plausibly needs: a scheme and a long host with a port, a 200-character statement
 * (what the login page writes at most), a 300-character URI, all optional fields, 8 resource servers with long paths
 * and 12 signed scopes.
 */
function maximalRealisticMessage(): string {
  const domain = 'authorization.agents.eu-central-1.example-enterprise.com:8443';
  return buildSiweMessage({
    scheme: 'https',
    domain,
    address: ALICE,
    statement: `Sign in to ${domain} and allow Example Research Agent to access these resources with the scopes listed below, for this session only. `.padEnd(200, 'x'),
    uri: `https://${domain}/interaction/${'a'.repeat(43)}?${'q'.repeat(300 - 70 - domain.length)}`,
    chainId: 8453,
    nonce: NONCE,
    issuedAt: NOW,
    expirationTime: new Date(NOW.getTime() + 120_000),
    notBefore: NOW,
    requestId: 'b'.repeat(43),
    resources: [
      ...Array.from({ length: 8 }, (_, i) => `https://api-${i}.services.example-enterprise.com/mcp/v2/tenants/acme-corporation/tools`),
      ...['read', 'write', 'admin', 'files:read', 'files:write', 'mcp:tools', 'mcp:prompts', 'mcp:resources', 'calendar.read', 'calendar.write', 'mail.send', 'offline_access'].map(scopeResource),
    ],
  });
}

describe('message size cap', () => {
  test(`a maximal realistic message fits well under the ${MAX_MESSAGE_LENGTH}-character cap and parses`, () => {
    const message = maximalRealisticMessage();
    expect(message.length).toBeLessThan(MAX_MESSAGE_LENGTH * 0.6);
    expect(parseSiweMessage(message).resources).toHaveLength(20);
  });

  test('an over-cap message is refused before the parser or the nonce store sees it', async () => {
    // Well-formed but for its length: only the cap can refuse it, and the refusal must say so.
    const message = buildSiweMessage(fields()).replace('Sign in to agentauth.', 'a'.repeat(MAX_MESSAGE_LENGTH));
    const { store, calls } = recordingStore();
    const err = await refusal(verifySiwe(input(message), rules, { nonces: store, now }), 'message-format');
    expect(err.message).toBe(`the message is ${message.length} characters long; at most ${MAX_MESSAGE_LENGTH} are accepted`);
    expect(calls).toEqual([]);
    // Also when the message would not parse anyway: the size answer comes first, not the grammar's.
    expect(() => parseSiweMessage('x'.repeat(MAX_MESSAGE_LENGTH + 1))).toThrow(/at most 4096 are accepted/);
  });

  test('a message of exactly the cap is accepted by the size check', () => {
    const base = buildSiweMessage(fields());
    const message = base.replace('Sign in to agentauth.', 'a'.repeat(MAX_MESSAGE_LENGTH - base.length + 'Sign in to agentauth.'.length));
    expect(message.length).toBe(MAX_MESSAGE_LENGTH);
    expect(parseSiweMessage(message).statement).toHaveLength(MAX_MESSAGE_LENGTH - base.length + 21);
  });
});

describe('line structure (cheap, before any parse or storage access)', () => {
  const good = buildSiweMessage(fields());
  const cases: Array<[string, string, RegExp]> = [
    ['CRLF line ends', good.replaceAll('\n', '\r\n'), /printable ASCII characters and LF/],
    ['non-ASCII text', good.replace('Sign in', 'Sígn in'), /printable ASCII/],
    ['a trailing newline', `${good}\n`, /^the message ends with a newline: an EIP-4361 message ends with its last line; remove the trailing newline$/],
    ['a statement with a double quote', good.replace('Sign in to agentauth.', 'Sign in to "agentauth".'), /^line 4: the statement holds "\\"", which EIP-4361 does not allow in a statement \(only letters, digits, spaces and/],
    ['a statement with a percent sign', good.replace('Sign in to agentauth.', 'Sign in 100%'), /^line 4: the statement holds "%"/],
    ['a statement with a brace', good.replace('Sign in to agentauth.', 'Sign in {now}'), /^line 4: the statement holds "\{"/],
    ['no preamble', good.replace(' wants you to sign in', ' would like you to sign in'), /line 1: expected "<domain> wants you/],
    ['a bad scheme', good.replace('auth.example.com wants', '1http://auth.example.com wants'), /line 1: expected a URI scheme/],
    ['an overlong domain', good.replace('auth.example.com wants', `${'a'.repeat(MAX_DOMAIN_LENGTH + 1)} wants`), /line 1: expected a domain of 1 to 260/],
    ['a lowercase-only check of the address line', good.replace(ALICE, 'not-an-address'), /line 2: expected an 0x-prefixed 20-byte hex address/],
    ['a two-line statement', good.replace('Sign in to agentauth.', 'Sign in\nto agentauth.'), /line 5: expected an empty line after the statement/],
    ['fields out of order', good.replace(/Version: 1\nChain ID: 1/, 'Chain ID: 1\nVersion: 1'), /line 7: expected "Version: \.\.\."/],
    ['a missing Nonce line', good.replace(`Nonce: ${NONCE}\n`, ''), /line 9: expected "Nonce: \.\.\."/],
    ['a short nonce', good.replace(NONCE, 'abc'), /the nonce must be 8 to 64 letters and digits/],
    ['a URI with a space', good.replace('URI: https://auth.example.com/', 'URI: https://auth.example.com/ x'), /the URI must be non-empty and contain no spaces/],
    ['an unknown trailing field', `${good.replace(/\nResources:[\s\S]*$/, '')}\nFoo: bar`, /line 11: expected "Expiration Time: "/],
    ['too many resources', good + Array.from({ length: MAX_RESOURCES }, (_, i) => `\n- https://r${i}.example.com`).join(''), /line 44: at most 32 resources/],
  ];

  test.each(cases)('%s: message-format, and no nonce lookup', async (_label, message, reason) => {
    const { store, calls } = recordingStore();
    const err = await refusal(verifySiwe(input(message), rules, { nonces: store, now }), 'message-format');
    expect(err.message).toMatch(reason);
    expect(calls).toEqual([]);
  });

  test('every character the grammar allows in a statement passes the outline and the parse', () => {
    const allowed = "Aa Zz 09 !#$&'()*+,-./:;=?@[]_~";
    const message = buildSiweMessage(fields({ statement: allowed }));
    expect(() => outlineSiweMessage(message)).not.toThrow();
    // And every printable ASCII character the outline refuses, the parser refuses too.
    for (let code = 32; code < 127; code += 1) {
      const ch = String.fromCharCode(code);
      const text = good.replace('Sign in to agentauth.', `Sign in ${ch} now`);
      let outlined = true;
      try {
        outlineSiweMessage(text);
      } catch {
        outlined = false;
      }
      // The grammar itself (siwe-parser), not parseSiweMessage, which runs the outline first.
      let parsed = true;
      try {
        new ParsedMessage(text);
      } catch {
        parsed = false;
      }
      expect({ ch, outlined }).toEqual({ ch, outlined: parsed });
    }
  });

  test('the outline reads the fields the cheap checks use', () => {
    const message = buildSiweMessage(fields({ scheme: 'https', requestId: 'uid-1', resources: ['https://a.example.com', scopeResource('read')] }));
    expect(outlineSiweMessage(message)).toEqual({
      scheme: 'https',
      domain: 'auth.example.com',
      address: ALICE,
      uri: 'https://auth.example.com/',
      nonce: NONCE,
      requestId: 'uid-1',
      resources: ['https://a.example.com', 'urn:agentauth:scope:read'],
    });
    const bare = buildSiweMessage(fields({ statement: undefined, resources: undefined }) as SiweMessageFields);
    expect(outlineSiweMessage(bare)).toEqual({ domain: 'auth.example.com', address: ALICE, uri: 'https://auth.example.com/', nonce: NONCE, resources: [] });
  });
});

describe('cheap checks come before the expensive ones', () => {
  test('domain and URI are refused from the lines alone: no nonce lookup, nothing consumed', async () => {
    for (const [change, rule] of [[{ domain: 'evil.example.net' }, 'domain'], [{ uri: 'https://evil.example.net/' }, 'uri']] as const) {
      const { store, calls } = recordingStore();
      await refusal(verifySiwe(input(buildSiweMessage(fields(change))), rules, { nonces: store, now }), rule);
      expect(calls).toEqual([]);
    }
  });

  test('an unknown nonce is refused before the grammar parse (a message the parser would refuse gets the nonce answer)', async () => {
    const message = buildSiweMessage(fields()).replace('Chain ID: 1', 'Chain ID: one');
    const unknown = recordingStore({});
    await refusal(verifySiwe(input(message), rules, { nonces: unknown.store, now }), 'nonce');
    expect(unknown.calls).toEqual([`boundTo ${NONCE}`]);
    // With the nonce known, the same message reaches the parser, which refuses it.
    const known = recordingStore();
    await refusal(verifySiwe(input(message), rules, { nonces: known.store, now }), 'message-format');
    expect(known.calls).toEqual([`boundTo ${NONCE}`, `takeAttempt nonce:${NONCE}`]);
  });

  test('request-id: a message naming another sign-in request is refused before the nonce is looked up', async () => {
    const message = buildSiweMessage(fields({ requestId: 'other-interaction' }));
    const { store, calls } = recordingStore();
    const err = await refusal(verifySiwe(input(message, { requestId: 'this-interaction' }), rules, { nonces: store, now }), 'request-id');
    expect(err.message).toContain('names another sign-in request than this one (this-interaction)');
    expect(calls).toEqual([]);
  });
});

describe('nonce binding', () => {
  test('a nonce issued for another client is refused as nonce-binding, and neither consumed nor charged an attempt', async () => {
    const { store, calls, consumed } = recordingStore({ [NONCE]: 'client:agent-2' });
    const err = await refusal(verifySiwe(input(buildSiweMessage(fields())), rules, { nonces: store, now }), 'nonce-binding');
    expect(err.message).toBe(`nonce ${NONCE} was issued for another client, not for client agent-1; a nonce is redeemed only where it was requested`);
    expect(calls).toEqual([`boundTo ${NONCE}`]);
    expect(consumed.size).toBe(0);
  });

  test('a login-page nonce is refused at the grant, and a grant nonce on the login page', async () => {
    const page = recordingStore({ [NONCE]: 'interaction:uid-1' });
    let err = await refusal(verifySiwe(input(buildSiweMessage(fields())), rules, { nonces: page.store, now }), 'nonce-binding');
    expect(err.message).toContain('was issued for another sign-in request, not for client agent-1');
    const grant = recordingStore();
    err = await refusal(verifySiwe(input(buildSiweMessage(fields()), { nonceBinding: 'interaction:uid-1' }), rules, { nonces: grant.store, now }), 'nonce-binding');
    expect(err.message).toContain('was issued for another client, not for this sign-in request');
  });
});

describe('attempts per nonce', () => {
  test(`${MAX_ATTEMPTS_PER_NONCE} malformed attempts spend the nonce: the next attempts, even valid ones, are refused`, async () => {
    const { store, consumed } = recordingStore();
    const malformed = buildSiweMessage(fields()).replace('Chain ID: 1', 'Chain ID: one');
    for (let i = 0; i < MAX_ATTEMPTS_PER_NONCE; i += 1) {
      await refusal(verifySiwe(input(malformed), rules, { nonces: store, now }), 'message-format');
    }
    expect(consumed.size).toBe(0);
    for (let i = 0; i < 3; i += 1) {
      const err = await refusal(verifySiwe(input(buildSiweMessage(fields())), rules, { nonces: store, now }), 'attempts');
      expect(err.message).toBe(`nonce ${NONCE} has been tried 5 times and is now used up; request a new nonce and sign again`);
    }
    // Spent by its count (kept longer than any nonce lives), not consumed: see the next test for why.
    expect(consumed.size).toBe(0);
  });

  test('an attempt refused for the count does not take the nonce from a valid attempt already past the count', async () => {
    const { store } = recordingStore();
    const malformed = buildSiweMessage(fields()).replace('Chain ID: 1', 'Chain ID: one');
    for (let i = 0; i < MAX_ATTEMPTS_PER_NONCE - 1; i += 1) await refusal(verifySiwe(input(malformed), rules, { nonces: store, now }), 'message-format');
    // The fifth attempt (valid) is held just before it consumes the nonce; a sixth arrives and is refused meanwhile.
    const consume = store.consume.bind(store);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const reached = new Promise<void>((r) => (entered = r));
    let first = true;
    store.consume = async (nonce) => {
      if (first) {
        first = false;
        entered();
        await held;
      }
      return consume(nonce);
    };
    const valid = verifySiwe(input(buildSiweMessage(fields())), rules, { nonces: store, now });
    await reached;
    await refusal(verifySiwe(input(buildSiweMessage(fields())), rules, { nonces: store, now }), 'attempts');
    release();
    await expect(valid).resolves.toMatchObject({ address: ALICE });
  });

  test('fewer failures leave room: a valid message after 4 malformed ones signs in', async () => {
    const { store } = recordingStore();
    const malformed = buildSiweMessage(fields()).replace('Chain ID: 1', 'Chain ID: one');
    for (let i = 0; i < MAX_ATTEMPTS_PER_NONCE - 1; i += 1) await refusal(verifySiwe(input(malformed), rules, { nonces: store, now }), 'message-format');
    await expect(verifySiwe(input(buildSiweMessage(fields())), rules, { nonces: store, now })).resolves.toMatchObject({ address: ALICE });
  });
});

describe('signed scopes', () => {
  test('scopes are signed as urn:agentauth:scope: resources; a scope the message does not sign is refused as scope', async () => {
    const message = buildSiweMessage(fields({ resources: ['https://api.example.com', scopeResource('read')] }));
    const ok = recordingStore();
    const out = await verifySiwe(input(message, { requiredResources: ['https://api.example.com'], requiredScopes: ['read'] }), rules, { nonces: ok.store, now });
    expect(out.scopes).toEqual(['read']);

    const wider = recordingStore();
    const err = await refusal(
      verifySiwe(input(message, { requiredResources: ['https://api.example.com'], requiredScopes: ['read', 'write'] }), rules, { nonces: wider.store, now }),
      'scope',
    );
    expect(err.message).toBe('the message does not sign scope write: each scope granted must be listed in Resources as urn:agentauth:scope:<scope>; it signs read');
  });

  test('scope names outside URI characters round-trip through percent-encoding; the statement signs nothing', () => {
    expect(scopeResource('mcp:tools')).toBe('urn:agentauth:scope:mcp:tools');
    expect(scopeResource('a[b]{c}')).toBe('urn:agentauth:scope:a%5Bb%5D%7Bc%7D');
    expect(signedScopes([scopeResource('a[b]{c}'), scopeResource('read'), 'https://api.example.com', `${SCOPE_RESOURCE_PREFIX}%zz`])).toEqual(['a[b]{c}', 'read']);
    const message = buildSiweMessage(fields({ statement: 'Grant scopes read write admin.', resources: ['https://api.example.com'] }));
    expect(signedScopes(parseSiweMessage(message).resources)).toEqual([]);
  });
});

/**
 * Parse cost of the worst inputs we could craft at the cap (shapes that make the ABNF parser work hardest per
 * character: long URI-like text in each field, IPv6-like hosts, many short resources). Timing is recorded to
 * test-results/siwe-parse-worst.json for the docs, not asserted: what this test checks is that every such input is
 * within the cap, reaches the parser (passes the line checks) and gets an answer rather than an exception.
 */
describe('worst-case inputs under the cap', () => {
  const head = (o: { domain?: string; uri?: string; statement?: string; requestId?: string; resources?: string[] }) => {
    const lines = [
      `${o.domain ?? 'auth.example.com'} wants you to sign in with your Ethereum account:`, ALICE, '', o.statement ?? 'Hi', '',
      `URI: ${o.uri ?? 'https://auth.example.com/'}`, 'Version: 1', 'Chain ID: 1', `Nonce: ${NONCE}`, 'Issued At: 2025-06-01T12:00:00.000Z',
    ];
    if (o.requestId !== undefined) lines.push(`Request ID: ${o.requestId}`);
    if (o.resources) lines.push('Resources:', ...o.resources.map((r) => `- ${r}`));
    return lines.join('\n');
  };
  const fill = (prefix: (body: string) => string, unit: string): string => {
    const empty = prefix('').length;
    return prefix(unit.repeat(Math.floor((MAX_MESSAGE_LENGTH - empty) / unit.length)));
  };
  const shapes: Record<string, string> = {
    'URI path a/a/...': fill((b) => head({ uri: `https://a/${b}` }), 'a/'),
    'URI path ////': fill((b) => head({ uri: `https://a/${b}` }), '/'),
    'URI query ?/?/': fill((b) => head({ uri: `https://a/?${b}` }), '?/'),
    'URI host 1.1.1...': fill((b) => head({ uri: `https://${b}` }), '1.'),
    'URI IPv6-like [ffff:...': fill((b) => head({ uri: `https://[${b}` }), 'ffff:'),
    'domain 1.1.1... (max length), URI path a/a/...': fill((b) => head({ domain: '1.'.repeat(MAX_DOMAIN_LENGTH / 2), uri: `https://a/${b}` }), 'a/'),
    'resource path a/a/...': fill((b) => head({ resources: [`https://a/${b}`] }), 'a/'),
    'resources 32 long IPv6-like': head({ resources: Array.from({ length: MAX_RESOURCES }, () => `https://[${'ffff:'.repeat(20)}`) }),
    'Request ID %41%41...': fill((b) => head({ requestId: b }), '%41'),
    'statement': fill((b) => head({ statement: b }), 'a '),
  };

  test('each crafted input is within the cap, passes the line checks and gets an answer from the parser', () => {
    const results: Record<string, { length: number; ms: number; accepted: boolean }> = {};
    for (const [name, message] of Object.entries(shapes)) {
      expect(message.length).toBeLessThanOrEqual(MAX_MESSAGE_LENGTH);
      expect(() => outlineSiweMessage(message)).not.toThrow();
      let accepted = false;
      let best = Infinity;
      for (let i = 0; i < 5; i += 1) {
        const start = process.hrtime.bigint();
        try {
          parseSiweMessage(message);
          accepted = true;
        } catch (err) {
          expect(err).toBeInstanceOf(SiweVerificationError);
        }
        best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e6);
      }
      results[name] = { length: message.length, ms: Math.round(best * 100) / 100, accepted };
    }
    const dir = join(process.cwd(), 'test-results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'siwe-parse-worst.json'), `${JSON.stringify(results, null, 2)}\n`);
  });
});
