import { BlockList, isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * Which IP addresses a client ID metadata document may be fetched from: public unicast only. Everything a
 * server-side request must never reach is refused: private (RFC 1918, IPv6 ULA), loopback, link-local, CGNAT,
 * multicast, broadcast, unspecified, documentation, benchmarking, reserved and the protocol-assignment blocks, and
 * every IPv6 form that embeds an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo) unless the embedded address would
 * itself pass. ipaddr.js classifies the well-known ranges; the IANA special-purpose blocks it does not name are
 * listed here (RFC 6890 and its registries).
 */
const extraBlocked = new BlockList();
for (const [net, prefix] of [
  ['192.0.0.0', 24], // IETF protocol assignments
  ['198.18.0.0', 15], // benchmarking (RFC 2544)
  ['192.31.196.0', 24], // AS112-v4
  ['192.52.193.0', 24], // AMT
  ['192.175.48.0', 24], // direct delegation AS112
] as const) extraBlocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['64:ff9b:1::', 48], // local-use NAT64 (RFC 8215)
  ['100::', 64], // discard-only (RFC 6666)
  ['2001::', 23], // IETF protocol assignments (Teredo, benchmarking 2001:2::/48, ORCHID)
  ['2001:db8::', 32], // documentation
  ['3fff::', 20], // documentation (RFC 9637)
  ['5f00::', 16], // SRv6 SIDs
] as const) extraBlocked.addSubnet(net, prefix, 'ipv6');

/** Why `address` may not be contacted, or undefined if it is a public unicast address. */
export function forbiddenAddressReason(address: string): string | undefined {
  const bare = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (isIP(bare) === 0 || !ipaddr.isValid(bare)) return 'is not an IP address';
  const parsed = ipaddr.parse(bare);
  if (parsed.kind() === 'ipv6') {
    const v6 = parsed as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) {
      const inner = forbiddenAddressReason(v6.toIPv4Address().toString());
      return inner && `is IPv4-mapped and its IPv4 address ${inner}`;
    }
    const range = v6.range();
    if (range !== 'unicast') return `is in a special-use IPv6 range (${range})`;
    // Global unicast is 2000::/3; everything outside it is reserved by IANA.
    if ((v6.parts[0]! & 0xe000) !== 0x2000) return 'is outside IPv6 global unicast (2000::/3)';
    if (extraBlocked.check(v6.toNormalizedString(), 'ipv6')) return 'is in a special-purpose IPv6 block';
    return undefined;
  }
  const range = (parsed as ipaddr.IPv4).range();
  if (range !== 'unicast') return `is in a special-use IPv4 range (${range})`;
  if (extraBlocked.check(parsed.toString(), 'ipv4')) return 'is in a special-purpose IPv4 block';
  return undefined;
}

/**
 * Whether a URL's host (WHATWG `hostname`) is the machine the browser runs on: `localhost` or a `.localhost` name
 * (RFC 6761 §6.3), with or without the trailing dot of a fully qualified name, or a loopback or unspecified IP address
 * in any form a URL normalises to (127.0.0.0/8, `[::1]`, 0.0.0.0, `[::]`, and their IPv4-mapped IPv6 forms), all of
 * which reach the local host.
 */
export function isOwnMachineHost(hostname: string): boolean {
  const name = hostname.endsWith('.') ? hostname.slice(0, -1) : hostname;
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  if (isIP(bare) === 0 || !ipaddr.isValid(bare)) return false;
  let address = ipaddr.parse(bare);
  if (address.kind() === 'ipv6' && (address as ipaddr.IPv6).isIPv4MappedAddress()) address = (address as ipaddr.IPv6).toIPv4Address();
  const range = address.range();
  return range === 'loopback' || range === 'unspecified';
}
