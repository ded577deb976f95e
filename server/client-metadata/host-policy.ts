/**
 * The operator's host rules for client ID metadata documents: `deniedHosts` always wins; a non-empty `allowedHosts`
 * admits only the hosts it names. A pattern is an exact host (`agent.example.com`) or a suffix pattern
 * (`*.example.com`: any subdomain of example.com, not example.com itself). Hosts compare in lower case, in the
 * ASCII (xn--) form the WHATWG URL parser gives.
 */
export interface HostRules {
  allowedHosts: readonly string[];
  deniedHosts: readonly string[];
}

export const HOST_PATTERN = /^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$|^\[[0-9a-f:.]+\]$|^[0-9.]+$/;

export function hostMatches(host: string, pattern: string): boolean {
  // "host." is the fully qualified spelling of "host" (DNS and TLS read them alike): it matches what "host" matches.
  const h = host.toLowerCase().replace(/\.$/, '');
  const p = pattern.toLowerCase();
  if (p.startsWith('*.')) return h.endsWith(p.slice(1)) && h.length > p.length - 1;
  return h === p;
}

/** Why the operator's rules refuse `host`, or undefined if they admit it. */
export function hostRefusal(host: string, rules: HostRules): string | undefined {
  const denied = rules.deniedHosts.find((p) => hostMatches(host, p));
  if (denied) return `host ${host} is denied by this authorization server (clientIdMetadataDocuments.deniedHosts: ${denied})`;
  if (rules.allowedHosts.length > 0 && !rules.allowedHosts.some((p) => hostMatches(host, p))) {
    return `host ${host} is not among the hosts this authorization server accepts client ID metadata documents from`;
  }
  return undefined;
}
