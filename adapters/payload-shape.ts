/**
 * The JSON types oidc-provider writes the fields of its token models as (lib/models/*.js `IN_PAYLOAD`), checked when a
 * stored payload is read back. oidc-provider trusts what its adapter hands it: introspection copies `clientId`,
 * `exp`, `iat`, `sid`, `aud`, `scope`, `jkt` and `extra` into its answer as they are, so a record edited outside the
 * server (`"scope": 5`, `"clientId": {}`) came back to a resource server as an RFC 7662 answer of the wrong types. A
 * record whose fields are not of these types is answered as unreadable (absent), as one that is not JSON is.
 *
 * Only the types are checked, never the values: a database writer can still write a record of the right types, and
 * token payloads carry no MAC (docs/security.md, "Credentials at rest").
 */

type Kind = 'number' | 'string' | 'boolean' | 'strings' | 'string or strings' | 'object' | 'object or array';

const FIELDS = new Map<string, Kind>([
  ['iat', 'number'], ['exp', 'number'], ['authTime', 'number'], ['rotations', 'number'], ['iiat', 'number'], ['consumed', 'number'],
  ['jti', 'string'], ['kind', 'string'], ['clientId', 'string'], ['accountId', 'string'], ['grantId', 'string'], ['gty', 'string'],
  ['sid', 'string'], ['sessionUid', 'string'], ['jkt', 'string'], ['x5t#S256', 'string'], ['attestationJkt', 'string'], ['dpopJkt', 'string'],
  ['acr', 'string'], ['nonce', 'string'], ['scope', 'string'], ['codeChallenge', 'string'], ['codeChallengeMethod', 'string'],
  ['redirectUri', 'string'], ['userCode', 'string'],
  ['expiresWithSession', 'boolean'],
  ['amr', 'strings'], ['policies', 'strings'],
  ['aud', 'string or strings'], ['resource', 'string or strings'],
  ['extra', 'object'], ['claims', 'object'],
  ['rar', 'object or array'],
]);

/** The models whose payloads are tokens, codes and credentials (the ones introspection, token and registration read). */
export const TOKEN_MODELS: ReadonlySet<string> = new Set([
  'AccessToken', 'ClientCredentials', 'RefreshToken', 'AuthorizationCode', 'DeviceCode', 'BackchannelAuthenticationRequest',
  'RegistrationAccessToken', 'InitialAccessToken',
]);

const isObject = (v: unknown): boolean => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every((s) => typeof s === 'string');

function fits(kind: Kind, value: unknown): boolean {
  switch (kind) {
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'strings':
      return isStrings(value);
    case 'string or strings':
      return typeof value === 'string' || isStrings(value);
    case 'object':
      return isObject(value);
    case 'object or array':
      return isObject(value) || Array.isArray(value);
  }
}

/**
 * The first field of a token model's payload that is not of the type oidc-provider writes it as, or undefined when
 * all are (fields it does not know, and `null`, which it reads as absent, are let through).
 */
export function misshapenField(model: string, payload: Record<string, unknown>): string | undefined {
  if (!TOKEN_MODELS.has(model)) return undefined;
  for (const key in payload) {
    const kind = FIELDS.get(key);
    const value = payload[key];
    if (kind !== undefined && value !== null && !fits(kind, value)) return key;
  }
  return undefined;
}
