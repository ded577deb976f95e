import type { TokenExchangeConfig } from '../config.js';

/**
 * RFC 8693 token exchange as a pure decision: given the verified subject token, the exchanging client and the
 * requested target and scope, either what may be issued or the refusal with its OAuth error code. No I/O here.
 */

/** Client metadata (registration, or a client of the configuration file): the only resources it may exchange into. */
export const EXCHANGE_RESOURCES_FIELD = 'token_exchange_resources';
/** Client metadata: the deepest chain (actors, its own hop included) this client takes part in; never above tokenExchange.maxDepth. */
export const EXCHANGE_MAX_DEPTH_FIELD = 'token_exchange_max_depth';
/** The largest maxDepth there is (tokenExchange.maxDepth's own bound). */
export const MAX_CHAIN_DEPTH = 10;

export function exchangeMaxDepthProblem(value: unknown): string | undefined {
  return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_CHAIN_DEPTH ? undefined : `must be an integer from 1 to ${MAX_CHAIN_DEPTH}`;
}

/**
 * Checks a client's token_exchange_resources: a non-empty array of at most `max` distinct resource server identifiers
 * this server has; returns what is wrong (for invalid_client_metadata), or undefined.
 */
export function exchangeResourcesProblem(value: unknown, known: ReadonlySet<string>, max: number): string | undefined {
  if (!Array.isArray(value) || value.length === 0 || value.length > max) return `must be an array of 1 to ${max} resource identifiers`;
  const unknown = value.find((v) => typeof v !== 'string' || !known.has(v));
  if (unknown !== undefined) return `${JSON.stringify(unknown).slice(0, 200)} is not a resource server of this authorization server`;
  if (new Set(value).size !== value.length) return 'must not repeat a resource';
  return undefined;
}

/**
 * RFC 8693 §2.2.2: a subject or actor token that is invalid, or unacceptable by policy, is `invalid_request` (a MUST);
 * a target the server will not issue for is `invalid_target`.
 */
export type DelegationErrorCode = 'invalid_request' | 'invalid_target' | 'invalid_scope' | 'unauthorized_client';

export class DelegationRefusal extends Error {
  constructor(readonly code: DelegationErrorCode, message: string) {
    super(message);
    this.name = 'DelegationRefusal';
  }
}

/** RFC 8693 §4.1 actor claim: the current actor, with the earlier ones nested inside. */
export interface ActClaim {
  client_id?: string;
  sub?: string;
  act?: ActClaim;
}

export interface SubjectFacts {
  /** The resource the subject token was issued for (its `aud`). */
  audience: string;
  scope: string[];
  clientId: string;
  act?: ActClaim;
  mayAct?: { client_id?: string; sub?: string };
  /** DPoP key thumbprint the subject token is bound to. */
  jkt?: string;
}

export interface ExchangerFacts {
  clientId: string;
  tier?: string;
  /** `agentauth_registration`: how the client was registered (anonymous, initial_access_token, static...). */
  registration?: string;
  /** Thumbprint of the DPoP key the exchange request proves, if any. */
  jkt?: string;
  /** The client does not authenticate (`token_endpoint_auth_method: none`): anyone can send its client_id. */
  public?: boolean;
  /** `token_exchange_resources` of the client's metadata: the only targets it may exchange into, when present. */
  resources?: readonly string[];
  /** `token_exchange_max_depth` of the client's metadata: lowers tokenExchange.maxDepth for its hops. */
  maxDepth?: number;
}

export interface DelegationDecision {
  scope: string[];
  act: ActClaim;
  /** RFC 8693 §4.4 for the issued token, when the hop's rule names the only client that may exchange it next. */
  mayAct?: { client_id: string };
  depth: number;
}

/** Number of actors in a chain (`act` nested n deep is depth n). */
export function chainDepth(act: ActClaim | undefined): number {
  let n = 0;
  for (let a = act; a; a = a.act) n++;
  return n;
}

/** The rules that name this client, by id or by tier. */
function rulesFor(policy: TokenExchangeConfig, exchanger: ExchangerFacts): TokenExchangeConfig['rules'] {
  return policy.rules.filter(
    (r) => (r.clients === undefined || r.clients.includes(exchanger.clientId)) && (r.tiers === undefined || (exchanger.tier !== undefined && r.tiers.includes(exchanger.tier))) && (r.clients !== undefined || r.tiers !== undefined),
  );
}

/**
 * What can be refused from the exchanging client alone, before the subject token is looked at: a client that may not
 * exchange at all learns nothing about the tokens it presents (whether one is active, what it is for).
 */
export function checkExchanger(policy: TokenExchangeConfig, exchanger: ExchangerFacts): void {
  if (exchanger.registration === 'anonymous' && !policy.allowAnonymous) {
    throw new DelegationRefusal('unauthorized_client', 'clients registered anonymously may not exchange tokens on this server (the operator enables it with tokenExchange.allowAnonymous)');
  }
  if (rulesFor(policy, exchanger).length === 0) {
    throw new DelegationRefusal('unauthorized_client', `no tokenExchange rule of this server names client ${exchanger.clientId} (by its id or its tier): it may not exchange tokens`);
  }
}

/**
 * The `may_act` of a token issued for one hop: the next actor the hop's rules name. Rules that allow the same hop are
 * alternatives, and a rule that names no next actor lets any client exchange the token further; so when some name
 * one and others none, the named one is kept (the narrower token). Two different names cannot both be honoured by one
 * token, and issuing it with neither would let anyone act next: the exchange is refused, naming the rules.
 */
function nextActorOf(hop: TokenExchangeConfig['rules']): { client_id: string } | undefined {
  const named = [...new Set(hop.flatMap((r) => (r.nextActor === undefined ? [] : [r.nextActor])))];
  if (named.length > 1) {
    throw new DelegationRefusal(
      'invalid_request',
      `the tokenExchange rules that allow this hop name different next actors (${named.join(', ')}); one token can name only one, so none is issued until the operator makes the rules agree`,
    );
  }
  return named.length === 1 ? { client_id: named[0]! } : undefined;
}

export function decideExchange(
  policy: TokenExchangeConfig,
  subject: SubjectFacts,
  exchanger: ExchangerFacts,
  target: { resource: string; scopes: string[] },
  requestedScope: string[] | undefined,
): DelegationDecision {
  checkExchanger(policy, exchanger);
  // §4.4 may_act: when present, only the named party may act for the subject.
  if (subject.mayAct) {
    const named = (subject.mayAct.client_id !== undefined && subject.mayAct.client_id === exchanger.clientId) || (subject.mayAct.sub !== undefined && subject.mayAct.sub === exchanger.clientId);
    if (!named) throw new DelegationRefusal('invalid_request', `the subject token's may_act does not name client ${exchanger.clientId}`);
  }
  // RFC 8693 §2.1: without client authentication, anyone holding a token could have it exchanged under the public
  // client's name, and the new token bound to their own key. A public client proves possession instead: it may
  // exchange only a DPoP-bound token, with a proof of that token's key.
  if (exchanger.public && !subject.jkt) {
    throw new DelegationRefusal(
      'invalid_request',
      'a public client may exchange only a DPoP-bound subject token, proving its key; to exchange tokens it received, the client must authenticate (client_secret_basic, client_secret_post or private_key_jwt)',
    );
  }
  // A bound token stays with its key: its own holder may not re-bind it to a different key by exchanging it, nor may
  // a client that cannot be told from anyone else.
  if (subject.jkt && (subject.clientId === exchanger.clientId || exchanger.public) && subject.jkt !== exchanger.jkt) {
    throw new DelegationRefusal('invalid_request', 'the subject token is DPoP-bound to another key: send the exchange request with a DPoP proof of the key the subject token is bound to');
  }
  const fromRules = rulesFor(policy, exchanger).filter((r) => r.from.includes(subject.audience));
  if (fromRules.length === 0) {
    throw new DelegationRefusal('invalid_request', `client ${exchanger.clientId} may not act for tokens issued for ${subject.audience} (no tokenExchange rule names it with that resource in "from")`);
  }
  if (exchanger.resources && !exchanger.resources.includes(target.resource)) {
    throw new DelegationRefusal(
      'invalid_target',
      `client ${exchanger.clientId} may exchange tokens only into ones for ${exchanger.resources.join(', ')} (its token_exchange_resources), not ${target.resource}`,
    );
  }
  const hop = fromRules.filter((r) => r.to.includes(target.resource));
  if (hop.length === 0) {
    throw new DelegationRefusal('invalid_target', `client ${exchanger.clientId} may not exchange a token for ${subject.audience} into one for ${target.resource} (no tokenExchange rule allows that hop)`);
  }
  const depth = chainDepth(subject.act) + 1;
  if (depth > policy.maxDepth) {
    throw new DelegationRefusal('invalid_request', `the delegation chain would be ${depth} actors deep; this server allows at most ${policy.maxDepth} (tokenExchange.maxDepth)`);
  }
  if (exchanger.maxDepth !== undefined && depth > exchanger.maxDepth) {
    throw new DelegationRefusal('invalid_request', `the delegation chain would be ${depth} actors deep; client ${exchanger.clientId} takes part in chains of at most ${exchanger.maxDepth} (its token_exchange_max_depth)`);
  }
  const hopScopes = new Set(hop.flatMap((r) => r.scopes ?? target.scopes));
  const subjectScopes = new Set(subject.scope);
  const allowed = target.scopes.filter((s) => subjectScopes.has(s) && hopScopes.has(s));
  let scope: string[];
  if (requestedScope === undefined) {
    scope = allowed;
  } else {
    const beyond = requestedScope.filter((s) => !allowed.includes(s));
    if (beyond.length > 0) {
      throw new DelegationRefusal('invalid_scope', `scope ${beyond.join(' ')} is wider than this hop allows: at most ${allowed.join(' ') || '(none)'} (the subject token's scopes, the target's scopes and the tokenExchange rule)`);
    }
    scope = requestedScope;
  }
  if (scope.length === 0) throw new DelegationRefusal('invalid_scope', `no scope of the subject token (${subject.scope.join(' ') || 'none'}) may be carried to ${target.resource}`);
  const act: ActClaim = { client_id: exchanger.clientId, ...(subject.act ? { act: subject.act } : {}) };
  const mayAct = nextActorOf(hop);
  return { scope, act, depth, ...(mayAct ? { mayAct } : {}) };
}
