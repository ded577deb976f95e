export interface RefreshClient {
  clientAuthMethod?: string;
  grantTypeAllowed(type: string): boolean;
}

/** What a tier allows a public client that sends no DPoP proof (TierConfig.publicClientRefresh). */
export type PublicClientRefresh = 'rotate' | 'dpop';

/**
 * Whether a token response includes a refresh token: only for clients allowed the refresh_token grant. A client that
 * authenticates holds a sender-constrained token by its credentials; a public client's token is DPoP-bound when it
 * sends a proof (RFC 9449 §5), and otherwise is a bearer token only where its tier says `rotate`: single use, rotated
 * on every refresh with reuse detection revoking the grant, within the tier's idle and absolute lifetimes (RFC 9700
 * §4.14.2, OAuth 2.1 §4.3.1). See docs/security.md.
 */
export function shouldIssueRefreshToken(client: RefreshClient, dpopBound: boolean, publicClientRefresh: PublicClientRefresh = 'dpop'): boolean {
  if (!client.grantTypeAllowed('refresh_token')) return false;
  if (client.clientAuthMethod === 'none') return dpopBound || publicClientRefresh === 'rotate';
  return true;
}
