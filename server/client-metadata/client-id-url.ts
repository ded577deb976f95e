/**
 * Whether a `client_id` is meant as a client ID metadata document URL (draft-ietf-oauth-client-id-metadata-document
 * §3): every client_id that starts with `https://` is, so a malformed one is refused with a reason instead of being
 * looked up as an ordinary client. agentauth's own client ids (DCR, configuration file) never start with it.
 */
export const looksLikeMetadataUrl = (clientId: string): boolean => /^https:\/\//i.test(clientId);

/**
 * The checks of draft §3 on the URL itself: https, a path (not just "/"), no dot segments, no fragment, no user
 * credentials; and the normalised form the WHATWG URL parser gives, so the URL compared with the document's
 * `client_id`, shown to people and stored with grants is exactly the one fetched. Returns why it is refused, or the
 * parsed URL.
 */
export function checkClientIdUrl(clientId: string): { url: URL } | { problem: string } {
  const url = URL.parse(clientId);
  if (!url || url.protocol !== 'https:') return { problem: 'is not an https URL' };
  // Checked on the URL as written: the parser resolves "." and ".." segments (also as %2e) away.
  const rawPath = clientId.replace(/^https:\/\/[^/?#]*/i, '').split(/[?#]/)[0]!;
  if (rawPath.split('/').some((seg) => /^(\.|%2e){1,2}$/i.test(seg))) return { problem: 'must not contain dot path segments ("." or "..")' };
  if (clientId.includes('#')) return { problem: 'must not contain a fragment' };
  if (url.username || url.password) return { problem: 'must not contain user credentials' };
  // "host." names the same host as "host" in DNS and in TLS, but not in the operator's allowedHosts and deniedHosts:
  // one spelling per host, without the trailing dot.
  if (url.hostname.endsWith('.')) return { problem: `must name its host without a trailing dot (${url.hostname.slice(0, -1)})` };
  // Before the normalised form: "https://host" normalises to "https://host/", which would be refused next.
  if (url.pathname === '/') return { problem: 'must contain a path to the document, not just "/"' };
  if (url.href !== clientId) return { problem: `is not in normalised form (${JSON.stringify(url.href)})` };
  return { url };
}
