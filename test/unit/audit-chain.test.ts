import type { AuditRecord } from '../../adapters/types.js';
import {
  ChainVerifier,
  GENESIS_HASH,
  InvalidAuditEventError,
  canonicalJson,
  chainRecords,
  computeHash,
  normalizeEvent,
  verifyChain,
} from '../../server/audit/chain.js';
import type { AuditEventInput, ChainProblem } from '../../server/audit/chain.js';

const HEX64 = /^[0-9a-f]{64}$/;

function clock(start = Date.parse('2025-01-01T00:00:00.000Z')): () => Date {
  let t = start;
  return () => new Date((t += 1000));
}

function events(n: number): AuditEventInput[] {
  return Array.from({ length: n }, (_, i) => ({
    type: i % 2 ? 'token.issued' : 'client.registered',
    client_id: `client-${i + 1}`,
    ...(i % 3 === 0 ? { sub: `user-${i + 1}` } : {}),
    details: { n: i + 1, scopes: ['read', 'write'], aud: 'https://api.example.com' },
  }));
}

/** A fresh valid chain of n records. */
function chain(n = 6): AuditRecord[] {
  return chainRecords(undefined, events(n), clock());
}

const copy = (records: AuditRecord[]): AuditRecord[] => structuredClone(records);
const rehash = (r: AuditRecord): AuditRecord => ({ ...r, hash: computeHash(r) });
const kinds = (problems: ChainProblem[]) => problems.map((p) => [p.seq, p.kind]);

describe('canonicalJson', () => {
  test('sorts keys at every depth, keeps array order, no whitespace', () => {
    const a = { b: 1, a: { d: [3, { z: 1, y: 2 }], c: 'x' }, e: null, f: true };
    const b = { f: true, e: null, a: { c: 'x', d: [3, { y: 2, z: 1 }] }, b: 1 };
    expect(canonicalJson(a)).toBe('{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1,"e":null,"f":true}');
    expect(canonicalJson(b)).toBe(canonicalJson(a));
    expect(canonicalJson([2, 1])).not.toBe(canonicalJson([1, 2]));
  });

  test('strings are JSON-escaped, keys too; numbers as JSON writes them', () => {
    expect(canonicalJson({ 'k"ey': 'line\nbreak "q" é \u2028' })).toBe(JSON.stringify({ 'k"ey': 'line\nbreak "q" é \u2028' }));
    expect(canonicalJson({ n: 1e21, m: -0, f: 0.1 })).toBe('{"f":0.1,"m":0,"n":1e+21}');
  });

  test('is the same after a JSON round trip (how MongoDB stores details)', () => {
    const value = { 'https://api.example.com': { scope: 'a b' }, list: [{ b: 2, a: 1 }], u: undefined };
    expect(canonicalJson(JSON.parse(JSON.stringify(value)))).toBe(canonicalJson(value));
    expect(canonicalJson(value)).toBe('{"https://api.example.com":{"scope":"a b"},"list":[{"a":1,"b":2}]}');
  });

  test('the same object twice is fine; a cycle is not', () => {
    const shared = { x: 1 };
    expect(canonicalJson({ a: shared, b: shared })).toBe('{"a":{"x":1},"b":{"x":1}}');
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(/\$\.self: circular/);
  });

  test.each([
    ['undefined', undefined],
    ['undefined in an array', [1, undefined]],
    ['a function', { f: () => 1 }],
    ['a symbol', { s: Symbol('x') }],
    ['a bigint', { n: 10n }],
    ['NaN', { n: Number.NaN }],
    ['Infinity', { n: Number.POSITIVE_INFINITY }],
    ['a Date', { at: new Date() }],
    ['a Map', { m: new Map() }],
    ['a class instance', { e: new Error('x') }],
  ])('rejects %s', (_label, value) => {
    expect(() => canonicalJson(value)).toThrow(TypeError);
  });
});

describe('computeHash', () => {
  const base = chain(1)[0]!;

  test('hex SHA-256 over the record without its hash, independent of key order', () => {
    const { hash, ...rest } = base;
    expect(computeHash(rest)).toBe(hash);
    expect(hash).toMatch(HEX64);
    const reordered = { details: { ...rest.details }, prev_hash: rest.prev_hash, sub: rest.sub, client_id: rest.client_id, type: rest.type, time: rest.time, seq: rest.seq };
    expect(computeHash(reordered)).toBe(hash);
    expect(computeHash({ ...rest, details: { aud: 'https://api.example.com', scopes: ['read', 'write'], n: 1 } })).toBe(hash);
  });

  test('an absent optional field hashes the same whether missing or undefined', () => {
    const { sub: _sub, ...withoutSub } = base;
    expect(computeHash({ ...withoutSub, sub: undefined })).toBe(computeHash(withoutSub));
  });

  test.each([
    ['seq', { seq: 2 }],
    ['time', { time: '2025-01-01T00:00:09.000Z' }],
    ['type', { type: 'token.revoked' }],
    ['client_id', { client_id: 'other' }],
    ['sub', { sub: 'other' }],
    ['details', { details: { n: 2, scopes: ['read', 'write'], aud: 'https://api.example.com' } }],
    ['prev_hash', { prev_hash: 'f'.repeat(64) }],
  ])('changes when %s changes', (_field, change) => {
    expect(computeHash({ ...base, ...change })).not.toBe(base.hash);
  });
});

describe('chainRecords: the hash of a new record', () => {
  // chainRecords writes the hashed text out directly (one serialisation of the details per event); it must be the
  // very text computeHash derives from the stored record, or records would not verify.
  const awkward: AuditEventInput[] = [
    { type: 'token.issued', details: {} },
    { type: 'token.issued', client_id: 'c"1\\', details: { z: 1, a: [1, { y: null, b: true }], 'é': 'ü\u2028\n' } },
    { type: 'wallet.signed_in', sub: 'did:pkh:eip155:1:0xAbC', details: { nested: { deeper: { n: -0.5e-7 } }, emoji: '🔑' } },
    { type: 'client.registered', client_id: 'x', sub: 'y', details: { undefinedMember: undefined, '': 'empty key', 'a b': [[]] } },
  ];

  test('equals computeHash of the stored fields, for raw and for normalized events', () => {
    for (const input of [awkward, awkward.map((e) => normalizeEvent(e))]) {
      const records = chainRecords(undefined, input, clock());
      for (const r of records) expect(r.hash).toBe(computeHash(r));
      expect(verifyChain(records).ok).toBe(true);
    }
  });

  test('records hold only the stored fields (no working copies such as the canonical details text)', () => {
    for (const r of chainRecords(undefined, awkward.map((e) => normalizeEvent(e)), clock())) {
      expect(Object.keys(r).sort()).toEqual(expect.arrayContaining(['details', 'hash', 'prev_hash', 'seq', 'time', 'type']));
      expect(Object.keys(r).filter((k) => !['seq', 'time', 'type', 'client_id', 'sub', 'details', 'prev_hash', 'hash'].includes(k))).toEqual([]);
    }
  });
});

describe('chainRecords', () => {
  test('from an empty log: seqs 1..n, genesis first, each linked to the one before, times from the clock', () => {
    const records = chainRecords(undefined, events(4), clock());
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    expect(records[0]!.prev_hash).toBe(GENESIS_HASH);
    expect(GENESIS_HASH).toBe('0'.repeat(64));
    for (let i = 1; i < records.length; i += 1) expect(records[i]!.prev_hash).toBe(records[i - 1]!.hash);
    for (const r of records) expect(r.hash).toBe(computeHash(r));
    expect(records.map((r) => r.time)).toEqual(['2025-01-01T00:00:01.000Z', '2025-01-01T00:00:02.000Z', '2025-01-01T00:00:03.000Z', '2025-01-01T00:00:04.000Z']);
    expect(records[0]).toMatchObject({ type: 'client.registered', client_id: 'client-1', sub: 'user-1', details: { n: 1 } });
  });

  test('continues after a head', () => {
    const first = chain(3);
    const more = chainRecords(first[2], [{ type: 'token.revoked', details: { jti: 'j1' } }], clock());
    expect(more).toHaveLength(1);
    expect(more[0]).toMatchObject({ seq: 4, prev_hash: first[2]!.hash, type: 'token.revoked', details: { jti: 'j1' } });
    expect(verifyChain([...first, ...more])).toMatchObject({ ok: true, checked: 4, headSeq: 4, headHash: more[0]!.hash });
  });

  test('absent fields are absent keys; details are copied, default {}', () => {
    const input = { type: 'key.rotated', details: { kid: 'k1', nested: { a: 1 } } };
    const [r] = chainRecords(undefined, [input, { type: 'key.retired' }], clock());
    expect(Object.keys(r!)).toEqual(['seq', 'time', 'type', 'details', 'prev_hash', 'hash']);
    input.details.nested.a = 2;
    expect(r!.details).toEqual({ kid: 'k1', nested: { a: 1 } });
    expect(chainRecords(undefined, [{ type: 'key.retired' }], clock())[0]!.details).toEqual({});
  });

  test.each([
    ['an empty type', { type: '' }],
    ['a type without a dot', { type: 'token' }],
    ['a type with capitals', { type: 'Token.issued' }],
    ['a type with a trailing dot', { type: 'token.' }],
    ['a non-string type', { type: 42 }],
    ['non-JSON details', { type: 'token.issued', details: { at: new Date() } }],
    ['array details', { type: 'token.issued', details: [1] }],
    ['an empty client_id', { type: 'token.issued', client_id: '' }],
    ['huge details', { type: 'token.issued', details: { blob: 'x'.repeat(40_000) } }],
  ])('refuses %s', (_label, event) => {
    expect(() => chainRecords(undefined, [event as AuditEventInput], clock())).toThrow(InvalidAuditEventError);
  });

  test('accepts dotted types with underscores', () => {
    expect(chainRecords(undefined, [{ type: 'client.secret_rotated' }, { type: 'a.b.c_d' }], clock())).toHaveLength(2);
  });
});

describe('verifyChain', () => {
  test('a valid chain passes and reports its head', () => {
    const records = chain(6);
    expect(verifyChain(records)).toEqual({ ok: true, checked: 6, headSeq: 6, headHash: records[5]!.hash, problems: [] });
  });

  test('an empty log passes with no head', () => {
    expect(verifyChain([])).toEqual({ ok: true, checked: 0, problems: [] });
  });

  test('edited details, hash left as is → edited at that seq, nothing else', () => {
    const records = copy(chain());
    records[2]!.details = { ...records[2]!.details, n: 999 };
    const result = verifyChain(records);
    expect(result.ok).toBe(false);
    expect(kinds(result.problems)).toEqual([[3, 'edited']]);
  });

  test('edited type, hash left as is → edited', () => {
    const records = copy(chain());
    records[3]!.type = 'token.revoked';
    expect(kinds(verifyChain(records).problems)).toEqual([[4, 'edited']]);
  });

  test('edited client_id removed, hash left as is → edited', () => {
    const records = copy(chain());
    delete records[1]!.client_id;
    expect(kinds(verifyChain(records).problems)).toEqual([[2, 'edited']]);
  });

  test('edited with its hash recomputed → caught by the next link', () => {
    const records = copy(chain());
    records[2] = rehash({ ...records[2]!, details: { n: 999 } });
    const result = verifyChain(records);
    expect(kinds(result.problems)).toEqual([[4, 'broken-link']]);
    expect(result.problems[0]!.detail).toContain('seq 3');
  });

  test('the newest record edited and re-hashed is invisible to the chain: only the head changes', () => {
    const original = chain();
    const records = copy(original);
    records[5] = rehash({ ...records[5]!, details: { n: 999 } });
    const result = verifyChain(records);
    expect(result.ok).toBe(true);
    expect(result.headHash).not.toBe(original[5]!.hash);
  });

  test('a deleted record → deleted with its seq', () => {
    const records = chain();
    const result = verifyChain([...records.slice(0, 2), ...records.slice(3)]);
    expect(kinds(result.problems)).toEqual([[3, 'deleted']]);
  });

  test('several deleted records, and the first one', () => {
    const records = chain(8);
    expect(kinds(verifyChain([...records.slice(0, 2), ...records.slice(5)]).problems)).toEqual([[3, 'deleted']]);
    expect(verifyChain([...records.slice(0, 2), ...records.slice(5)]).problems[0]!.detail).toContain('3–5');
    expect(kinds(verifyChain(records.slice(1)).problems)).toEqual([[1, 'deleted']]);
  });

  test('deleting the newest records leaves a valid chain: the reported head is what shows it', () => {
    const records = chain();
    const result = verifyChain(records.slice(0, 4));
    expect(result).toMatchObject({ ok: true, headSeq: 4, headHash: records[3]!.hash });
  });

  test('a deleted record with the rest renumbered (not re-hashed) → deleted', () => {
    const records = chain();
    const renumbered = [...records.slice(0, 2), ...records.slice(3).map((r) => ({ ...r, seq: r.seq - 1 }))];
    const result = verifyChain(renumbered);
    expect(result.problems.filter((p) => p.kind === 'deleted').map((p) => p.seq)).toEqual([3]);
    expect(result.problems.filter((p) => p.kind === 'edited').map((p) => p.seq)).toEqual([3, 4, 5]);
  });

  test('a forged record spliced in without renumbering (a second seq 3) → inserted', () => {
    const records = chain();
    const forged = rehash({ ...records[2]!, details: { forged: true } });
    const result = verifyChain([...records.slice(0, 2), forged, ...records.slice(2)]);
    expect(kinds(result.problems)).toEqual([[3, 'inserted']]);
  });

  test('a forged record spliced in with the rest renumbered and re-hashed → inserted (prev_hash skips it)', () => {
    const records = chain();
    const forged = rehash({ ...records[2]!, type: 'client.deleted', details: { forged: true }, prev_hash: records[1]!.hash });
    const shifted = records.slice(2).map((r) => rehash({ ...r, seq: r.seq + 1 }));
    const result = verifyChain([...records.slice(0, 2), forged, ...shifted]);
    expect(result.ok).toBe(false);
    expect(result.problems[0]).toMatchObject({ seq: 3, kind: 'inserted' });
    expect(result.problems[0]!.detail).toContain('seq 4 links past it to seq 2');
    expect(result.problems.some((p) => p.kind === 'edited')).toBe(false);
  });

  test('a forged record spliced in with the rest renumbered, not re-hashed → inserted', () => {
    const records = chain();
    const forged = rehash({ ...records[2]!, details: { forged: true }, prev_hash: records[1]!.hash });
    const shifted = records.slice(2).map((r) => ({ ...r, seq: r.seq + 1 }));
    const result = verifyChain([...records.slice(0, 2), forged, ...shifted]);
    expect(result.problems.some((p) => p.kind === 'inserted')).toBe(true);
    expect(result.problems.filter((p) => p.kind === 'edited').map((p) => p.seq)).toEqual([4, 5, 6, 7]);
  });

  test('two records in swapped order → reordered, nothing else', () => {
    const records = chain();
    const swapped = [records[0]!, records[1]!, records[3]!, records[2]!, records[4]!, records[5]!];
    const result = verifyChain(swapped);
    expect(kinds(result.problems)).toEqual([[3, 'reordered']]);
  });

  test('a record moved far back → reordered, nothing deleted', () => {
    const records = chain(8);
    const moved = [...records.slice(0, 1), ...records.slice(2), records[1]!];
    expect(kinds(verifyChain(moved).problems)).toEqual([[2, 'reordered']]);
  });

  test('two stored events swapped between seqs (the store orders by seq) → reordered', () => {
    const records = chain();
    const a = records[2]!;
    const b = records[3]!;
    const swapped = [...records.slice(0, 2), { ...b, seq: 3 }, { ...a, seq: 4 }, ...records.slice(4)];
    const result = verifyChain(swapped);
    expect(result.problems.filter((p) => p.kind === 'reordered').map((p) => p.seq)).toEqual([4]);
    expect(result.problems.some((p) => p.kind === 'broken-link' || p.kind === 'inserted' || p.kind === 'deleted')).toBe(false);
  });

  test('a chain that does not start at genesis → broken-link at seq 1', () => {
    // The whole chain rebuilt consistently on top of a made-up start.
    const records: AuditRecord[] = [];
    let prev = 'a'.repeat(64);
    for (const r of chain()) {
      const relinked = rehash({ ...r, prev_hash: prev });
      records.push(relinked);
      prev = relinked.hash;
    }
    expect(kinds(verifyChain(records).problems)).toEqual([[1, 'broken-link']]);
  });

  test('a field agentauth does not write, or a malformed hash → edited', () => {
    const extra = copy(chain());
    (extra[1] as unknown as Record<string, unknown>).note = 'x';
    expect(kinds(verifyChain(extra).problems)).toEqual([[2, 'edited']]);
    const badHash = copy(chain());
    badHash[1]!.hash = 'nope';
    const result = verifyChain(badHash);
    expect(result.problems[0]).toMatchObject({ seq: 2, kind: 'edited' });
    const noSeq = copy(chain());
    (noSeq[1] as unknown as Record<string, unknown>).seq = '2';
    expect(verifyChain(noSeq).ok).toBe(false);
  });

  test('a segment verifies from a known start; a wrong start hash is a broken link', () => {
    const records = chain(8);
    expect(verifyChain(records.slice(4), { startSeq: 5, startPrevHash: records[3]!.hash }).ok).toBe(true);
    expect(verifyChain(records.slice(4), { startSeq: 5 }).ok).toBe(true);
    expect(kinds(verifyChain(records.slice(4), { startSeq: 5, startPrevHash: records[2]!.hash }).problems)).toEqual([[5, 'broken-link']]);
    expect(kinds(verifyChain(records.slice(5), { startSeq: 5 }).problems)).toEqual([[5, 'deleted']]);
  });

  test('a long log streams through the verifier in bounded memory and a tamper deep inside is still found', () => {
    const records = chainRecords(undefined, Array.from({ length: 12_000 }, (_, i) => ({ type: 'token.issued', details: { i } })), clock());
    const verifier = new ChainVerifier();
    for (const r of records) verifier.push(r);
    expect(verifier.result()).toMatchObject({ ok: true, checked: 12_000, headSeq: 12_000 });

    const tampered = copy(records);
    tampered[10_500] = rehash({ ...tampered[10_500]!, details: { i: -1 } });
    tampered.splice(11_000, 1);
    expect(kinds(verifyChain(tampered).problems)).toEqual([
      [10_502, 'broken-link'],
      [11_001, 'deleted'],
    ]);
  });
});

describe('writer chains', () => {
  test('server processes get <host>:<port>#<worker>, the CLI <host>#cli, a configured id wins; all valid chain ids', async () => {
    const { writerChain } = await import('../../server/audit/writer-chain.js');
    const { AUDIT_CHAIN_ID } = await import('../../adapters/types.js');
    const server = writerChain({ server: { port: 3000 } });
    const cli = writerChain('cli');
    expect(server).toMatch(/^[A-Za-z0-9._-]+:3000#0$/);
    expect(cli).toMatch(/^[A-Za-z0-9._-]+#cli$/);
    expect(writerChain({ server: { port: 3001 } })).not.toBe(server);
    expect(writerChain({ server: { port: 3000 } }, 'api-1')).toBe('api-1');
    for (const id of [server, cli]) expect(id).toMatch(AUDIT_CHAIN_ID);
  });

  test('under --workers each worker has a chain of its own, AGENTAUTH_AUDIT_CHAIN set or not', async () => {
    const { writerChain } = await import('../../server/audit/writer-chain.js');
    const { AUDIT_CHAIN_ID } = await import('../../adapters/types.js');
    expect(writerChain({ server: { port: 3000 } }, undefined, 2)).toMatch(/^[A-Za-z0-9._-]+:3000#2$/);
    // All workers read one AGENTAUTH_AUDIT_CHAIN: each appended to the same chain, and all but one lost every race for its head.
    expect([1, 2].map((w) => writerChain({ server: { port: 3000 } }, 'api-1', w))).toEqual(['api-1#1', 'api-1#2']);
    const long = 'a'.repeat(100);
    const [w1, w12] = [1, 12].map((w) => writerChain({ server: { port: 3000 } }, long, w));
    expect([w1, w12]).toEqual([`${'a'.repeat(98)}#1`, `${'a'.repeat(97)}#12`]);
    for (const id of [w1!, w12!]) expect(id).toMatch(AUDIT_CHAIN_ID);
  });

  test('chainRecords refuses an invalid chain id', () => {
    expect(() => chainRecords(undefined, events(1), clock(), 'a/b')).toThrow(InvalidAuditEventError);
  });
});
