import { lookup as dnsLookup } from 'node:dns/promises';
import type { LookupAddress } from 'node:dns';
import { request } from 'node:https';
import { isIP } from 'node:net';
import type { LookupFunction } from 'node:net';

import { forbiddenAddressReason } from './addresses.js';

/** A fetch that was refused or failed; `reason` is written for the client developer (it ends up in error_description). */
export class MetadataFetchError extends Error {
  readonly code = 'client_metadata_fetch_failed';

  constructor(readonly reason: string) {
    super(reason);
    this.name = 'MetadataFetchError';
  }
}

export interface FetchLimits {
  /** Largest body accepted, in bytes (the draft suggests 5 KB). */
  maxBytes: number;
  /** Whole request (DNS, connect, TLS, headers, body) must finish within this. */
  timeoutMs: number;
}

/**
 * Test-only knobs. Nothing in the configuration file or the environment reaches these: only code that calls
 * `start()`/`boot()` in-process can pass them (test/support/cimd-server.mjs does). See docs/security.md.
 */
export interface FetchTestOverrides {
  /** Extra CA certificates (PEM) trusted in addition to Node's bundled roots. */
  ca?: string;
  /** Name resolution used instead of DNS. */
  resolve?: (hostname: string) => Promise<LookupAddress[]>;
  /** Addresses connected to even though they are special-use (a local test server on 127.0.0.1). */
  allowAddresses?: readonly string[];
}

export interface FetchedDocument {
  body: string;
  /** Response headers the cache reads (lower-case names). */
  cacheControl: string | undefined;
  expires: string | undefined;
  date: string | undefined;
  age: string | undefined;
}

async function resolveHost(hostname: string, test: FetchTestOverrides | undefined): Promise<LookupAddress[]> {
  if (isIP(hostname)) return [{ address: hostname, family: isIP(hostname) }];
  try {
    const found = test?.resolve ? await test.resolve(hostname) : await dnsLookup(hostname, { all: true, verbatim: true });
    if (found.length === 0) throw new Error('no addresses');
    return found;
  } catch {
    throw new MetadataFetchError(`the host ${hostname} of the client_id URL could not be resolved`);
  }
}

/**
 * Resolves the host once and checks every address it resolves to; the connection then goes to the checked address
 * and no other (the lookup handed to the socket returns it), so a second, different DNS answer cannot be slipped in
 * between check and connect (DNS rebinding). A host with any forbidden address is refused as a whole.
 */
async function pinnedAddress(hostname: string, test: FetchTestOverrides | undefined): Promise<LookupAddress> {
  const addresses = await resolveHost(hostname, test);
  for (const a of addresses) {
    if (test?.allowAddresses?.includes(a.address)) continue;
    const why = forbiddenAddressReason(a.address);
    if (why) throw new MetadataFetchError(`the host ${hostname} of the client_id URL resolves to ${a.address}, which ${why}; client ID metadata documents are fetched from public addresses only`);
  }
  return addresses[0]!;
}

/**
 * GETs a client ID metadata document over https with SSRF defences: public addresses only (checked after
 * resolution, connection pinned to the checked address), no redirects followed, `application/json` only, a byte
 * limit on the body and one deadline for the whole exchange (a body trickled slowly is cut off).
 */
export async function fetchMetadataDocument(url: URL, limits: FetchLimits, test?: FetchTestOverrides): Promise<FetchedDocument> {
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const deadline = AbortSignal.timeout(limits.timeoutMs);
  const pinned = await Promise.race([
    pinnedAddress(hostname, test),
    new Promise<never>((_, reject) => deadline.addEventListener('abort', () => reject(timeoutError(limits)), { once: true })),
  ]);
  const lookup: LookupFunction = (_host, options, callback) => {
    if ((options as { all?: boolean }).all) (callback as (e: null, a: LookupAddress[]) => void)(null, [pinned]);
    else callback(null, pinned.address, pinned.family);
  };

  return new Promise<FetchedDocument>((resolve, reject) => {
    const fail = (err: unknown) => {
      req.destroy();
      reject(err instanceof MetadataFetchError ? err : new MetadataFetchError(`the client ID metadata document could not be fetched (${(err as Error).message})`));
    };
    const req = request({
      host: hostname,
      port: url.port || 443,
      path: `${url.pathname}${url.search}`,
      method: 'GET',
      headers: { accept: 'application/json', 'user-agent': 'agentauth (client ID metadata document fetch)' },
      lookup,
      ...(isIP(hostname) ? {} : { servername: hostname }),
      ...(test?.ca ? { ca: test.ca } : {}),
      agent: false,
      maxHeaderSize: 16 * 1024,
      signal: deadline,
    });
    // `on`, not `once`: a destroyed request or response may report more than one error; `fail` settles once.
    req.on('error', (err) => fail(deadline.aborted ? timeoutError(limits) : err));
    req.once('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) {
        return fail(new MetadataFetchError(`fetching the client ID metadata document answered ${status} (a redirect${res.headers.location ? ` to ${String(res.headers.location).slice(0, 200)}` : ''}); redirects are not followed: serve the document at the client_id URL itself`));
      }
      if (status !== 200) return fail(new MetadataFetchError(`fetching the client ID metadata document answered HTTP ${status}, not 200`));
      // The media type is the part before any parameter (RFC 9110 §8.3.1); its name is case-insensitive.
      const type = String(res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') return fail(new MetadataFetchError(`the client ID metadata document must be served as application/json (got ${type.slice(0, 100) || '(none)'})`));
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > limits.maxBytes) return fail(tooLarge(limits));
      const chunks: Buffer[] = [];
      let received = 0;
      res.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > limits.maxBytes) return fail(tooLarge(limits));
        chunks.push(chunk);
      });
      res.on('error', (err) => fail(deadline.aborted ? timeoutError(limits) : err));
      res.once('end', () => {
        if (received > limits.maxBytes) return;
        resolve({
          body: Buffer.concat(chunks).toString('utf8'),
          cacheControl: header(res.headers['cache-control']),
          expires: header(res.headers.expires),
          date: header(res.headers.date),
          age: header(res.headers.age),
        });
      });
    });
    req.end();
  });
}

const header = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join(', ') : v);
const tooLarge = (limits: FetchLimits) => new MetadataFetchError(`the client ID metadata document is larger than ${limits.maxBytes} bytes`);
const timeoutError = (limits: FetchLimits) => new MetadataFetchError(`fetching the client ID metadata document took longer than ${limits.timeoutMs} ms`);
