import { isJwt } from '../../server/structured-tokens.js';

// Introspection, revocation and token exchange send a presented token down the JWT path or oidc-provider's opaque
// path by its shape. Opaque tokens are told apart before any decoding (they never contain a dot).
describe('which presented tokens take the JWT path', () => {
  test('a JWS compact serialisation with a JSON header does', () => {
    expect(isJwt('eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJ4In0.c2ln')).toBe(true);
    expect(isJwt('e30.e30.')).toBe(true); // header {} : the JWT path then refuses it (no alg, no signature)
  });

  test("oidc-provider's opaque tokens and other dotless strings do not, even one that is base64url of JSON", () => {
    expect(isJwt('Xq3kHf4yV0pNw9hL2r7sT1uZc8bJm6aQ5dE0gKxYiOo')).toBe(false);
    expect(isJwt('e30')).toBe(false); // base64url of "{}", but no dot: not a JWS
    expect(isJwt('')).toBe(false);
  });

  test('a dotted string whose first segment is not a JSON object does not', () => {
    expect(isJwt('not-json.e30.')).toBe(false);
    expect(isJwt('WzFd.e30.')).toBe(false); // [1]: JSON, but not an object
    expect(isJwt('.e30.')).toBe(false);
  });

  test('non-strings do not', () => {
    for (const v of [undefined, null, 1, ['a.b.c'], { token: 'a.b.c' }]) expect(isJwt(v)).toBe(false);
  });
});
