/**
 * The operator's host rules for client ID metadata documents: `deniedHosts` always wins; a non-empty `allowedHosts`
 * admits only the hosts it names. A pattern is an exact host (`agent.example.com`) or a suffix pattern
 * (`*.example.com`: any subdomain of example.com, not example.com itself). Hosts compare in lower case, in the
 * ASCII (xn--) form the WHATWG URL parser gives.
 */
export interface HostRules {
  allowedHosts: readonly string[];
  deniedHosts: readonly string[];
  /** The ports documents are fetched on; a URL that names no port is fetched on 443. */
  allowedPorts: readonly number[];
}

export const HOST_PATTERN = /^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*$|^\[[0-9a-f:.]+\]$|^[0-9.]+$/;

export function hostMatches(host: string, pattern: string): boolean {
  // "host." is the fully qualified spelling of "host" (DNS and TLS read them alike): it matches what "host" matches.
  const h = host.toLowerCase().replace(/\.$/, '');
  const p = pattern.toLowerCase();
  if (p.startsWith('*.')) return h.endsWith(p.slice(1)) && h.length > p.length - 1;
  return h === p;
}

/**
 * Why the operator's rules refuse the URL's host or port, or undefined if they admit both. The port rule keeps the
 * fetches on the port https documents are served on (443 by default), so a client_id cannot point them at any other
 * service of a public host (and the refusal's reason cannot say what listens there).
 */
export function urlRefusal(url: URL, rules: HostRules): string | undefined {
  const hostProblem = hostRefusal(url.hostname, rules);
  if (hostProblem) return hostProblem;
  const port = url.port === '' ? 443 : Number(url.port);
  if (!rules.allowedPorts.includes(port)) {
    return `port ${port} is not among the ports this authorization server fetches client ID metadata documents on (clientIdMetadataDocuments.allowedPorts: ${rules.allowedPorts.join(', ')})`;
  }
  return undefined;
}

/** Why the operator's rules refuse `host`, or undefined if they admit it. */
export function hostRefusal(host: string, rules: Omit<HostRules, 'allowedPorts'>): string | undefined {
  const denied = rules.deniedHosts.find((p) => hostMatches(host, p));
  if (denied) return `host ${host} is denied by this authorization server (clientIdMetadataDocuments.deniedHosts: ${denied})`;
  if (rules.allowedHosts.length > 0 && !rules.allowedHosts.some((p) => hostMatches(host, p))) {
    return `host ${host} is not among the hosts this authorization server accepts client ID metadata documents from`;
  }
  return undefined;
}
