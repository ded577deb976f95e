import { InvalidStorageValueError } from '../../adapters/errors.js';
import { checkKey, isValidKey, MAX_KEY_LENGTH } from '../../adapters/validate.js';

describe('checkKey (values that reach storage queries)', () => {
  test.each(['abc', 'Zx-_.~0123', 'https://client.example.com/metadata.json', 'a b', 'x'.repeat(MAX_KEY_LENGTH)])('accepts VSCHAR %s', (v) => {
    expect(checkKey('id', v)).toBe(v);
    expect(isValidKey(v)).toBe(true);
  });

  test.each([
    [{ $gt: '' }, /must be a string, got object/],
    [['a'], /must be a string, got array/],
    [7, /must be a string, got number/],
    ['', /1 to/],
    ['x'.repeat(MAX_KEY_LENGTH + 1), /1 to/],
    ['$where', /must not start with "\$"/],
    ['new\nline', /VSCHAR/],
    ['caf\u00e9', /VSCHAR/],
  ])('refuses %j', (v, pattern) => {
    expect(() => checkKey('id', v)).toThrow(InvalidStorageValueError);
    expect(() => checkKey('id', v)).toThrow(pattern);
    expect(isValidKey(v)).toBe(false);
  });
});
