import { resolve } from 'node:path';
import { z } from 'zod';

import { AUDIT_CHAIN_ID } from '../adapters/types.js';
import { readJsonFile } from '../adapters/json-syntax-error.js';
import { HOST_PATTERN } from './client-metadata/host-policy.js';
import { mongoClientProblem, mongoUriParts, mongoUriProblem } from './mongodb-uri.js';
import { limitsSchema } from './limits/config.js';
import type { LimitsConfig } from './limits/config.js';
import { adminSchema } from './admin/config.js';
import { clientJwksProblem } from './policies/client-keys.js';
import { displayTextProblem } from './policies/display-text.js';
import type { AdminConfig } from './admin/config.js';

/** A configuration value is wrong. The message names the setting and never echoes a secret. */
export class ConfigError extends Error {
  readonly code = 'invalid_configuration';

  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const vschar = /^[\x20-\x7e]+$/;
/** RFC 6749 §3.3 scope-token (NQCHAR). */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

const absoluteUri = z.string().refine((v) => {
  const u = URL.parse(v);
  return u !== null && !u.hash && !v.includes('#');
}, 'must be an absolute URI without a fragment (RFC 8707)');

/** Most entries of a client's token_exchange_resources. */
export const MAX_EXCHANGE_RESOURCES = 50;

/** The longest access-token lifetime any setting may configure (tiers, resource servers). */
export const MAX_ACCESS_TOKEN_TTL = 3600;

const resourceServerSchema = z.strictObject({
  identifier: absoluteUri,
  name: z.string().min(1).optional(),
  scopes: z.array(z.string().regex(SCOPE_TOKEN, 'must be an RFC 6749 scope-token')).min(1),
  accessTokenTTL: z.number().int().min(1).max(MAX_ACCESS_TOKEN_TTL).default(300),
  accessTokenFormat: z.enum(['jwt', 'opaque']).default('jwt'),
  signingAlg: z.enum(['ES256', 'EdDSA']).optional(),
});

/** The headless wallet sign-in grant (agentauth's own URN namespace), advertised in discovery. */
export const WALLET_GRANT_TYPE = 'urn:agentauth:params:oauth:grant-type:wallet-signature';
export const TOKEN_EXCHANGE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const REGISTRABLE_GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials', WALLET_GRANT_TYPE, TOKEN_EXCHANGE_GRANT_TYPE] as const;

const redirectUri = z.string().min(1).max(2000);

const clientSchema = z
  .strictObject({
    client_id: z
      .string()
      .min(1)
      .max(255)
      .regex(vschar, 'must be visible ASCII (RFC 6749 VSCHAR)')
      .refine((v) => !v.startsWith('$'), 'must not start with "$"'),
    client_name: z.string().optional().superRefine((v, ctx) => {
      const problem = v === undefined ? undefined : displayTextProblem(v);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
    client_secret: z.string().min(32, 'must be at least 32 characters').regex(vschar, 'must be visible ASCII').optional(),
    token_endpoint_auth_method: z.enum(['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt']).default('client_secret_basic'),
    jwks: z.strictObject({ keys: z.array(z.record(z.string(), z.unknown())).min(1) }).optional(),
    grant_types: z.array(z.enum(REGISTRABLE_GRANT_TYPES)).min(1).default(['client_credentials']),
    redirect_uris: z.array(redirectUri).default([]),
    scope: z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/, 'must be space-separated scope-tokens').optional(),
    tier: z.string().min(1).optional(),
    dpop_bound_access_tokens: z.boolean().optional(),
    /** The only resources this client may exchange tokens into (narrows the tokenExchange rules; metadata of the same name). */
    token_exchange_resources: z.array(absoluteUri).min(1).max(MAX_EXCHANGE_RESOURCES).optional(),
    /** The deepest delegation chain this client takes part in (lowers tokenExchange.maxDepth; metadata of the same name). */
    token_exchange_max_depth: z.number().int().min(1).max(10).optional(),
  })
  .superRefine((c, ctx) => {
    const secretMethod = c.token_endpoint_auth_method.startsWith('client_secret');
    if (secretMethod && !c.client_secret) {
      ctx.addIssue({ code: 'custom', path: ['client_secret'], message: `is required for ${c.token_endpoint_auth_method}` });
    }
    if (!secretMethod && c.client_secret) {
      ctx.addIssue({ code: 'custom', path: ['client_secret'], message: `must not be set for ${c.token_endpoint_auth_method}` });
    }
    if (c.token_endpoint_auth_method === 'private_key_jwt' && !c.jwks) {
      ctx.addIssue({ code: 'custom', path: ['jwks'], message: 'is required for private_key_jwt' });
    }
    const jwksProblem = c.jwks === undefined ? undefined : clientJwksProblem(c.jwks);
    if (jwksProblem) ctx.addIssue({ code: 'custom', path: ['jwks'], message: jwksProblem });
    if (c.token_endpoint_auth_method === 'none' && c.grant_types.includes('client_credentials')) {
      ctx.addIssue({ code: 'custom', path: ['grant_types'], message: 'client_credentials needs an authenticated client: set a token_endpoint_auth_method other than none' });
    }
    if (c.grant_types.includes('authorization_code') && c.redirect_uris.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['redirect_uris'], message: 'are required for the authorization_code grant' });
    }
    c.redirect_uris.forEach((uri, i) => {
      const u = URL.parse(uri);
      const loopback = u?.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(u.hostname);
      if (!u || uri.includes('#') || uri.includes('*') || u.username || u.password || !(u.protocol === 'https:' || loopback)) {
        ctx.addIssue({ code: 'custom', path: ['redirect_uris', i], message: 'must be an exact https URI, or http on a loopback host, without fragment or credentials' });
      }
    });
  });

const tierSchema = z.strictObject({
  /** Longest access-token life for this tier; bearer tokens are further capped by maxBearerTokenTTL. */
  accessTokenTTL: z.number().int().min(1).max(MAX_ACCESS_TOKEN_TTL),
  /** A refresh token unused this long expires; each rotation starts a new idle period. */
  refreshTokenIdleTTL: z.number().int().min(60).max(90 * 86400),
  /** No refresh token of a grant lives past this many seconds after the grant's first token. */
  refreshTokenAbsoluteTTL: z.number().int().min(60).max(365 * 86400),
  /** `required`: every token request must carry a DPoP proof (clients get dpop_bound_access_tokens). */
  dpop: z.enum(['required', 'optional']),
  /** Require a server-provided DPoP nonce (RFC 9449 §8) in proofs. */
  dpopNonce: z.boolean(),
  /**
   * Refresh tokens for public clients (token_endpoint_auth_method `none`) that send no DPoP proof. `rotate` (default):
   * a bearer refresh token, single use, rotated on every refresh with reuse detection, bounded by the idle and
   * absolute lifetimes above. `dpop`: such a client gets no refresh token; only a DPoP-bound one is issued.
   */
  publicClientRefresh: z.enum(['rotate', 'dpop']).default('rotate'),
  /**
   * Seconds after a refresh token is rotated during which the same token, presented again by the same client (with
   * the same DPoP key if bound), gets the successor it was rotated to instead of revoking the grant. 0: strict.
   */
  refreshGraceSeconds: z.number().int().min(0).max(60).default(5),
});

/** The tiers agentauth ships; a tier of the same name in the config file replaces one of these. */
export const DEFAULT_TIERS = {
  standard: { accessTokenTTL: 300, refreshTokenIdleTTL: 86_400, refreshTokenAbsoluteTTL: 7 * 86_400, dpop: 'optional', dpopNonce: false, publicClientRefresh: 'rotate', refreshGraceSeconds: 5 },
  bound: { accessTokenTTL: 900, refreshTokenIdleTTL: 86_400, refreshTokenAbsoluteTTL: 30 * 86_400, dpop: 'required', dpopNonce: false, publicClientRefresh: 'dpop', refreshGraceSeconds: 5 },
  strict: { accessTokenTTL: 300, refreshTokenIdleTTL: 3600, refreshTokenAbsoluteTTL: 86_400, dpop: 'required', dpopNonce: true, publicClientRefresh: 'dpop', refreshGraceSeconds: 0 },
} as const satisfies Record<string, z.infer<typeof tierSchema>>;

export const REGISTRABLE_AUTH_METHODS = ['none', 'private_key_jwt', 'client_secret_basic', 'client_secret_post'] as const;

const registrationSchema = z.strictObject({
  /** `open`: anyone may register (quota per IP); `token`: an initial access token is required; `off`: no DCR. */
  mode: z.enum(['open', 'token', 'off']).default('open'),
  quota: z
    .strictObject({ max: z.number().int().min(1).default(20), windowSeconds: z.number().int().min(1).default(3600) })
    .prefault({}),
  allowedAuthMethods: z.array(z.enum(REGISTRABLE_AUTH_METHODS)).min(1).default(['none', 'private_key_jwt', 'client_secret_basic']),
  allowedGrantTypes: z.array(z.enum(REGISTRABLE_GRANT_TYPES)).min(1).default([...REGISTRABLE_GRANT_TYPES]),
  /**
   * What a client registered anonymously (open mode: no initial access token) may do without a person's consent.
   * Default: nothing. Such a client gets tokens only through flows a person signs or consents to (authorization code,
   * the wallet grant); `client_credentials` is machine access nobody consented to, so the operator opts in.
   */
  anonymous: z
    .strictObject({
      /** Whether anonymous registrations may use the client_credentials grant at all. */
      clientCredentials: z.boolean().default(false),
      /** The scopes such a client may receive through client_credentials (an allowlist; empty: none). */
      clientCredentialsScopes: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
  /** Tier of clients registered without an initial access token naming one. */
  defaultTier: z.string().min(1).default('standard'),
  /** Lifetime of initial access tokens created by `agentauth clients iat create` without --expires-in. */
  initialAccessTokenTTL: z.number().int().min(60).max(30 * 86400).default(86400),
});

const hostPattern = z.string().transform((v) => v.toLowerCase()).pipe(z.string().regex(HOST_PATTERN, 'must be a host name (agent.example.com) or a suffix pattern (*.example.com)'));

/** The OpenID Connect scopes agentauth serves, besides the resource servers' own. */
export const OIDC_SCOPES: readonly string[] = ['openid'];

/** Every scope a client may register or a token may carry: the resource servers' and the OpenID ones. */
export function knownScopes(config: Pick<Config, 'resourceServers'>): ReadonlySet<string> {
  return new Set([...OIDC_SCOPES, ...config.resourceServers.flatMap((rs) => rs.scopes)]);
}

/** How a tier is named (the keys of `tiers`; an initial access token names one). */
export const TIER_NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/** Client ID metadata documents (https URLs as client_id); docs/configuration.md and server/client-metadata/. */
const clientMetadataDocumentsSchema = z.strictObject({
  /** Default: on when registration.mode is "open" (anyone may already become a client), off otherwise. */
  enabled: z.boolean().optional(),
  /** When non-empty, documents are fetched only from these hosts. */
  allowedHosts: z.array(hostPattern).default([]),
  /** Never fetched from these hosts (wins over allowedHosts). */
  deniedHosts: z.array(hostPattern).default([]),
  /** Fetched only on these ports (the URL's, 443 when it names none). */
  allowedPorts: z
    .array(z.number().int().min(1).max(65_535))
    .min(1)
    .refine((ports) => new Set(ports).size === ports.length, 'must not list a port twice')
    .default([443]),
  /** Largest document accepted, in bytes. */
  maxBytes: z.number().int().min(256).max(65_536).default(5120),
  /** The whole fetch (DNS, connect, TLS, body) must finish within this. */
  timeoutMs: z.number().int().min(100).max(10_000).default(3000),
  /** Documents fetched at once, per process; a request that needs one more is answered 503 temporarily_unavailable. */
  maxConcurrentFetches: z.number().int().min(1).max(1000).default(16),
  cache: z
    .strictObject({
      defaultTTL: z.number().int().min(0).max(7 * 86_400).default(300),
      minTTL: z.number().int().min(0).max(86_400).default(30),
      maxTTL: z.number().int().min(1).max(7 * 86_400).default(86_400),
      maxEntries: z.number().int().min(1).max(100_000).default(1000),
    })
    .prefault({}),
});

const walletSchema = z.strictObject({
  /** Chains whose accounts may sign in, by EIP-155 chain id; rpcUrl enables EIP-1271 contract wallets on that chain. */
  chains: z
    .record(
      z.string().regex(/^[1-9][0-9]{0,15}$/, 'chain ids are positive integers'),
      z.strictObject({ rpcUrl: z.string().regex(/^https?:\/\//, 'must be an http(s) JSON-RPC URL').optional() }),
    )
    .default({ '1': {} }),
  /** Extra EIP-4361 `domain` values accepted besides the issuer's host. */
  domains: z.array(z.string().min(1)).default([]),
  /** Extra origins accepted for the message `uri` besides the issuer's origin. */
  origins: z.array(z.string().regex(/^https?:\/\/[^/]+$/, 'must be an origin such as https://app.example.com')).default([]),
  issuedAtWindowSeconds: z.number().int().min(10).max(3600).default(300),
  clockSkewSeconds: z.number().int().min(0).max(300).default(60),
  nonceTTL: z.number().int().min(30).max(3600).default(300),
  rpcTimeoutMs: z.number().int().min(100).max(30_000).default(5000),
});

/** What the optional JSON file named by AGENTAUTH_CONFIG may hold. */
const fileSchema = z.strictObject({
  resourceServers: z.array(resourceServerSchema).default([]),
  clients: z.array(clientSchema).default([]),
  storage: z
    .strictObject({
      timeoutMs: z.number().int().min(100).max(60_000).default(2000),
      sweepIntervalMs: z.number().int().min(1000).default(60_000),
      /**
       * SQLite store only: `full` fsyncs the WAL at every commit, before the write is acknowledged (an acknowledged
       * write survives a machine crash); `normal` fsyncs at checkpoints only (it survives a process crash; a power loss may roll back the last commits).
       */
      sqliteSynchronous: z.enum(['full', 'normal']).default('full'),
      /**
       * Tokens, codes and registration access tokens stored before credentials were kept under keyed hashes (under
       * their own values): `accept` finds them (an upgrade loses none); `refuse` ignores them, so that whoever can
       * write to the database cannot plant a record under a value of their choosing (adapters/sealed-credential-ids.ts).
       */
      unsealedCredentials: z.enum(['accept', 'refuse']).default('accept'),
    })
    .prefault({}),
  shutdownTimeoutMs: z.number().int().min(0).max(300_000).default(10_000),
  registration: registrationSchema.prefault({}),
  clientIdMetadataDocuments: clientMetadataDocumentsSchema.prefault({}),
  tiers: z.record(z.string().regex(TIER_NAME, 'tier names are 1-32 of a-z 0-9 _ -'), tierSchema).default({}),
  /** Cap for access tokens that are not sender-constrained; may only be lowered from 300 s. */
  maxBearerTokenTTL: z.number().int().min(1).max(300, 'may only be lowered: a bearer access token never lives more than 300 s').default(300),
  wallet: walletSchema.prefault({}),
  /** Request limits shared across instances (server/limits/config.ts). */
  limits: limitsSchema.prefault({}),
  keys: z
    .strictObject({
      /** Seconds a new key is published before it signs (verifiers refresh their JWKS caches meanwhile). */
      publishDelaySeconds: z.number().int().min(0).max(86_400).default(600),
      /** How often each instance re-reads the key states (and so how soon it follows a rotation). */
      refreshIntervalSeconds: z.number().int().min(1).max(3600).default(10),
      /** Clock skew and JWKS cache slack added to the longest token lifetime before a retired key is archived. */
      clockSkewSeconds: z.number().int().min(0).max(3600).default(300),
      /** Rotate automatically this long after the current key started signing (off when unset). */
      rotationIntervalSeconds: z.number().int().min(5).max(366 * 86_400).optional(),
    })
    .prefault({}),
  admin: adminSchema,
  /** RFC 8693 token exchange (server/policies/delegation.ts): who may exchange a token for which next resource. */
  tokenExchange: z
    .strictObject({
      maxDepth: z.number().int().min(1).max(10).default(3),
      allowAnonymous: z.boolean().default(false),
      rules: z
        .array(
          z.strictObject({
            clients: z.array(z.string().min(1)).optional(),
            tiers: z.array(z.string().min(1)).optional(),
            from: z.array(z.string().min(1)).min(1),
            to: z.array(z.string().min(1)).min(1),
            scopes: z.array(z.string().min(1)).optional(),
            /** The issued token carries may_act naming this client: only it may exchange the token further. */
            nextActor: z.string().min(1).optional(),
          }),
        )
        .default([]),
    })
    .prefault({}),
  dpop: z
    .strictObject({
      /** base64 of 32 bytes, identical on every instance; derived from the KEK when unset. */
      nonceSecret: z.string().optional(),
    })
    .prefault({}),
});

type ExchangeRule = z.infer<typeof fileSchema>['tokenExchange']['rules'][number];

const meets = (a: readonly string[] | undefined, b: readonly string[] | undefined) => a === undefined || b === undefined || a.some((x) => b.includes(x));

/**
 * Two rules that could both allow one client the same hop (a `from` and a `to` in common) while naming different
 * next actors: the first such pair of indexes, or undefined. A client of the configuration file has a known tier
 * (`tierOf` answers it); any other client id could be registered in any tier.
 */
export function nextActorConflict(rules: readonly ExchangeRule[], tierOf: (clientId: string) => string | undefined): [number, number] | undefined {
  const sameClient = (a: ExchangeRule, b: ExchangeRule) => {
    const candidates = a.clients && b.clients ? a.clients.filter((c) => b.clients!.includes(c)) : (a.clients ?? b.clients);
    if (candidates === undefined) return meets(a.tiers, b.tiers);
    return candidates.some((c) => {
      const tier = tierOf(c);
      if (tier === undefined) return meets(a.tiers, b.tiers);
      return (a.tiers?.includes(tier) ?? true) && (b.tiers?.includes(tier) ?? true);
    });
  };
  for (let j = 0; j < rules.length; j += 1) {
    for (let i = 0; i < j; i += 1) {
      const a = rules[i]!;
      const b = rules[j]!;
      if (a.nextActor === undefined || b.nextActor === undefined || a.nextActor === b.nextActor) continue;
      if (meets(a.from, b.from) && meets(a.to, b.to) && sameClient(a, b)) return [i, j];
    }
  }
  return undefined;
}

const port = z
  .string()
  .regex(/^\d+$/, 'must be an integer from 1 to 65535')
  .transform(Number)
  .refine((n) => n >= 1 && n <= 65535, 'must be an integer from 1 to 65535');

/**
 * What an issuer must be, for ISSUER and for `keys export --issuer` (issuerProblem): an http(s) URL with no path,
 * query or fragment.
 */
const issuerUrl = z
  .string()
  .refine((v) => {
    const u = URL.parse(v);
    return u !== null && (u.protocol === 'https:' || u.protocol === 'http:') && !u.search && !v.includes('?') && !v.includes('#');
  }, 'must be an http(s) URL with no query or fragment')
  // agentauth serves its endpoints at the root of its host: with a path in the issuer, discovery at the issuer's
  // well-known URL (RFC 8414 §3, OIDC Discovery §4) and every endpoint URL would miss it, and clients refuse it.
  .refine((v) => { const u = URL.parse(v); return u === null || u.pathname === '/' || u.pathname === ''; }, 'must have no path (https://auth.example.com, not https://auth.example.com/tenant): agentauth serves its endpoints at the root of its host; give it a host of its own');

/** Why `value` cannot be agentauth's issuer (the ISSUER rule), or undefined when it can. */
export function issuerProblem(value: string): string | undefined {
  const parsed = issuerUrl.safeParse(value);
  return parsed.success ? undefined : parsed.error.issues.map((i) => i.message).join('; ');
}

const envSchema = z.object({
  PORT: port.optional(),
  HOST: z.string().min(1).optional(),
  ISSUER: issuerUrl.optional(),
  MONGODB_URI: z
    .string()
    .regex(/^mongodb(\+srv)?:\/\//, 'must start with mongodb:// or mongodb+srv://')
    .superRefine((uri, ctx) => {
      if (!/^mongodb(\+srv)?:\/\//.test(uri)) return;
      const problem = mongoUriProblem(uri) ?? mongoClientProblem(uri);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
  MONGODB_DB: z.string().regex(/^[A-Za-z0-9_-]{1,63}$/, 'must be 1-63 letters, digits, "_" or "-"').optional(),
  AGENTAUTH_CONFIG: z.string().min(1).optional(),
  AGENTAUTH_DATA_DIR: z.string().min(1).optional(),
  /** Without MONGODB_URI: `sqlite` (default, durable) or `memory` (a throwaway store that forgets everything on exit). */
  AGENTAUTH_STORE: z.enum(['sqlite', 'memory']).optional(),
  AGENTAUTH_KEK: z.string().min(1).optional(),
  AGENTAUTH_KEK_FILE: z.string().min(1).optional(),
  /** A second KEK, during a rotation of the KEK: what was sealed, hashed or keyed under it is still read, nothing new is written under it. */
  AGENTAUTH_KEK_FALLBACK: z.string().min(1).optional(),
  AGENTAUTH_KEK_FALLBACK_FILE: z.string().min(1).optional(),
  AGENTAUTH_KEY_ALG: z.enum(['ES256', 'EdDSA']).optional(),
  AGENTAUTH_AUDIT_CHAIN: z.string().regex(AUDIT_CHAIN_ID, 'must be 1-100 letters, digits, ".", "_", ":", "#" or "-"').optional(),
  TRUST_PROXY: z.enum(['true', 'false']).optional(),
  AGENTAUTH_ADMIN_TOKEN: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).optional(),
});

export type ResourceServerConfig = z.infer<typeof resourceServerSchema>;
export type TierConfig = z.infer<typeof tierSchema>;
export type RegistrationConfig = z.infer<typeof registrationSchema>;
export type WalletConfig = z.infer<typeof walletSchema>;
export type ClientMetadataDocumentsConfig = Omit<z.infer<typeof clientMetadataDocumentsSchema>, 'enabled'> & { enabled: boolean };
export interface KeysConfig {
  publishDelaySeconds: number;
  refreshIntervalSeconds: number;
  clockSkewSeconds: number;
  rotationIntervalSeconds?: number | undefined;
}
export type StaticClientConfig = z.infer<typeof clientSchema>;

export interface Config {
  port: number;
  host: string | undefined;
  issuer: string;
  /**
   * The issuer's origin when ISSUER is set: every URL the server builds from a request (discovery, DPoP `htu`, client
   * assertion audiences) starts with it. Undefined when ISSUER is unset: URLs follow each request's Host.
   */
  publicOrigin: string | undefined;
  /** Trust X-Forwarded-Proto/-Host/-For from a reverse proxy in front of agentauth. */
  trustProxy: boolean;
  mongodb: { uri: string; dbName: string } | undefined;
  /** Where everything is stored: MongoDB when MONGODB_URI is set, else SQLite in the data directory, or memory on request. */
  store: 'mongodb' | 'sqlite' | 'memory';
  dataDir: string;
  kek: string | undefined;
  kekFile: string | undefined;
  /** AGENTAUTH_KEK_FALLBACK(_FILE): the KEK being rotated away from (keys/kek.ts, docs/operations.md "Rotating the KEK"). */
  kekFallback: string | undefined;
  kekFallbackFile: string | undefined;
  keyAlg: 'ES256' | 'EdDSA';
  /** This server process's audit chain (default: server/audit/writer-chain.ts). */
  auditChain: string | undefined;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  configFile: string | undefined;
  resourceServers: ResourceServerConfig[];
  clients: StaticClientConfig[];
  storage: { timeoutMs: number; sweepIntervalMs: number; sqliteSynchronous: 'full' | 'normal'; unsealedCredentials: 'accept' | 'refuse' };
  shutdownTimeoutMs: number;
  registration: RegistrationConfig;
  clientIdMetadataDocuments: ClientMetadataDocumentsConfig;
  tiers: Record<string, TierConfig>;
  maxBearerTokenTTL: number;
  dpopNonceSecret: string | undefined;
  wallet: WalletConfig;
  keys: KeysConfig;
  limits: LimitsConfig;
  /** The admin listener (server/admin/). */
  admin: AdminConfig;
  tokenExchange: TokenExchangeConfig;
}
export type TokenExchangeConfig = z.infer<typeof fileSchema>['tokenExchange'];

/**
 * `start --workers N`: N from 1 to 64 (1 when not given); several workers need a store they can share, so not the
 * memory store. Throws ConfigError (exit 2) otherwise.
 */
export function workersCount(value: string | undefined, config: Pick<Config, 'store'>): number {
  // Decimal digits only, as --expires-in and -n take them: Number() also read 0x2, 2e0, 1.0 and ' 2' as whole numbers.
  const workers = value === undefined ? 1 : /^[0-9]{1,2}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new ConfigError('--workers: must be a whole number from 1 to 64');
  if (workers > 1 && config.store === 'memory') {
    throw new ConfigError('--workers: several workers need a shared store (SQLite, the default, or MONGODB_URI); AGENTAUTH_STORE=memory lives inside one process');
  }
  return workers;
}

/** Seconds a retired key stays published: the longest token any key can sign, plus clock skew. */
export function retireGraceSeconds(config: Pick<Config, 'tiers' | 'resourceServers' | 'keys'>): number {
  return longestSignedTokenLifetime(config) + config.keys.clockSkewSeconds;
}

/** The longest life of anything agentauth signs: access tokens (tiers, resource servers); ID tokens never live longer. */
export function longestSignedTokenLifetime(config: Pick<Config, 'tiers' | 'resourceServers'>): number {
  return Math.max(...Object.values(config.tiers).map((t) => t.accessTokenTTL), ...config.resourceServers.map((rs) => rs.accessTokenTTL));
}

/** The database named in the path of a mongodb:// URI, if any. */
function databaseInUri(uri: string): string | undefined {
  return mongoUriParts(uri)?.database;
}

/** `a.b[0].c`: a path inside the configuration, as the messages name it. */
const settingPath = (path: readonly PropertyKey[]): string =>
  path.reduce<string>((acc, seg) => (typeof seg === 'number' ? `${acc}[${seg}]` : acc ? `${acc}.${String(seg)}` : String(seg)), '');

/**
 * One line per problem, each naming its setting: an unknown member by its own path (not its parent's), a record key
 * (a tier name, a chain id) with the rule it breaks rather than zod's "Invalid key in record".
 */
function describe(prefix: string, error: z.ZodError): string {
  const line = (path: readonly PropertyKey[], message: string) => `${prefix}${settingPath(path)}`.trimEnd() + `: ${message}`;
  return error.issues
    .flatMap((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((key) => line([...issue.path, key], 'not a setting agentauth knows (check its spelling against docs/configuration.md)'));
      }
      if (issue.code === 'invalid_key') return [line(issue.path, issue.issues.map((i) => i.message).join('; '))];
      return [line(issue.path, issue.message)];
    })
    .join('; ');
}

function readConfigFile(path: string): unknown {
  const read = readJsonFile(path);
  if ('error' in read) throw new ConfigError(`AGENTAUTH_CONFIG: ${read.error}`);
  return read.value;
}

/** Reads and validates configuration once: environment variables, then the JSON file AGENTAUTH_CONFIG names. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsedEnv = envSchema.safeParse(present);
  if (!parsedEnv.success) throw new ConfigError(describe('', parsedEnv.error));
  const e = parsedEnv.data;
  if (e.MONGODB_URI && e.AGENTAUTH_STORE) {
    throw new ConfigError(`AGENTAUTH_STORE: ${e.AGENTAUTH_STORE} is the store used without MONGODB_URI; unset one of the two`);
  }
  if (e.AGENTAUTH_KEK && e.AGENTAUTH_KEK_FILE) {
    throw new ConfigError('AGENTAUTH_KEK_FILE: set either AGENTAUTH_KEK or AGENTAUTH_KEK_FILE, not both');
  }
  if (e.AGENTAUTH_KEK_FALLBACK && e.AGENTAUTH_KEK_FALLBACK_FILE) {
    throw new ConfigError('AGENTAUTH_KEK_FALLBACK_FILE: set either AGENTAUTH_KEK_FALLBACK or AGENTAUTH_KEK_FALLBACK_FILE, not both');
  }


  const configFile = e.AGENTAUTH_CONFIG ? resolve(e.AGENTAUTH_CONFIG) : undefined;
  const parsedFile = fileSchema.safeParse(configFile ? readConfigFile(configFile) : {});
  if (!parsedFile.success) throw new ConfigError(describe('AGENTAUTH_CONFIG ', parsedFile.error));
  const file = parsedFile.data;

  // Compared as URLs (RFC 3986 §6.2.2-6.2.3: scheme and host case, an empty path and '/', a default port): two
  // spellings of one resource server would each get their own scopes, format and lifetime, and a resource server
  // that normalises `aud` would accept the tokens of both.
  const ids = new Set<string>();
  const byUrl = new Map<string, string>();
  file.resourceServers.forEach((rs, i) => {
    const same = URL.parse(rs.identifier)?.href ?? rs.identifier;
    const earlier = byUrl.get(same);
    if (earlier === rs.identifier) throw new ConfigError(`AGENTAUTH_CONFIG resourceServers[${i}].identifier: duplicate ${rs.identifier}`);
    if (earlier !== undefined) throw new ConfigError(`AGENTAUTH_CONFIG resourceServers[${i}].identifier: ${rs.identifier} is the same URL as ${earlier} (both are ${same}): configure each resource server once`);
    byUrl.set(same, rs.identifier);
    ids.add(rs.identifier);
  });
  const clientIds = new Set<string>();
  file.clients.forEach((c, i) => {
    if (clientIds.has(c.client_id)) throw new ConfigError(`AGENTAUTH_CONFIG clients[${i}].client_id: duplicate ${c.client_id}`);
    clientIds.add(c.client_id);
  });

  const knownScopes = new Set(file.resourceServers.flatMap((rs) => rs.scopes));
  file.registration.anonymous.clientCredentialsScopes.forEach((scope, i) => {
    if (!knownScopes.has(scope)) {
      throw new ConfigError(`AGENTAUTH_CONFIG registration.anonymous.clientCredentialsScopes[${i}]: ${JSON.stringify(scope)} is not a scope of any resource server`);
    }
  });

  file.tokenExchange.rules.forEach((rule, i) => {
    for (const key of ['from', 'to'] as const) {
      const unknown = rule[key].find((id) => !ids.has(id));
      if (unknown !== undefined) throw new ConfigError(`AGENTAUTH_CONFIG tokenExchange.rules[${i}].${key}: ${unknown} is not a configured resource server identifier`);
    }
    if (rule.clients === undefined && rule.tiers === undefined) throw new ConfigError(`AGENTAUTH_CONFIG tokenExchange.rules[${i}]: name the clients or the tiers the rule is for`);
  });
  const conflict = nextActorConflict(file.tokenExchange.rules, (id) => {
    const c = file.clients.find((entry) => entry.client_id === id);
    return c ? (c.tier ?? file.registration.defaultTier) : undefined;
  });
  if (conflict) {
    const [i, j] = conflict;
    throw new ConfigError(
      `AGENTAUTH_CONFIG tokenExchange.rules[${j}].nextActor: rules[${i}] and rules[${j}] can both allow one client the same hop, and name different next actors (${file.tokenExchange.rules[i]!.nextActor}, ${file.tokenExchange.rules[j]!.nextActor}); a token can name only one: make them agree, or make their clients, tiers or hops distinct`,
    );
  }

  const tiers: Record<string, TierConfig> = { ...DEFAULT_TIERS, ...file.tiers };
  const noTier = (setting: string, name: string) => new ConfigError(`AGENTAUTH_CONFIG ${setting}: no tier named ${name} (tiers: ${Object.keys(tiers).join(', ')})`);
  if (!tiers[file.registration.defaultTier]) {
    throw noTier('registration.defaultTier', file.registration.defaultTier);
  }
  // A rule naming a tier or a scope that does not exist would never match or never carry it, silently.
  file.tokenExchange.rules.forEach((rule, i) => {
    const unknownTier = rule.tiers?.find((t) => !tiers[t]);
    if (unknownTier !== undefined) {
      throw noTier(`tokenExchange.rules[${i}].tiers`, unknownTier);
    }
    const targetScopes = new Set(file.resourceServers.filter((rs) => rule.to.includes(rs.identifier)).flatMap((rs) => rs.scopes));
    const unknownScope = rule.scopes?.find((scope) => !targetScopes.has(scope));
    if (unknownScope !== undefined) {
      throw new ConfigError(`AGENTAUTH_CONFIG tokenExchange.rules[${i}].scopes: ${JSON.stringify(unknownScope)} is not a scope of any resource server in the rule's "to"`);
    }
  });
  file.clients.forEach((c, i) => {
    if (c.tier !== undefined && !tiers[c.tier]) {
      throw noTier(`clients[${i}].tier`, c.tier);
    }
    const unknown = c.token_exchange_resources?.find((id) => !ids.has(id));
    if (unknown !== undefined) throw new ConfigError(`AGENTAUTH_CONFIG clients[${i}].token_exchange_resources: ${unknown} is not a configured resource server identifier`);
    if (c.token_exchange_resources && new Set(c.token_exchange_resources).size !== c.token_exchange_resources.length) {
      throw new ConfigError(`AGENTAUTH_CONFIG clients[${i}].token_exchange_resources: must not repeat a resource`);
    }
  });
  for (const [name, tier] of Object.entries(file.tiers)) {
    if (tier.refreshTokenIdleTTL > tier.refreshTokenAbsoluteTTL) {
      throw new ConfigError(`AGENTAUTH_CONFIG tiers.${name}.refreshTokenIdleTTL: must not exceed refreshTokenAbsoluteTTL`);
    }
    if (tier.dpopNonce && tier.dpop !== 'required') {
      throw new ConfigError(`AGENTAUTH_CONFIG tiers.${name}.dpopNonce: nonces need dpop "required"`);
    }
  }
  const cimdCache = file.clientIdMetadataDocuments.cache;
  if (cimdCache.minTTL > cimdCache.maxTTL) throw new ConfigError('AGENTAUTH_CONFIG clientIdMetadataDocuments.cache.minTTL: must not exceed maxTTL');
  if (file.dpop.nonceSecret !== undefined) {
    const raw = Buffer.from(file.dpop.nonceSecret, 'base64');
    if (raw.length !== 32) throw new ConfigError('AGENTAUTH_CONFIG dpop.nonceSecret: must be 32 bytes encoded as base64');
  }

  const listenPort = e.PORT ?? 3000;
  if (file.admin.port === listenPort) {
    // Never the public port: the admin API must not be reachable where clients are, and two listeners on one port
    // would otherwise fail later, at listen, with EADDRINUSE.
    throw new ConfigError(`AGENTAUTH_CONFIG admin.port: must differ from PORT (${listenPort}), which serves the public endpoints`);
  }
  return {
    port: listenPort,
    host: e.HOST,
    issuer: (e.ISSUER ?? `http://localhost:${listenPort}`).replace(/\/$/, ''),
    publicOrigin: e.ISSUER === undefined ? undefined : new URL(e.ISSUER).origin,
    trustProxy: e.TRUST_PROXY === 'true',
    mongodb: e.MONGODB_URI ? { uri: e.MONGODB_URI, dbName: e.MONGODB_DB ?? databaseInUri(e.MONGODB_URI) ?? 'agentauth' } : undefined,
    store: e.MONGODB_URI ? 'mongodb' : (e.AGENTAUTH_STORE ?? 'sqlite'),
    dataDir: resolve(e.AGENTAUTH_DATA_DIR ?? '.agentauth'),
    kek: e.AGENTAUTH_KEK,
    kekFile: e.AGENTAUTH_KEK_FILE,
    kekFallback: e.AGENTAUTH_KEK_FALLBACK,
    kekFallbackFile: e.AGENTAUTH_KEK_FALLBACK_FILE,
    keyAlg: e.AGENTAUTH_KEY_ALG ?? 'ES256',
    auditChain: e.AGENTAUTH_AUDIT_CHAIN,
    logLevel: e.LOG_LEVEL ?? 'info',
    configFile,
    resourceServers: file.resourceServers,
    clients: file.clients,
    storage: file.storage,
    shutdownTimeoutMs: file.shutdownTimeoutMs,
    registration: file.registration,
    clientIdMetadataDocuments: {
      ...file.clientIdMetadataDocuments,
      enabled: file.clientIdMetadataDocuments.enabled ?? file.registration.mode === 'open',
    },
    tiers,
    maxBearerTokenTTL: file.maxBearerTokenTTL,
    dpopNonceSecret: file.dpop.nonceSecret,
    wallet: file.wallet,
    keys: file.keys,
    limits: file.limits,
    tokenExchange: file.tokenExchange,
    admin: { host: file.admin.host, port: file.admin.port, tokenFile: file.admin.tokenFile === undefined ? undefined : resolve(file.admin.tokenFile), token: e.AGENTAUTH_ADMIN_TOKEN },
  };
}
