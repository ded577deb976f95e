import formats from '@node-oauth/formats';

import { InvalidStorageValueError } from './errors.js';
import { MAX_REVOKED_LOOKUP } from './types.js';

/** Longest identifier accepted as a storage key. Generated ids are 43 characters; client ids may be URLs. */
export const MAX_KEY_LENGTH = 2048;

/**
 * Checks a value before it can reach a storage query. Identifiers (token ids, codes, client ids, grant ids,
 * session uids, user codes) are RFC 6749 Appendix A VSCHAR strings; anything else — an object or array that a
 * request parser produced, a `$`-prefixed string that an operator-injection attempt relies on, control characters —
 * is refused here so it never reaches the driver.
 */
export function checkKey(field: string, value: unknown): string {
  if (typeof value !== 'string') {
    throw new InvalidStorageValueError(field, `must be a string, got ${Array.isArray(value) ? 'array' : typeof value}`);
  }
  if (value.length === 0 || value.length > MAX_KEY_LENGTH) {
    throw new InvalidStorageValueError(field, `must be 1 to ${MAX_KEY_LENGTH} characters`);
  }
  if (!formats.vschar(value)) {
    throw new InvalidStorageValueError(field, 'must contain only visible ASCII characters (RFC 6749 VSCHAR)');
  }
  if (value.startsWith('$')) {
    throw new InvalidStorageValueError(field, 'must not start with "$"');
  }
  return value;
}

/**
 * Whether a value may be looked up as an account (ModelStore.idsByAccount): a string of 1 to MAX_KEY_LENGTH
 * characters without control characters, not starting with `$`. Wider than an identifier (an account is compared as a
 * value, never used as a key), and like one it never reaches a query as anything but a string.
 */
export function isAccountLookup(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_KEY_LENGTH && !value.startsWith('$') && !/[\u0000-\u001f\u007f]/.test(value);
}

/** True when the value would pass checkKey; used where an invalid value simply means "no such record". */
export function isValidKey(value: unknown): value is string {
  try {
    checkKey('key', value);
    return true;
  } catch {
    return false;
  }
}

/** Checks the id list of a bulk lookup (RevokedTokenStore.anyRevoked): an array of at most MAX_REVOKED_LOOKUP entries. */
export function checkLookup(ids: unknown): readonly unknown[] {
  if (!Array.isArray(ids)) throw new InvalidStorageValueError('ids', 'must be an array');
  if (ids.length > MAX_REVOKED_LOOKUP) throw new InvalidStorageValueError('ids', `must hold at most ${MAX_REVOKED_LOOKUP} ids`);
  return ids;
}
