import { DelegationRefusal, chainDepth, checkExchanger, decideExchange, exchangeMaxDepthProblem, exchangeResourcesProblem } from '../../server/policies/delegation.js';
import type { TokenExchangeConfig } from '../../server/config.js';

const A = 'https://a.example.com';
const B = 'https://b.example.com';
const policy: TokenExchangeConfig = {
  maxDepth: 2,
  allowAnonymous: false,
  rules: [
    { clients: ['skill-a'], from: [A], to: [B], scopes: ['read'] },
    { tiers: ['partners'], from: [A], to: [B] },
  ],
};
const subject = { audience: A, scope: ['read', 'write'], clientId: 'agent' };
const target = { resource: B, scopes: ['read', 'write'] };

function refusal(fn: () => unknown): DelegationRefusal {
  try {
    fn();
  } catch (err) {
    if (err instanceof DelegationRefusal) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('delegation policy (RFC 8693 token exchange)', () => {
  test('a named client gets the intersection of the subject scopes, the target scopes and its rule, and starts the act chain', () => {
    const d = decideExchange(policy, subject, { clientId: 'skill-a' }, target, undefined);
    expect(d).toEqual({ scope: ['read'], act: { client_id: 'skill-a' }, depth: 1 });
  });

  test('a tier rule applies to clients of that tier only', () => {
    expect(decideExchange(policy, subject, { clientId: 'x', tier: 'partners' }, target, ['write']).scope).toEqual(['write']);
    // A client no rule names may not exchange at all: unauthorized_client, decided before the subject token is read.
    const none = refusal(() => decideExchange(policy, subject, { clientId: 'x', tier: 'standard' }, target, undefined));
    expect([none.code, none.message]).toEqual(['unauthorized_client', 'no tokenExchange rule of this server names client x (by its id or its tier): it may not exchange tokens']);
    expect(refusal(() => checkExchanger(policy, { clientId: 'x', tier: 'standard' })).code).toBe('unauthorized_client');
    expect(() => checkExchanger(policy, { clientId: 'x', tier: 'partners' })).not.toThrow();
    // Named by a rule, but not for tokens of this audience: invalid_request (RFC 8693 §2.2.2).
    expect(refusal(() => decideExchange(policy, { ...subject, audience: B }, { clientId: 'skill-a' }, target, undefined)).code).toBe('invalid_request');
  });

  test('the chain nests the earlier actors and stops at maxDepth', () => {
    const d = decideExchange(policy, { ...subject, act: { client_id: 'first' } }, { clientId: 'skill-a' }, target, undefined);
    expect(d.act).toEqual({ client_id: 'skill-a', act: { client_id: 'first' } });
    expect(chainDepth(d.act)).toBe(2);
    const deep = refusal(() => decideExchange(policy, { ...subject, act: d.act }, { clientId: 'skill-a' }, target, undefined));
    expect(deep.code).toBe('invalid_request');
    expect(deep.message).toMatch(/3 actors deep/);
  });

  test('anonymous registrations may not exchange unless the operator allows it', () => {
    expect(refusal(() => decideExchange(policy, subject, { clientId: 'skill-a', registration: 'anonymous' }, target, undefined)).code).toBe('unauthorized_client');
    expect(decideExchange({ ...policy, allowAnonymous: true }, subject, { clientId: 'skill-a', registration: 'anonymous' }, target, undefined).scope).toEqual(['read']);
  });

  test('may_act names the only client that may act; a holder may not move a bound token to another key', () => {
    expect(refusal(() => decideExchange(policy, { ...subject, mayAct: { client_id: 'other' } }, { clientId: 'skill-a' }, target, undefined)).message).toMatch(/may_act/);
    expect(decideExchange(policy, { ...subject, mayAct: { client_id: 'skill-a' } }, { clientId: 'skill-a' }, target, undefined).scope).toEqual(['read']);
    const bound = { ...subject, clientId: 'skill-a', jkt: 'k1' };
    expect(refusal(() => decideExchange(policy, bound, { clientId: 'skill-a', jkt: 'k2' }, target, undefined)).message).toMatch(/bound to another key/);
    expect(decideExchange(policy, bound, { clientId: 'skill-a', jkt: 'k1' }, target, undefined).scope).toEqual(['read']);
  });

  test('a public exchanger proves possession: only a DPoP-bound subject token, with a proof of its key (RFC 8693 §2.1)', () => {
    // Issued to another client and received by the public one: an authenticated exchanger proves its own key...
    const received = { ...subject, clientId: 'agent', jkt: 'agent-key' };
    expect(decideExchange(policy, received, { clientId: 'skill-a', jkt: 'skill-key' }, target, undefined).scope).toEqual(['read']);
    // ...a public one cannot be told from whoever copied the token: its proof must be of the token's key.
    expect(refusal(() => decideExchange(policy, received, { clientId: 'skill-a', jkt: 'skill-key', public: true }, target, undefined))).toMatchObject({
      code: 'invalid_request',
      message: expect.stringMatching(/bound to another key/),
    });
    expect(decideExchange(policy, received, { clientId: 'skill-a', jkt: 'agent-key', public: true }, target, undefined).scope).toEqual(['read']);
    // A bearer subject token proves nothing: refused for a public exchanger, its own token included.
    for (const clientId of ['agent', 'skill-a']) {
      expect(refusal(() => decideExchange(policy, { ...subject, clientId }, { clientId: 'skill-a', jkt: 'skill-key', public: true }, target, undefined))).toMatchObject({
        code: 'invalid_request',
        message: expect.stringMatching(/^a public client may exchange only a DPoP-bound subject token/),
      });
    }
  });

  test("the client's token_exchange_resources narrow the rules (never widen them)", () => {
    expect(decideExchange(policy, subject, { clientId: 'skill-a', resources: [B] }, target, undefined).scope).toEqual(['read']);
    const narrowed = refusal(() => decideExchange(policy, subject, { clientId: 'skill-a', resources: ['https://c.example.com'] }, target, undefined));
    expect(narrowed.code).toBe('invalid_target');
    expect(narrowed.message).toMatch(/only into ones for https:\/\/c\.example\.com \(its token_exchange_resources\), not https:\/\/b\.example\.com/);
    // Naming a resource no rule allows for this client gives nothing.
    expect(refusal(() => decideExchange(policy, subject, { clientId: 'nobody', resources: [B] }, target, undefined)).code).toBe('unauthorized_client');
  });

  test("the client's token_exchange_max_depth lowers the server's maxDepth for its hops", () => {
    expect(decideExchange(policy, subject, { clientId: 'skill-a', maxDepth: 1 }, target, undefined).depth).toBe(1);
    const deep = refusal(() => decideExchange(policy, { ...subject, act: { client_id: 'first' } }, { clientId: 'skill-a', maxDepth: 1 }, target, undefined));
    expect(deep.code).toBe('invalid_request');
    expect(deep.message).toMatch(/2 actors deep; client skill-a takes part in chains of at most 1 \(its token_exchange_max_depth\)/);
    // It never raises the server's limit.
    expect(refusal(() => decideExchange(policy, { ...subject, act: { client_id: 'b', act: { client_id: 'a' } } }, { clientId: 'skill-a', maxDepth: 5 }, target, undefined)).message).toMatch(/tokenExchange\.maxDepth/);
    expect(exchangeMaxDepthProblem(3)).toBeUndefined();
    for (const bad of [0, 11, 2.5, '3', null]) expect(exchangeMaxDepthProblem(bad)).toMatch(/integer from 1 to 10/);
  });

  test('token_exchange_resources metadata: 1 to max distinct known resources', () => {
    const known = new Set([A, B]);
    expect(exchangeResourcesProblem([A, B], known, 5)).toBeUndefined();
    expect(exchangeResourcesProblem([], known, 5)).toMatch(/array of 1 to 5/);
    expect(exchangeResourcesProblem(A, known, 5)).toMatch(/array of 1 to 5/);
    expect(exchangeResourcesProblem([A, B, A], known, 2)).toMatch(/array of 1 to 2/);
    expect(exchangeResourcesProblem([A, A], known, 5)).toMatch(/not repeat/);
    expect(exchangeResourcesProblem([A, 'https://evil.example.com'], known, 5)).toMatch(/"https:\/\/evil\.example\.com" is not a resource server/);
    expect(exchangeResourcesProblem([A, { $gt: '' }], known, 5)).toMatch(/is not a resource server/);
  });

  test('a wider scope is invalid_scope, another target invalid_target', () => {
    expect(refusal(() => decideExchange(policy, subject, { clientId: 'skill-a' }, target, ['read', 'write'])).code).toBe('invalid_scope');
    expect(refusal(() => decideExchange(policy, subject, { clientId: 'skill-a' }, { resource: 'https://c.example.com', scopes: ['read'] }, undefined)).code).toBe('invalid_target');
  });

  test('a rule naming neither clients nor tiers matches nobody', () => {
    const open: TokenExchangeConfig = { ...policy, rules: [{ from: [A], to: [B] }] };
    expect(refusal(() => decideExchange(open, subject, { clientId: 'skill-a' }, target, undefined)).code).toBe('unauthorized_client');
  });

  test('rules that allow one hop: the next actor one of them names is kept; two different ones refuse the exchange', () => {
    const named = (nextActor?: string) => ({ clients: ['skill-a'], from: [A], to: [B], ...(nextActor ? { nextActor } : {}) });
    const tierRule = (nextActor?: string) => ({ tiers: ['partners'], from: [A], to: [B], ...(nextActor ? { nextActor } : {}) });
    const skillA = { clientId: 'skill-a', tier: 'partners' };
    const decide = (rules: TokenExchangeConfig['rules']) => decideExchange({ ...policy, rules }, subject, skillA, target, undefined);
    expect(decide([named('skill-b'), tierRule('skill-b')]).mayAct).toEqual({ client_id: 'skill-b' });
    // One names a next actor, the other none: the token names it (never left without may_act).
    expect(decide([named('skill-b'), tierRule()]).mayAct).toEqual({ client_id: 'skill-b' });
    expect(decide([named(), tierRule('skill-c')]).mayAct).toEqual({ client_id: 'skill-c' });
    expect(decide([named(), tierRule()]).mayAct).toBeUndefined();
    // Different next actors: no token (issuing one without may_act would let anyone act next).
    const conflict = refusal(() => decide([named('skill-b'), tierRule('skill-c')]));
    expect(conflict.code).toBe('invalid_request');
    expect(conflict.message).toMatch(/name different next actors \(skill-b, skill-c\)/);
    // Rules for another hop or another client do not take part.
    expect(decideExchange({ ...policy, rules: [named('skill-b'), { ...tierRule('skill-c'), to: ['https://c.example.com'] }] }, subject, skillA, target, undefined).mayAct).toEqual({ client_id: 'skill-b' });
    expect(decideExchange({ ...policy, rules: [named('skill-b'), tierRule('skill-c')] }, subject, { clientId: 'skill-a', tier: 'standard' }, target, undefined).mayAct).toEqual({ client_id: 'skill-b' });
  });
});
