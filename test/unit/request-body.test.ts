import { errors } from 'oidc-provider';

import { parseJsonBody } from '../../server/request-body.js';

/** The error parseJsonBody throws for `text`, or undefined when it parses. */
function refusal(text: string): { name: string; description: string } | undefined {
  try {
    parseJsonBody(text);
    return undefined;
  } catch (err) {
    if (!(err instanceof errors.InvalidRequest)) throw err;
    return { name: err.name, description: (err as unknown as { error_description: string }).error_description };
  }
}

describe('parseJsonBody (the interaction and wallet-nonce bodies)', () => {
  test('valid JSON comes back as JSON.parse gives it, the same name at different depths included', () => {
    expect(parseJsonBody('{"message":"m","signature":"0x1"}')).toEqual({ message: 'm', signature: '0x1' });
    expect(parseJsonBody('{"a":{"a":1},"b":[{"a":2},{"a":3}]}')).toEqual({ a: { a: 1 }, b: [{ a: 2 }, { a: 3 }] });
    expect(parseJsonBody('[]')).toEqual([]);
  });

  test('an object that names a member twice is refused with invalid_request, at any depth and however the name is spelled', () => {
    for (const [text, name] of [
      ['{"client_id":"a","client_id":"b"}', 'client_id'],
      ['{"client_id":"a","client_id":"a"}', 'client_id'],
      ['{"client_id":"a","client\\u005fid":"b"}', 'client_id'],
      ['{"outer":{"x":1,"x":2}}', 'x'],
      ['{"list":[{"ok":1},{"y":1,"y":1}]}', 'y'],
      ['[{"__proto__":1,"__proto__":2}]', '__proto__'],
    ] as const) {
      expect({ text, refusal: refusal(text) }).toEqual({ text, refusal: { name: 'InvalidRequest', description: `the request body names ${JSON.stringify(name)} twice in one object` } });
    }
  });

  test('malformed JSON is refused as before, before any duplicate check', () => {
    expect(refusal('{"a":1,"a":')).toEqual({ name: 'InvalidRequest', description: 'the request body is not valid JSON' });
    expect(refusal('{"a":1,}')).toEqual({ name: 'InvalidRequest', description: 'the request body is not valid JSON' });
  });
});
