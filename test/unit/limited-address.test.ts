import { limitedAddress } from '../../server/limits/address.js';
import { SharedWindowLimit } from '../../server/limits/window.js';

/**
 * What a per-address limit counts a client address as (server/limits/address.ts): every spelling of one address is
 * one subject, an IPv4-mapped IPv6 address is its IPv4 address, and an IPv6 address counts by its prefix.
 */
describe('the address a per-address limit counts', () => {
  test.each([
    ['198.51.100.9', '198.51.100.9'],
    ['::ffff:198.51.100.9', '198.51.100.9'],
    ['::FFFF:c633:6409', '198.51.100.9'],
    ['0:0:0:0:0:ffff:c633:6409', '198.51.100.9'],
    ['2001:db8:9::1', '2001:db8:9::/64'],
    ['2001:DB8:9:0:0:0:0:1', '2001:db8:9::/64'],
    ['2001:0db8:0009::0001', '2001:db8:9::/64'],
    ['2001:db8:9:0:ffff:ffff:ffff:ffff', '2001:db8:9::/64'],
    ['fe80::1%eth0', 'fe80::/64'],
  ])('%s counts as %s', (ip, counted) => {
    expect(limitedAddress(ip, 64)).toBe(counted);
  });

  test('another /64 is another address; the prefix length decides what one address is', () => {
    expect(limitedAddress('2001:db8:9:1::1', 64)).not.toBe(limitedAddress('2001:db8:9:0::1', 64));
    expect(limitedAddress('2001:db8:9:1::1', 56)).toBe(limitedAddress('2001:db8:9:0::1', 56));
    expect(limitedAddress('2001:db8:9:ff::1', 56)).toBe('2001:db8:9::/56');
    expect(limitedAddress('2001:db8:9:100::1', 56)).toBe('2001:db8:9:100::/56');
    expect(limitedAddress('2001:db8::1', 128)).not.toBe(limitedAddress('2001:db8::2', 128));
    expect(limitedAddress('2001:db8::1', 128)).toBe('2001:db8::1/128');
    expect(limitedAddress('2001:db8:8001::1', 33)).toBe('2001:db8:8000::/33');
  });

  test('what is not an IP address is counted as it is', () => {
    for (const raw of ['', 'unknown', '198.51.100.9:443', '[2001:db8::1]', '127.1', '2001:db8::1::2']) expect(limitedAddress(raw, 64)).toBe(raw);
  });

  test('a limit counts the addresses of one /64 together, and another /64 apart', async () => {
    const taken = new Map<string, number>();
    const store = {
      async takeAttempt(key: string, limit: number) {
        const n = (taken.get(key) ?? 0) + 1;
        taken.set(key, n);
        return n <= limit;
      },
    };
    const limit = new SharedWindowLimit(store, 'test', { max: 2, windowSeconds: 60 });
    const hits = [];
    for (let i = 1; i <= 4; i += 1) hits.push((await limit.hit(limit.address(`2001:db8:1:2::${i}`))).allowed);
    expect(hits).toEqual([true, true, false, false]);
    expect((await limit.hit(limit.address('2001:db8:1:3::1'))).allowed).toBe(true);
  });
});
