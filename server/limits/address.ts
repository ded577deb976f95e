import { isIP } from 'node:net';

import ipaddr from 'ipaddr.js';

/** The default of `limits.ipv6PrefixLength`: one IPv6 /64, what a single host (a VPS, a home network) is given. */
export const DEFAULT_IPV6_PREFIX_LENGTH = 64;

/**
 * What a per-address limit counts a client address as: an IPv4 address in its dotted form (an IPv4-mapped IPv6
 * address, `::ffff:192.0.2.1` in any spelling, is the IPv4 address it maps), an IPv6 address as its first
 * `ipv6PrefixLength` bits (`2001:db8:1:2::/64`; one host commonly holds a whole /64 and picks addresses from it at
 * will, SLAAC privacy addresses included, so counting each address would give it 2^64 allowances). Every spelling of
 * one address (case, zero compression, leading zeros, a zone) counts as one. Anything that is not an IP address (a
 * proxy's header holding something else) is counted as it is.
 */
export function limitedAddress(ip: string, ipv6PrefixLength: number): string {
  if (isIP(ip) === 0) return ip;
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.process(ip);
  } catch {
    return ip;
  }
  if (parsed.kind() === 'ipv4') return parsed.toString();
  const parts = (parsed as ipaddr.IPv6).parts.map((part, i) => {
    const kept = Math.min(16, Math.max(0, ipv6PrefixLength - i * 16));
    return kept === 0 ? 0 : part & (0xffff << (16 - kept)) & 0xffff;
  });
  return `${new ipaddr.IPv6(parts).toString()}/${ipv6PrefixLength}`;
}
