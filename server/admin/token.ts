import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { ConfigError } from '../config.js';
import type { AdminConfig } from './config.js';

/** Shortest admin token accepted: a random value of at least 192 bits in any common encoding. */
export const MIN_ADMIN_TOKEN_LENGTH = 32;

/**
 * The admin bearer token, from AGENTAUTH_ADMIN_TOKEN or the file `admin.tokenFile` names (surrounding whitespace
 * dropped); undefined when neither is set. Refuses a short token or an unreadable file, naming the setting.
 */
export function resolveAdminToken(admin: Pick<AdminConfig, 'token' | 'tokenFile'>): string | undefined {
  let token: string;
  let setting: string;
  if (admin.token !== undefined) {
    token = admin.token.trim();
    setting = 'AGENTAUTH_ADMIN_TOKEN';
  } else if (admin.tokenFile !== undefined) {
    setting = `AGENTAUTH_CONFIG admin.tokenFile (${admin.tokenFile})`;
    try {
      token = readFileSync(admin.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new ConfigError(`${setting}: cannot read the admin token (${(err as Error).message})`);
    }
  } else {
    return undefined;
  }
  if (token.length < MIN_ADMIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new ConfigError(`${setting}: the admin token must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters with no spaces (e.g. openssl rand -base64 32)`);
  }
  // What an Authorization: Bearer header can carry (RFC 6750 §2.1 b64token, as bearerCredential reads it): any other
  // character would make a token that starts the listener and never authenticates.
  const bad = /[^A-Za-z0-9\-._~+/=]/.exec(token)?.[0] ?? (/=[^=]/.test(token) ? '=' : undefined);
  if (bad !== undefined) {
    throw new ConfigError(`${setting}: the admin token may contain only letters, digits and - . _ ~ + / (with = only at the end), as a Bearer token can (RFC 6750 §2.1); it contains ${JSON.stringify(bad)} (e.g. openssl rand -base64 32)`);
  }
  return token;
}

/**
 * The admin token the listener will require, when `admin.port` is set (undefined otherwise). Throws a ConfigError for
 * a missing, short or unreadable token: `start` calls it before it opens storage, so that a bad token creates nothing,
 * and the primary of `start --workers N` before it forks (this module loads no more than that needs).
 */
export function adminListenerToken(admin: Pick<AdminConfig, 'port' | 'token' | 'tokenFile'>): string | undefined {
  if (admin.port === undefined) return undefined;
  const token = resolveAdminToken(admin);
  if (token === undefined) {
    throw new ConfigError('AGENTAUTH_CONFIG admin.port: the admin listener needs an admin token; set AGENTAUTH_ADMIN_TOKEN or admin.tokenFile');
  }
  return token;
}

/**
 * Compares a presented bearer token with the admin token in constant time: both are reduced to an HMAC under a
 * per-process random key first, so neither their contents nor their lengths show in the comparison's timing.
 */
export class AdminTokenCheck {
  readonly #key = randomBytes(32);
  readonly #expected: Buffer;

  constructor(token: string) {
    this.#expected = this.#digest(token);
  }

  #digest(value: string): Buffer {
    return createHmac('sha256', this.#key).update(value, 'utf8').digest();
  }

  matches(presented: string): boolean {
    return timingSafeEqual(this.#digest(presented), this.#expected);
  }
}

/** The credential of an `Authorization` header using the Bearer scheme (case-insensitive, RFC 7235); else undefined. */
export function bearerCredential(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  return m?.[1];
}
