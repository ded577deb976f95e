import { isValidHost } from '../../server/http/request-origin.js';
import { hasWellFormedEscapes } from '../../server/http/path-escapes.js';

describe('Host header values', () => {
  test.each(['localhost', 'localhost:3000', 'auth.example.com', 'auth.example.com:443', '127.0.0.1:8080', '[::1]', '[::1]:3000', '[2001:db8::1]:443', 'xn--caf-dma.example', 'host_name.internal', 'a:'])(
    '%s is a valid host[:port]',
    (value) => expect(isValidHost(value)).toBe(true),
  );

  test.each([
    ['a space', 'a b'],
    ['a slash', 'a/b'],
    ['user info', 'user@host'],
    ['a non-numeric port', 'host:http'],
    ['a port above 65535', 'host:65536'],
    ['a six-digit port', 'host:000080'],
    ['two colons', 'host:1:2'],
    ['an unbracketed IPv6 address', '::1'],
    ['a bracketed non-address', '[not-ipv6]'],
    ['text after the bracket', '[::1]x'],
    ['a percent-escape', 'a%20b'],
    ['non-ASCII characters', 'ｅxample.com'],
    ['an out-of-range IPv4 address', '999.1.1.1'],
    ['a control character', 'host\u0001'],
  ])('%s is refused', (_label, value) => expect(isValidHost(value)).toBe(false));
});

describe('percent-escapes in a path', () => {
  test.each(['/reg/abc', '/reg/a%20b', '/interaction/%7Eabc', '/caf%C3%A9'])('%s is well formed', (path) => expect(hasWellFormedEscapes(path)).toBe(true));
  test.each(['/reg/%ZZ', '/reg/%', '/reg/%4', '/interaction/%zz/login', '/%C0%AE', '/%FF'])('%s is malformed', (path) => expect(hasWellFormedEscapes(path)).toBe(false));
});
