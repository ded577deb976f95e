import { forbiddenAddressReason } from '../../server/client-metadata/addresses.js';
import { cacheLifetime, ExpiringLru } from '../../server/client-metadata/cache.js';
import { checkClientIdUrl } from '../../server/client-metadata/client-id-url.js';
import { fetchMetadataDocument, MetadataFetchError } from '../../server/client-metadata/fetch.js';
import type { FetchTestOverrides } from '../../server/client-metadata/fetch.js';
import { hostRefusal, urlRefusal } from '../../server/client-metadata/host-policy.js';
import { checkMetadataDocument, MetadataDocumentError, redirectsAllLoopback } from '../../server/client-metadata/policy.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ConfigError, DEFAULT_TIERS, loadConfig } from '../../server/config.js';
import type { RegistrationPolicy } from '../../server/policies/registration.js';
import { makeTestPki, startDocumentServer } from '../support/metadata-documents.js';
import type { DocumentServer, TestPki } from '../support/metadata-documents.js';

describe('client ID metadata documents: which addresses may be fetched from', () => {
  test.each([
    '10.0.0.1', '172.16.5.4', '192.168.1.1', '127.0.0.1', '127.8.9.10', '0.0.0.0', '169.254.169.254', '100.64.0.1',
    '224.0.0.1', '255.255.255.255', '192.0.2.10', '198.51.100.1', '203.0.113.7', '198.18.0.1', '192.0.0.8', '240.0.0.1',
    '::1', '::', 'fe80::1', 'fc00::1', 'fd12:3456::1', 'ff02::1', '2001:db8::1', '3fff::1', '64:ff9b::a00:1', '64:ff9b:1::1',
    '2002:a00:1::', '2001::1', '100::1', '::ffff:10.0.0.1', '::ffff:127.0.0.1', '::ffff:169.254.169.254', '[::1]', 'fec0::1',
  ])('%s is refused', (address) => {
    expect(forbiddenAddressReason(address)).toEqual(expect.any(String));
  });

  test.each(['93.184.216.34', '8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '2a00:1450:4001:80b::200e', '::ffff:8.8.8.8'])('%s is allowed', (address) => {
    expect(forbiddenAddressReason(address)).toBeUndefined();
  });

  test('a non-address is refused', () => {
    expect(forbiddenAddressReason('example.com')).toBe('is not an IP address');
  });
});

describe('client ID metadata documents: host rules and the client_id URL', () => {
  const rules = { allowedHosts: ['*.allowed.test', 'exact.test'], deniedHosts: ['bad.allowed.test'] };

  test('allowed hosts admit exact names and subdomains of a suffix pattern, not the bare suffix', () => {
    expect(hostRefusal('exact.test', rules)).toBeUndefined();
    expect(hostRefusal('a.allowed.test', rules)).toBeUndefined();
    expect(hostRefusal('A.B.Allowed.Test', rules)).toBeUndefined();
    expect(hostRefusal('allowed.test', rules)).toMatch(/not among the hosts/);
    expect(hostRefusal('notallowed.test', rules)).toMatch(/not among the hosts/);
    expect(hostRefusal('other.test', rules)).toMatch(/not among the hosts/);
  });

  test('the URL\'s port must be allowed: 443 when the URL names none, and the host rules come first', () => {
    const ports = { allowedHosts: [], deniedHosts: ['denied.test'], allowedPorts: [443] };
    expect(urlRefusal(new URL('https://agent.test/c.json'), ports)).toBeUndefined();
    expect(urlRefusal(new URL('https://agent.test:443/c.json'), ports)).toBeUndefined();
    expect(urlRefusal(new URL('https://agent.test:22/c.json'), ports)).toBe(
      'port 22 is not among the ports this authorization server fetches client ID metadata documents on (clientIdMetadataDocuments.allowedPorts: 443)',
    );
    expect(urlRefusal(new URL('https://agent.test:8443/c.json'), { ...ports, allowedPorts: [8443] })).toBeUndefined();
    expect(urlRefusal(new URL('https://agent.test/c.json'), { ...ports, allowedPorts: [8443] })).toMatch(/port 443 is not among/);
    expect(urlRefusal(new URL('https://denied.test:22/c.json'), ports)).toMatch(/host denied\.test is denied/);
  });

  test('denied hosts win over allowed ones; no allowed list admits everything else', () => {
    expect(hostRefusal('bad.allowed.test', rules)).toMatch(/denied .*bad\.allowed\.test/);
    expect(hostRefusal('anything.example', { allowedHosts: [], deniedHosts: ['*.evil.test'] })).toBeUndefined();
    expect(hostRefusal('x.evil.test', { allowedHosts: [], deniedHosts: ['*.evil.test'] })).toMatch(/denied/);
    // The fully qualified spelling (a trailing dot) is the same host to DNS and TLS, so to the rules too.
    expect(hostRefusal('x.evil.test.', { allowedHosts: [], deniedHosts: ['*.evil.test'] })).toMatch(/denied/);
    expect(hostRefusal('bad.allowed.test.', rules)).toMatch(/denied/);
    expect(hostRefusal('exact.test.', rules)).toBeUndefined();
  });

  test.each([
    ['http://agent.test/client.json', /https/],
    // Told what is missing (a path), not a normalised form ("https://agent.test/") that would be refused in turn.
    ['https://agent.test', /^must contain a path to the document, not just "\/"$/],
    ['https://agent.test:8443', /^must contain a path to the document/],
    ['https://agent.test/', /path/],
    ['https://agent.test:443/c.json', /^is not in normalised form \("https:\/\/agent\.test\/c\.json"\)$/],
    ['https://user:pw@agent.test/c.json', /credentials/],
    ['https://agent.test/a/%2e%2e/c.json', /dot path/],
    ['https://agent.test/a/../c.json', /dot path/],
    ['https://agent.test./c.json', /must name its host without a trailing dot \(agent\.test\)/],
    ['https://denied.test.:8443/c.json', /trailing dot/],
    ['https://agent.test/c.json#frag', /fragment/],
    ['https://AGENT.test/c.json', /normalised/],
  ])('%s is refused', (url, problem) => {
    const r = checkClientIdUrl(url);
    expect('problem' in r && r.problem).toMatch(problem);
  });

  test('a normalised https URL with a path passes', () => {
    const r = checkClientIdUrl('https://agent.test:8443/oauth/client.json');
    expect('url' in r && r.url.hostname).toBe('agent.test');
  });
});

describe('client ID metadata documents: cache lifetime from HTTP headers', () => {
  const bounds = { defaultTTL: 300, minTTL: 30, maxTTL: 86_400 };
  const now = Date.parse('2026-01-01T00:00:00Z');

  test('no-store, no-cache and max-age=0 mean fetch again on every use', () => {
    expect(cacheLifetime({ cacheControl: 'no-store' }, bounds, now)).toBe(0);
    expect(cacheLifetime({ cacheControl: 'public, no-cache' }, bounds, now)).toBe(0);
    expect(cacheLifetime({ cacheControl: 'max-age=0' }, bounds, now)).toBe(0);
    expect(cacheLifetime({ expires: '0' }, bounds, now)).toBe(0);
  });

  test('max-age wins over Expires and is kept within the bounds', () => {
    expect(cacheLifetime({ cacheControl: 'public, max-age=600', expires: 'Thu, 01 Jan 2026 10:00:00 GMT' }, bounds, now)).toBe(600);
    expect(cacheLifetime({ cacheControl: 'max-age=5' }, bounds, now)).toBe(30);
    expect(cacheLifetime({ cacheControl: 'max-age=99999999' }, bounds, now)).toBe(86_400);
  });

  test('Expires counts from the response Date (or now), and nothing gives the default', () => {
    expect(cacheLifetime({ expires: 'Thu, 01 Jan 2026 01:00:00 GMT' }, bounds, now)).toBe(3600);
    expect(cacheLifetime({ expires: 'Thu, 01 Jan 2026 01:00:00 GMT', date: 'Thu, 01 Jan 2026 00:30:00 GMT' }, bounds, now)).toBe(1800);
    expect(cacheLifetime({}, bounds, now)).toBe(300);
  });

  test('RFC 9111: the first of two max-age directives counts, an invalid one means stale, and Age is taken off', () => {
    expect(cacheLifetime({ cacheControl: 'max-age=0, max-age=600' }, bounds, now)).toBe(0);
    expect(cacheLifetime({ cacheControl: 'max-age=600, max-age=0' }, bounds, now)).toBe(600);
    expect(cacheLifetime({ cacheControl: 'max-age=-1' }, bounds, now)).toBe(0);
    expect(cacheLifetime({ cacheControl: 'max-age' }, bounds, now)).toBe(0);
    // A shared cache held it for 590 of its 600 s: 10 s are left (then raised to minTTL).
    expect(cacheLifetime({ cacheControl: 'max-age=600', age: '590' }, bounds, now)).toBe(30);
    expect(cacheLifetime({ cacheControl: 'max-age=600', age: '100' }, bounds, now)).toBe(500);
    expect(cacheLifetime({ cacheControl: 'max-age=600', age: '600' }, bounds, now)).toBe(0);
    expect(cacheLifetime({ expires: 'Thu, 01 Jan 2026 01:00:00 GMT', age: '600' }, bounds, now)).toBe(3000);
    // An Age that is not a number is ignored (RFC 9111 §5.1).
    expect(cacheLifetime({ cacheControl: 'max-age=600', age: 'soon' }, bounds, now)).toBe(600);
  });

  test('the LRU drops expired entries and the least recently used beyond its size', () => {
    const lru = new ExpiringLru<string>(2);
    lru.set('a', 'A', 10, 0);
    lru.set('b', 'B', 10, 0);
    expect(lru.get('a', 1000)).toBe('A'); // a is now the most recent
    lru.set('c', 'C', 10, 1000);
    expect(lru.get('b', 1000)).toBeUndefined();
    expect(lru.get('a', 1000)).toBe('A');
    expect(lru.get('a', 10_000)).toBeUndefined(); // expired
    lru.set('d', 'D', 0, 0);
    expect(lru.get('d', 0)).toBeUndefined(); // a lifetime of 0 is never stored
  });
});

describe('client ID metadata documents: the document through the registration policy', () => {
  const ID = 'https://agent.test/client.json';
  const policy: RegistrationPolicy = {
    allowedAuthMethods: ['none', 'private_key_jwt', 'client_secret_basic'],
    allowedGrantTypes: ['authorization_code', 'refresh_token', 'client_credentials'],
    knownScopes: new Set(['openid', 'read', 'write']),
    anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] },
  };
  const tier = { name: 'standard', settings: DEFAULT_TIERS.standard };
  const good = { client_id: ID, client_name: 'Test agent', redirect_uris: ['http://127.0.0.1:33418/callback'], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'read' };
  const check = (doc: unknown) => checkMetadataDocument(JSON.stringify(doc), ID, policy, tier);
  const refusal = (doc: unknown) => {
    try {
      check(doc);
    } catch (err) {
      expect(err).toBeInstanceOf(MetadataDocumentError);
      return (err as MetadataDocumentError).reason;
    }
    throw new Error('document was accepted');
  };

  test('a public authorization-code client is accepted, recorded as a metadata-document client in the default tier', () => {
    expect(check(good)).toEqual(expect.objectContaining({
      client_id: ID, token_endpoint_auth_method: 'none', agentauth_registration: 'client_id_metadata_document', agentauth_tier: 'standard',
    }));
  });

  test('a client_id that differs from the URL in any way is refused', () => {
    expect(refusal({ ...good, client_id: 'https://agent.test/other.json' })).toMatch(/must equal the URL/);
    expect(refusal({ ...good, client_id: 'https://agent.test/client.json/' })).toMatch(/must equal the URL/);
    expect(refusal({ ...good, client_id: 'https://AGENT.test/client.json' })).toMatch(/must equal the URL/);
    const { client_id: _omitted, ...noId } = good;
    expect(refusal(noId)).toMatch(/must equal the URL/);
  });

  test('secrets, shared-secret and key-based authentication and client_credentials are refused even where DCR allows them', () => {
    expect(refusal({ ...good, client_secret: 'x'.repeat(40) })).toMatch(/client_secret must not appear/);
    expect(refusal({ ...good, token_endpoint_auth_method: 'client_secret_basic' })).toMatch(/shared secret/);
    expect(refusal({ ...good, token_endpoint_auth_method: 'client_secret_post' })).toMatch(/shared secret/);
    const { token_endpoint_auth_method: _m, ...noMethod } = good;
    expect(refusal(noMethod)).toMatch(/must be "none"/);
    expect(refusal({ ...good, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [] } })).toMatch(/must be "none"/);
    expect(refusal({ ...good, grant_types: ['client_credentials'] })).toMatch(/grant_types may only contain authorization_code and refresh_token/);
  });

  test('the DCR policy applies to everything else: redirect URIs, scopes, unknown and server-assigned fields', () => {
    expect(refusal({ ...good, redirect_uris: ['http://evil.test/cb'] })).toMatch(/^redirect_uris must use https/);
    expect(refusal({ ...good, redirect_uris: ['https://agent.test/*'] })).toMatch(/wildcards/);
    expect(refusal({ ...good, scope: 'admin' })).toMatch(/^scope contains "admin"/);
    expect(refusal({ ...good, jwks_uri: 'https://agent.test/jwks' })).toMatch(/^jwks_uri is not supported/);
    expect(refusal({ ...good, agentauth_tier: 'bound' })).toMatch(/^agentauth_tier is assigned by the authorization server/);
    expect(refusal({ ...good, agentauth_registration: 'operator' })).toMatch(/^agentauth_registration is recorded/);
    expect(refusal({ ...good, agentauth_registration_limits: { scope: 'read' } })).toMatch(/^agentauth_registration_limits is set by the authorization server from the initial access token/);
    expect(refusal({ ...good, redirect_uris: [] })).toMatch(/required for the authorization_code grant/);
    // A document's name is what the consent page and the wallet's sign-in message show.
    expect(refusal({ ...good, client_name: 'Bank\u202Etneilc' })).toMatch(/^client_name must not contain .*U\+202E/);
    expect(refusal({ ...good, client_name: 'Agent\nURI: https://evil.test' })).toMatch(/^client_name must not contain control.*U\+000A/);
  });

  test('not JSON, or not an object, is refused', () => {
    expect(() => checkMetadataDocument('{', ID, policy, tier)).toThrow(/not valid JSON/);
    expect(() => checkMetadataDocument('[]', ID, policy, tier)).toThrow(/must be a JSON object/);
    // A member named twice (here or nested) is refused, as in a registration's body: which one counts is up to the parser.
    expect(() => checkMetadataDocument(`{"client_id":${JSON.stringify(ID)},"redirect_uris":["https://agent.test/cb"],"token_endpoint_auth_method":"none","redirect_uris":["https://evil.test/cb"]}`, ID, policy, tier)).toThrow(/names "redirect_uris" twice in one object/);
    expect(() => checkMetadataDocument(`{"client_id":${JSON.stringify(ID)},"token_endpoint_auth_method":"none","jwks":{"keys":[],"keys":[]}}`, ID, policy, tier)).toThrow(/names "keys" twice/);
    // A client_id (or any member) nested thousands deep is refused as such, not by a stack overflow (a 500).
    for (const field of ['client_id', 'grant_types', 'client_name']) {
      const text = `{"redirect_uris":["https://agent.test/cb"],${JSON.stringify(field)}:${'['.repeat(20_000)}${']'.repeat(20_000)}}`;
      expect(() => checkMetadataDocument(text, ID, policy, tier)).toThrow(MetadataDocumentError);
      expect(() => checkMetadataDocument(text, ID, policy, tier)).toThrow(/nests more than 16 levels deep/);
    }
  });

  test('localhost-only redirects are recognised', () => {
    expect(redirectsAllLoopback(['http://127.0.0.1:1/cb', 'http://localhost:2/cb', 'http://[::1]:3/cb'])).toBe(true);
    expect(redirectsAllLoopback(['http://127.0.0.1:1/cb', 'https://app.example/cb'])).toBe(false);
    // Every other spelling of the person's own machine a normalised URL can carry is one too.
    for (const uri of ['https://localhost./cb', 'https://app.localhost/cb', 'https://app.localhost./cb', 'https://127.3.2.1/cb', 'https://[::ffff:7f00:1]/cb', 'https://0.0.0.0/cb', 'https://[::]/cb', 'https://[::ffff:0:0]/cb']) {
      expect({ uri, local: redirectsAllLoopback([uri]) }).toEqual({ uri, local: true });
    }
    for (const uri of ['https://192.168.1.10/cb', 'https://localhost.example.com/cb', 'https://[::2]/cb', 'https://[::ffff:c0a8:10a]/cb', 'https://10.0.0.1/cb', 'https://app.example/cb']) {
      expect({ uri, local: redirectsAllLoopback([uri]) }).toEqual({ uri, local: false });
    }
    expect(redirectsAllLoopback([])).toBe(false);
  });
});

describe('client ID metadata documents: the fetcher against a local https server (test CA, test resolver)', () => {
  let pki: TestPki;
  let docs: DocumentServer;
  const limits = { maxBytes: 5120, timeoutMs: 1500 };
  const DOC = { client_id: 'x' };
  let test_: FetchTestOverrides;

  beforeAll(async () => {
    pki = makeTestPki();
    docs = await startDocumentServer(pki);
    test_ = { ca: pki.caPem, resolve: async () => [{ address: '127.0.0.1', family: 4 }], allowAddresses: ['127.0.0.1'] };
  });
  afterAll(() => docs?.close());

  const fetchRefusal = async (url: string, overrides: FetchTestOverrides | undefined = test_) => {
    try {
      await fetchMetadataDocument(new URL(url), limits, overrides);
    } catch (err) {
      expect(err).toBeInstanceOf(MetadataFetchError);
      return (err as MetadataFetchError).reason;
    }
    throw new Error('fetch succeeded');
  };

  test('a document is fetched with its caching headers', async () => {
    docs.serveJson('/ok.json', DOC, { 'cache-control': 'max-age=120' });
    const got = await fetchMetadataDocument(new URL(docs.url('agent.test', '/ok.json')), limits, test_);
    expect(JSON.parse(got.body)).toEqual(DOC);
    expect(got.cacheControl).toBe('max-age=120');
  });

  test('private and loopback IP literals are refused before any connection', async () => {
    expect(await fetchRefusal('https://10.0.0.1/client.json')).toMatch(/10\.0\.0\.1, which is in a special-use IPv4 range \(private\)/);
    expect(await fetchRefusal('https://[::1]/x')).toMatch(/::1, which is in a special-use IPv6 range \(loopback\)/);
    expect(await fetchRefusal('https://169.254.169.254/latest/meta-data')).toMatch(/linkLocal/);
    expect(await fetchRefusal('https://[::ffff:192.168.0.1]/x')).toMatch(/IPv4-mapped/);
  });

  test('a name that resolves to loopback is refused without the loopback permission; the server is never reached', async () => {
    docs.serveJson('/loop.json', DOC);
    const noPermission = { ca: pki.caPem, resolve: test_.resolve! };
    expect(await fetchRefusal(docs.url('loopback.test', '/loop.json'), noPermission)).toMatch(/loopback\.test of the client_id URL resolves to 127\.0\.0\.1, which is in a special-use IPv4 range \(loopback\)/);
    expect(docs.hits('/loop.json')).toBe(0);
  });

  test('a host with any private address among its addresses is refused', async () => {
    const mixed = { ...test_, resolve: async () => [{ address: '127.0.0.1', family: 4 }, { address: '10.1.2.3', family: 4 }] };
    expect(await fetchRefusal(docs.url('agent.test', '/ok.json'), mixed)).toMatch(/10\.1\.2\.3/);
  });

  test('the name is resolved once and the connection goes to the checked address (no DNS rebinding)', async () => {
    let calls = 0;
    const rebinding = { ...test_, resolve: async () => (++calls === 1 ? [{ address: '127.0.0.1', family: 4 }] : [{ address: '10.0.0.1', family: 4 }]) };
    docs.serveJson('/pin.json', DOC);
    const got = await fetchMetadataDocument(new URL(docs.url('agent.test', '/pin.json')), limits, rebinding);
    expect(JSON.parse(got.body)).toEqual(DOC);
    expect(calls).toBe(1);
    expect(docs.hits('/pin.json')).toBe(1);
  });

  test('a redirect is not followed, even to a private address', async () => {
    docs.serve('/redirect.json', { status: 302, headers: { location: 'https://10.0.0.1/client.json' } });
    expect(await fetchRefusal(docs.url('agent.test', '/redirect.json'))).toMatch(/answered 302 .*redirects are not followed/);
  });

  test('a body over the limit is refused, whether declared or streamed', async () => {
    docs.serveJson('/big.json', { client_id: 'x', pad: 'a'.repeat(6000) });
    expect(await fetchRefusal(docs.url('agent.test', '/big.json'))).toMatch(/larger than 5120 bytes/);
    docs.serve('/big-chunked.json', { body: JSON.stringify({ pad: 'b'.repeat(6000) }), headers: { 'transfer-encoding': 'chunked' } });
    expect(await fetchRefusal(docs.url('agent.test', '/big-chunked.json'))).toMatch(/larger than 5120 bytes/);
  });

  test('a body trickled slowly is cut off at the time limit', async () => {
    docs.serve('/slow.json', { body: JSON.stringify({ client_id: 'x', pad: 'c'.repeat(200) }), trickleMs: 50 });
    expect(await fetchRefusal(docs.url('agent.test', '/slow.json'))).toMatch(/took longer than 1500 ms/);
  });

  test('anything but application/json, a non-200 status, or an untrusted certificate is refused', async () => {
    docs.serve('/html.json', { body: '{}', headers: { 'content-type': 'text/html' } });
    expect(await fetchRefusal(docs.url('agent.test', '/html.json'))).toMatch(/must be served as application\/json \(got text\/html\)/);
    docs.serve('/charset.json', { body: '{}', headers: { 'content-type': 'Application/JSON; charset=utf-8' } });
    await expect(fetchMetadataDocument(new URL(docs.url('agent.test', '/charset.json')), limits, test_)).resolves.toEqual(expect.objectContaining({ body: '{}' }));
    expect(await fetchRefusal(docs.url('agent.test', '/missing.json'))).toMatch(/HTTP 404/);
    const noCa = { resolve: test_.resolve!, allowAddresses: ['127.0.0.1'] };
    expect(await fetchRefusal(docs.url('agent.test', '/ok.json'), noCa)).toMatch(/could not be fetched/);
  });

  test('an unresolvable name is refused with the name', async () => {
    const none = { ...test_, resolve: async () => [] };
    expect(await fetchRefusal(docs.url('agent.test', '/ok.json'), none)).toMatch(/agent\.test of the client_id URL could not be resolved/);
  });
});

describe('client ID metadata documents: configuration', () => {
  const load = (file: unknown) => {
    const path = join(mkdtempSync(join(tmpdir(), 'cfg-cimd-')), 'c.json');
    writeFileSync(path, JSON.stringify(file));
    return loadConfig({ AGENTAUTH_CONFIG: path }).clientIdMetadataDocuments;
  };

  test('on by default with open registration, off by default with token or no registration; an explicit setting wins', () => {
    expect(load({})).toEqual({
      enabled: true, allowedHosts: [], deniedHosts: [], allowedPorts: [443], maxBytes: 5120, timeoutMs: 3000, maxConcurrentFetches: 16,
      cache: { defaultTTL: 300, minTTL: 30, maxTTL: 86_400, maxEntries: 1000 },
    });
    expect(load({ registration: { mode: 'token' } }).enabled).toBe(false);
    expect(load({ registration: { mode: 'off' } }).enabled).toBe(false);
    expect(load({ registration: { mode: 'token' }, clientIdMetadataDocuments: { enabled: true } }).enabled).toBe(true);
    expect(load({ clientIdMetadataDocuments: { enabled: false } }).enabled).toBe(false);
  });

  test('host patterns are lower-cased; anything else than a host or *.suffix is refused, naming the setting', () => {
    expect(load({ clientIdMetadataDocuments: { allowedHosts: ['*.Example.COM', 'agent.example.org'] } }).allowedHosts).toEqual(['*.example.com', 'agent.example.org']);
    expect(() => load({ clientIdMetadataDocuments: { deniedHosts: ['https://evil.test/'] } })).toThrow(/clientIdMetadataDocuments\.deniedHosts\[0\]: must be a host name/);
    expect(() => load({ clientIdMetadataDocuments: { allowedHosts: ['a.*.test'] } })).toThrow(ConfigError);
  });

  test('allowedPorts: 443 by default; a non-empty list of distinct ports 1-65535, naming the setting when refused', () => {
    expect(load({ clientIdMetadataDocuments: { allowedPorts: [443, 8443] } }).allowedPorts).toEqual([443, 8443]);
    expect(() => load({ clientIdMetadataDocuments: { allowedPorts: [] } })).toThrow(/clientIdMetadataDocuments\.allowedPorts/);
    expect(() => load({ clientIdMetadataDocuments: { allowedPorts: [0] } })).toThrow(/clientIdMetadataDocuments\.allowedPorts\[0\]/);
    expect(() => load({ clientIdMetadataDocuments: { allowedPorts: [65_536] } })).toThrow(/clientIdMetadataDocuments\.allowedPorts\[0\]/);
    expect(() => load({ clientIdMetadataDocuments: { allowedPorts: [443, 443] } })).toThrow(/allowedPorts: must not list a port twice/);
    expect(() => load({ clientIdMetadataDocuments: { allowedPorts: ['443'] } })).toThrow(ConfigError);
  });

  test('limits are bounded and minTTL may not exceed maxTTL', () => {
    expect(() => load({ clientIdMetadataDocuments: { maxBytes: 10_000_000 } })).toThrow(/clientIdMetadataDocuments\.maxBytes/);
    expect(() => load({ clientIdMetadataDocuments: { timeoutMs: 60_000 } })).toThrow(/clientIdMetadataDocuments\.timeoutMs/);
    expect(() => load({ clientIdMetadataDocuments: { maxConcurrentFetches: 0 } })).toThrow(/clientIdMetadataDocuments\.maxConcurrentFetches/);
    expect(() => load({ clientIdMetadataDocuments: { maxConcurrentFetches: 1001 } })).toThrow(/clientIdMetadataDocuments\.maxConcurrentFetches/);
    expect(() => load({ clientIdMetadataDocuments: { maxConcurrentFetches: 1.5 } })).toThrow(/clientIdMetadataDocuments\.maxConcurrentFetches/);
    expect(() => load({ clientIdMetadataDocuments: { cache: { minTTL: 600, maxTTL: 60 } } })).toThrow(/cache\.minTTL: must not exceed maxTTL/);
  });
});
