export interface RefreshClient {
  clientAuthMethod?: string;
  grantTypeAllowed(type: string): boolean;
}

/**
 * Whether a token response includes a refresh token: only for clients allowed the refresh_token grant, and then only
 * when it is sender-constrained — DPoP-bound for a public client (RFC 9449 §5), or held by a client that
 * authenticates. No long-lived bearer credential is ever issued.
 */
export function shouldIssueRefreshToken(client: RefreshClient, dpopBound: boolean): boolean {
  if (!client.grantTypeAllowed('refresh_token')) return false;
  if (client.clientAuthMethod === 'none') return dpopBound;
  return true;
}
