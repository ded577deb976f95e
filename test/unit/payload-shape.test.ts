import { decodeStoredPayload, UnreadableRecordError } from '../../adapters/errors.js';
import { misshapenField, TOKEN_MODELS } from '../../adapters/payload-shape.js';

/** A payload of every field oidc-provider's token models write, each of the type it writes it as. */
const WELL_FORMED = {
  iat: 1_900_000_000, exp: 1_900_000_600, authTime: 1_899_999_000, rotations: 2, iiat: 1_899_000_000, consumed: 1_900_000_100,
  jti: 'j', kind: 'AccessToken', clientId: 'c', accountId: 'did:pkh:eip155:1:0xabc', grantId: 'g', gty: 'client_credentials',
  sid: 's', sessionUid: 'su', jkt: 'thumb', 'x5t#S256': 'x5t', attestationJkt: 'a', dpopJkt: 'd', acr: 'acr', nonce: 'n',
  scope: 'read write', codeChallenge: 'cc', codeChallengeMethod: 'S256', redirectUri: 'https://app.example/cb', userCode: 'UC',
  expiresWithSession: true, amr: ['pwd'], policies: ['p'], aud: 'https://api.example.com', resource: ['https://a', 'https://b'],
  extra: { agentauth_parent: 'x' }, claims: { userinfo: {} }, rar: [{ type: 't' }],
  // Fields it does not know are let through (agentauth's own, later oidc-provider versions').
  agentauth_sealed_value: 'v', somethingNew: 5,
};

describe('the types of a stored token\'s fields', () => {
  test.each([...TOKEN_MODELS])('%s: every field of the right type, an array audience, null for absent, unknown fields: readable', (model) => {
    expect(misshapenField(model, WELL_FORMED)).toBeUndefined();
    expect(misshapenField(model, { ...WELL_FORMED, aud: ['https://a', 'https://b'], resource: 'https://a', rar: { type: 't' } })).toBeUndefined();
    expect(misshapenField(model, { ...WELL_FORMED, scope: null, accountId: null, extra: null })).toBeUndefined();
    expect(misshapenField(model, {})).toBeUndefined();
  });

  test.each([
    ['scope', 5], ['scope', ['read']], ['clientId', {}], ['clientId', 7], ['exp', 'soon'], ['exp', Infinity], ['iat', true],
    ['aud', [1]], ['aud', { a: 1 }], ['resource', 5], ['jkt', 1], ['sid', []], ['accountId', 1], ['extra', 'x'], ['extra', [1]],
    ['claims', 'x'], ['amr', 'pwd'], ['amr', [1]], ['expiresWithSession', 'yes'], ['rar', 'x'], ['jti', 1], ['kind', {}],
  ])('%s: %j is refused as unreadable, naming the field', (field, value) => {
    expect(misshapenField('AccessToken', { ...WELL_FORMED, [field]: value })).toBe(field);
    let thrown: unknown;
    try {
      decodeStoredPayload(JSON.stringify({ ...WELL_FORMED, [field]: value === Infinity ? 'Infinity' : value }), 'ClientCredentials');
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(UnreadableRecordError);
    expect((thrown as UnreadableRecordError).field).toBe(field);
  });

  test('other models (clients, grants, sessions, interactions) keep their own shapes: not checked here', () => {
    for (const model of ['Client', 'Grant', 'Session', 'Interaction']) expect(misshapenField(model, { scope: 5, exp: 'x' })).toBeUndefined();
  });
});
