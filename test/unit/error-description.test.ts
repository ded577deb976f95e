import type Koa from 'koa';

import { MAX_DESCRIPTION_LENGTH, challengeParameter, keepDescriptionInRfc6749Characters, rfc6749Description } from '../../server/http/error-description.js';

const RFC6749 = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

describe('error descriptions in RFC 6749 section 5.2 characters', () => {
  test.each([
    ['already in them', 'the resource parameter is required: name the resource server (RFC 8707)', 'the resource parameter is required: name the resource server (RFC 8707)'],
    ['a quote becomes an apostrophe', 'scope contains "admin"', "scope contains 'admin'"],
    ['a backslash, control characters and DEL are percent-escaped', 'a\\b\tc\nd\re\u007f', 'a%5Cb%09c%0Ad%0De%7F'],
    ['non-ASCII letters are their UTF-8 bytes, percent-escaped', 'caf\u00e9 \u20ac \u{1F600}', 'caf%C3%A9 %E2%82%AC %F0%9F%98%80'],
    ['a lone surrogate is the replacement character', 'x\ud800y', 'x%EF%BF%BDy'],
  ])('%s', (_name, given, expected) => {
    expect(rfc6749Description(given)).toBe(expected);
    expect(RFC6749.test(rfc6749Description(given))).toBe(true);
  });

  test('a long description is cut, ending in ...', () => {
    const out = rfc6749Description('x'.repeat(5000));
    expect(out).toHaveLength(MAX_DESCRIPTION_LENGTH);
    expect(out.endsWith('...')).toBe(true);
  });

  function ctxWith(body: unknown, challenge?: string | string[]): Koa.Context {
    const headers: Record<string, string | string[]> = challenge === undefined ? {} : { 'www-authenticate': challenge };
    return {
      body,
      response: { headers },
      set(name: string, value: string | string[]) { headers[name.toLowerCase()] = value; },
    } as unknown as Koa.Context;
  }

  test('the body and its WWW-Authenticate challenge are rewritten together', () => {
    const body = { error: 'invalid_client', error_description: 'client "x\u00fc" unknown' };
    const ctx = ctxWith(body, `Basic realm="agentauth", error="invalid_client", ${challengeParameter(body.error_description)}`);
    keepDescriptionInRfc6749Characters(ctx);
    expect(body.error_description).toBe("client 'x%C3%BC' unknown");
    expect(ctx.response.headers['www-authenticate']).toBe(`Basic realm="agentauth", error="invalid_client", error_description="client 'x%C3%BC' unknown"`);
    const arrayBody = { error: 'invalid_token', error_description: 'bad\tproof' };
    const arrayCtx = ctxWith(arrayBody, ['Bearer realm="r"', `DPoP realm="r", ${challengeParameter('bad\tproof')}`]);
    keepDescriptionInRfc6749Characters(arrayCtx);
    expect(arrayCtx.response.headers['www-authenticate']).toEqual(['Bearer realm="r"', 'DPoP realm="r", error_description="bad%09proof"']);
  });

  test('bodies that are not a JSON error object, and descriptions already in the characters, are left as they are', () => {
    for (const body of [undefined, null, 'text', Buffer.from('{"error_description":"\\t"}'), { error: 'x' }, { error: 'x', error_description: 5 }]) {
      const ctx = ctxWith(body);
      keepDescriptionInRfc6749Characters(ctx);
      expect(ctx.body).toBe(body);
    }
    const fine = { error: 'x', error_description: 'fine (RFC 6749)' };
    keepDescriptionInRfc6749Characters(ctxWith(fine));
    expect(fine.error_description).toBe('fine (RFC 6749)');
  });
});
