import querystring from 'node:querystring';

import { MAX_FORM_PARAMETERS, TooManyFormParameters, exceedsParameterCount, refuseTruncatedForms } from '../../server/http/form-parameter-count.js';

describe('form bodies querystring.parse would cut short', () => {
  test('more than 1,000 pairs, empty ones counted, is too many; 1,000 is not', () => {
    expect(exceedsParameterCount('a=1&'.repeat(MAX_FORM_PARAMETERS - 1) + 'a=1')).toBe(false);
    expect(exceedsParameterCount('a=1&'.repeat(MAX_FORM_PARAMETERS) + 'a=1')).toBe(true);
    expect(exceedsParameterCount('&'.repeat(MAX_FORM_PARAMETERS - 1))).toBe(false);
    expect(exceedsParameterCount('&'.repeat(MAX_FORM_PARAMETERS))).toBe(true);
    expect(exceedsParameterCount('x'.repeat(50_000))).toBe(false);
  });

  // That oidc-provider's namespace import sees the replacement is shown end to end by test/http/form-parameter-count.test.ts
  // (Jest's module registry builds namespaces of its own).
  test('installed, querystring.parse throws where it would have dropped a parameter, and only as oidc-provider calls it', () => {
    refuseTruncatedForms();
    refuseTruncatedForms();
    const long = `${'&'.repeat(MAX_FORM_PARAMETERS)}scope=write`;
    expect(() => querystring.parse(long)).toThrow(TooManyFormParameters);
    // A caller that names its own limit gets what it asked for.
    expect(querystring.parse(long, '&', '=', { maxKeys: 0 })).toMatchObject({ scope: 'write' });
    expect(querystring.parse(`${'&'.repeat(MAX_FORM_PARAMETERS - 1)}scope=write`)).toMatchObject({ scope: 'write' });
  });
});
