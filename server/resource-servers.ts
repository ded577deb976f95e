import { errors } from 'oidc-provider';
import type { ResourceServer } from 'oidc-provider';

import { KeyMaterialError } from '../keys/errors.js';
import type { SigningAlg } from '../keys/generate.js';
import type { ResourceServerConfig } from './config.js';
import { rfc6749Description } from './http/error-description.js';

/** Longest life of an access token that is not sender-constrained (design invariant 3). */
export const MAX_BEARER_TTL = 300;

/**
 * Refuses a resource server whose `signingAlg` no signing key has (`algs`: the stored keys' algorithms, or the one the
 * first start will generate): its tokens could not be signed. `start` exits 2 with this message.
 */
export function checkResourceServerAlgs(servers: readonly ResourceServerConfig[], algs: readonly string[]): void {
  const have = new Set(algs);
  servers.forEach((rs, i) => {
    if (rs.signingAlg && !have.has(rs.signingAlg)) {
      throw new KeyMaterialError(
        `resourceServers[${i}].signingAlg is ${rs.signingAlg} but the signing keys are ${[...have].join(', ')}; remove signingAlg or set AGENTAUTH_KEY_ALG before the first start`,
      );
    }
  });
}

/** Resource servers declared in configuration, looked up by their exact identifier URI (RFC 8707). */
export class ResourceServerRegistry {
  readonly #byId: Map<string, ResourceServerConfig>;

  constructor(servers: readonly ResourceServerConfig[], private readonly signingKey: () => { alg: SigningAlg; kid: string }) {
    this.#byId = new Map(servers.map((rs) => [rs.identifier, rs]));
  }

  get size(): number {
    return this.#byId.size;
  }

  /** The resource to use when a request names none: the only one configured, else the request is refused. */
  defaultResource(): string {
    const [only, ...rest] = this.#byId.keys();
    if (only !== undefined && rest.length === 0) return only;
    throw new errors.InvalidTarget(
      this.#byId.size === 0
        ? 'no resource servers are configured on this authorization server'
        : 'the resource parameter is required: name the resource server (RFC 8707) the token is for',
    );
  }

  info(identifier: string): ResourceServer {
    const rs = this.#byId.get(identifier);
    // In RFC 6749's characters here, where it is made: at the authorization endpoint it goes back to the client in its
    // redirect, which no layer of agentauth rewrites.
    if (!rs) throw new errors.InvalidTarget(rfc6749Description(`unknown resource: ${identifier.slice(0, 200)} is not a resource server of this authorization server`));
    return {
      scope: rs.scopes.join(' '),
      audience: rs.identifier,
      accessTokenTTL: rs.accessTokenTTL,
      accessTokenFormat: rs.accessTokenFormat,
      // The current signing key, read per token so a rotation takes effect without a restart.
      jwt: { sign: rs.signingAlg && rs.signingAlg !== this.signingKey().alg ? { alg: rs.signingAlg } : { alg: this.signingKey().alg, kid: this.signingKey().kid } },
    };
  }
}
