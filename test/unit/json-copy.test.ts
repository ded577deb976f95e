import { jsonCopy } from '../../adapters/json-copy.js';

const viaText = (v: unknown): unknown => JSON.parse(JSON.stringify(v)) as unknown;

describe('jsonCopy: what the embedded store keeps is what the MongoDB store (JSON text) would give back', () => {
  const samples: Array<[string, unknown]> = [
    ['an oidc-provider payload', { kind: 'Grant', jti: 'g1', iat: 1, exp: 2, openid: { scope: 'openid' }, resources: { 'https://api.example.com': 'read' }, rejected: [] }],
    ['undefined and function members are left out', { a: undefined, b: () => 1, c: Symbol('s'), d: 'kept' }],
    ['undefined in arrays becomes null', [1, undefined, () => 2, 'x']],
    ['non-finite numbers become null', { nan: NaN, inf: Infinity, neg: -Infinity, zero: -0 }],
    ['toJSON is honoured (Dates)', { at: new Date(0), nested: [{ toJSON: (k: string) => `key:${k}` }] }],
    ['boxed primitives', { n: Object(1) as unknown, s: Object('s') as unknown, b: Object(false) as unknown }],
    ['deep nesting and odd keys', { '': { 'a b': { 'é': [[[{ x: null }]]] } }, __proto__x: 1 }],
    ['a class instance becomes its own enumerable data', new (class P { a = 1; get b() { return 2; } })()],
  ];

  test.each(samples)('%s', (_name, value) => {
    expect(jsonCopy(value)).toEqual(viaText(value));
    expect(JSON.stringify(jsonCopy(value))).toBe(JSON.stringify(value));
  });

  test('the copy shares nothing with the original', () => {
    const original = { grant: { scopes: ['read'] }, list: [{ n: 1 }] };
    const copy = jsonCopy(original);
    copy.grant.scopes.push('write');
    copy.list[0]!.n = 2;
    expect(original).toEqual({ grant: { scopes: ['read'] }, list: [{ n: 1 }] });
  });

  test('refuses what JSON.stringify refuses (cycles, BigInt)', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => jsonCopy(cyclic)).toThrow(TypeError);
    expect(() => jsonCopy({ n: 1n })).toThrow(TypeError);
    // The same object twice (not a cycle) is fine, as in JSON.
    const shared = { x: 1 };
    expect(jsonCopy({ a: shared, b: shared })).toEqual({ a: { x: 1 }, b: { x: 1 } });
  });
});
