/** Bounds the operator puts on how long fetched documents are reused (clientIdMetadataDocuments.cache). */
export interface CacheBounds {
  /** Lifetime when the response says nothing (no Cache-Control max-age, no Expires). */
  defaultTTL: number;
  /** A positive lifetime from the headers is raised to at least this (refetch storms are the operator's cost). */
  minTTL: number;
  /** No document is reused longer than this, whatever its headers say. */
  maxTTL: number;
  /** Most documents held at once; the least recently used goes first. */
  maxEntries: number;
}

/**
 * Seconds a fetched document may be reused, from its HTTP caching headers (RFC 9111): `no-store`, `no-cache` or
 * `max-age=0` mean fetch it again on every use; otherwise `max-age` (§5.2.2.1; the first one when it is given twice,
 * and a value that is not a non-negative integer means stale, §4.2.1 and §1.2.2), else `Expires` minus `Date` (§4.2.1;
 * the response's own clock, falling back to ours), else the default; less the response's `Age` (§4.2.3: a document a
 * shared cache has held for a while has that much less freshness left), and then within [minTTL, maxTTL].
 * Pure: `now` in milliseconds.
 */
export function cacheLifetime(
  headers: { cacheControl?: string | undefined; expires?: string | undefined; date?: string | undefined; age?: string | undefined },
  bounds: Pick<CacheBounds, 'defaultTTL' | 'minTTL' | 'maxTTL'>,
  now: number,
): number {
  const directives = new Map<string, string | undefined>();
  for (const part of (headers.cacheControl ?? '').split(',')) {
    const [name, value] = part.split('=', 2).map((s) => s.trim());
    const key = name?.toLowerCase();
    if (key && !directives.has(key)) directives.set(key, value?.replace(/^"|"$/g, ''));
  }
  if (directives.has('no-store') || directives.has('no-cache')) return 0;
  let lifetime: number | undefined;
  const maxAge = directives.get('max-age');
  if (directives.has('max-age')) lifetime = maxAge !== undefined && /^\d+$/.test(maxAge) ? Number(maxAge) : 0;
  if (lifetime === undefined && headers.expires !== undefined) {
    const expires = Date.parse(headers.expires);
    const date = headers.date === undefined ? Number.NaN : Date.parse(headers.date);
    // An invalid Expires (e.g. "0") means already expired (RFC 9111 §5.3).
    lifetime = Number.isNaN(expires) ? 0 : Math.max(0, Math.floor((expires - (Number.isNaN(date) ? now : date)) / 1000));
  }
  // §5.1: Age is a non-negative integer of seconds; anything else is ignored.
  const age = headers.age !== undefined && /^\d+$/.test(headers.age.trim()) ? Number(headers.age.trim()) : 0;
  if (lifetime !== undefined) lifetime = Math.max(0, lifetime - age);
  if (lifetime === 0) return 0;
  return Math.min(bounds.maxTTL, Math.max(bounds.minTTL, lifetime ?? Math.max(0, bounds.defaultTTL - age)));
}

/** A bounded least-recently-used map whose entries expire. */
export class ExpiringLru<V> {
  readonly #entries = new Map<string, { value: V; expiresAt: number }>();

  constructor(private readonly maxEntries: number) {}

  get(key: string, now = Date.now()): V | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    if (entry.expiresAt <= now) return undefined;
    this.#entries.set(key, entry); // most recently used goes last
    return entry.value;
  }

  set(key: string, value: V, ttlSeconds: number, now = Date.now()): void {
    this.#entries.delete(key);
    if (ttlSeconds <= 0) return;
    this.#entries.set(key, { value, expiresAt: now + ttlSeconds * 1000 });
    while (this.#entries.size > this.maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
  }

  get size(): number {
    return this.#entries.size;
  }
}
