import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describeContext } from '../../server/cli-context.js';
import { ConfigError, loadConfig, workersCount } from '../../server/config.js';

function withFile(content: unknown): string {
  const path = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'c.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

const message = (env: NodeJS.ProcessEnv) => {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
};

describe('start --workers N', () => {
  test('1 to 64 in decimal digits; anything else is refused (0x2, 2e0, 1.0 and " 2" were read as numbers)', () => {
    const sqlite = { store: 'sqlite' as const };
    expect(workersCount(undefined, sqlite)).toBe(1);
    expect(['1', '2', '64', '08'].map((v) => workersCount(v, sqlite))).toEqual([1, 2, 64, 8]);
    for (const v of ['0', '65', '0x2', '2e0', '1.0', ' 2', '2 ', '+2', '-1', '', 'two', '002']) {
      expect({ v, thrown: (() => { try { workersCount(v, sqlite); return undefined; } catch (err) { return (err as Error).message; } })() })
        .toEqual({ v, thrown: '--workers: must be a whole number from 1 to 64' });
    }
  });
});

describe('loadConfig', () => {
  test('a file that starts with a byte order mark is read (RFC 8259 section 8.1)', () => {
    expect(loadConfig({ AGENTAUTH_CONFIG: withFile('\uFEFF{"storage":{"timeoutMs":3000}}') }).storage.timeoutMs).toBe(3000);
  });

  test('a file that is not JSON: where the first error is and what it is, never a piece of the file (it holds secrets)', () => {
    const secret = 'S3cr3t-S3cr3t-S3cr3t-0123456789';
    for (const [text, where] of [
      [`{"clients":[{"client_id":"a","client_secret":'${secret}'}]}`, /at line 1, column 46 \(a value JSON does not have: strings take double quotes/],
      [`{\n  "clients": [{"client_id": "a", "client_secret": "${secret}"}],\n  "x": tru\n}`, /at line 3, column 8 \(a value JSON does not have/],
      [`{"client_secret": "${secret}",}`, /at line 1, column \d+ \(a member name in double quotes expected; JSON allows no comma after the last member\)$/],
      [`{"client_secret": "${secret}"\n"tier": "x"}`, /at line 2, column 1 \(',' expected\)$/],
      [`{"client_secret": "${secret}"} // ${secret}`, /at line 1, column \d+ \(a comment \(JSON has none\)\)$/],
      [`{"client_secret": "${secret.slice(0, 6)}\n${secret.slice(6)}"}`, /at line 1, column 19 \(a string not closed on its line/],
      ['', /at line 1, column 1 \(a value expected/],
    ] as const) {
      const said = message({ AGENTAUTH_CONFIG: withFile(text) });
      expect(said).toMatch(/^AGENTAUTH_CONFIG: .*c\.json is not valid JSON at line/);
      expect(said).toMatch(where);
      // JSON.parse's own message quoted the text around the error: here the secret, or a piece of it.
      for (const piece of [secret.slice(0, 6), secret.slice(6, 12), secret.slice(-6)]) expect({ text, said: said.includes(piece) }).toEqual({ text, said: false });
      expect(said).not.toContain('\n');
    }
  });

  test('defaults: port 3000, issuer http://localhost:3000, SQLite store in ./.agentauth, ES256', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 3000, issuer: 'http://localhost:3000', mongodb: undefined, store: 'sqlite', keyAlg: 'ES256', logLevel: 'info', shutdownTimeoutMs: 10_000 });
    expect(c.dataDir).toBe(join(process.cwd(), '.agentauth'));
    expect(c.storage).toEqual({ timeoutMs: 2000, sweepIntervalMs: 60_000, sqliteSynchronous: 'full', unsealedCredentials: 'accept' });
  });

  test('storage.unsealedCredentials: accept (the default) or refuse; anything else is refused naming the setting', () => {
    expect(loadConfig({ AGENTAUTH_CONFIG: withFile({ storage: { unsealedCredentials: 'refuse' } }) }).storage.unsealedCredentials).toBe('refuse');
    expect(message({ AGENTAUTH_CONFIG: withFile({ storage: { unsealedCredentials: 'ignore' } }) })).toContain('storage.unsealedCredentials');
    expect(message({ AGENTAUTH_CONFIG: withFile({ storage: { unsealedCredentials: true } }) })).toContain('storage.unsealedCredentials');
  });

  test('tiers: publicClientRefresh and refreshGraceSeconds default to rotate and 5 s; bad values are refused naming the setting', () => {
    const base = { accessTokenTTL: 300, refreshTokenIdleTTL: 3600, refreshTokenAbsoluteTTL: 86400, dpop: 'optional', dpopNonce: false };
    const tiers = loadConfig({ AGENTAUTH_CONFIG: withFile({ tiers: { mine: base } }) }).tiers;
    expect(tiers.mine).toMatchObject({ publicClientRefresh: 'rotate', refreshGraceSeconds: 5 });
    expect(loadConfig({ AGENTAUTH_CONFIG: withFile({ tiers: { mine: { ...base, publicClientRefresh: 'dpop', refreshGraceSeconds: 0 } } }) }).tiers.mine)
      .toMatchObject({ publicClientRefresh: 'dpop', refreshGraceSeconds: 0 });
    expect(message({ AGENTAUTH_CONFIG: withFile({ tiers: { mine: { ...base, refreshGraceSeconds: 61 } } }) })).toContain('tiers.mine.refreshGraceSeconds');
    expect(message({ AGENTAUTH_CONFIG: withFile({ tiers: { mine: { ...base, refreshGraceSeconds: -1 } } }) })).toContain('tiers.mine.refreshGraceSeconds');
    expect(message({ AGENTAUTH_CONFIG: withFile({ tiers: { mine: { ...base, publicClientRefresh: 'bearer' } } }) })).toContain('tiers.mine.publicClientRefresh');
  });

  test('admin.port: any port but the public one; the same as PORT (default or set) is refused naming both settings', () => {
    expect(loadConfig({ PORT: '3000', AGENTAUTH_CONFIG: withFile({ admin: { port: 3001 } }) }).admin.port).toBe(3001);
    expect(message({ PORT: '3001', AGENTAUTH_CONFIG: withFile({ admin: { port: 3001 } }) })).toBe(
      'AGENTAUTH_CONFIG admin.port: must differ from PORT (3001), which serves the public endpoints',
    );
    expect(message({ AGENTAUTH_CONFIG: withFile({ admin: { port: 3000 } }) })).toMatch(/^AGENTAUTH_CONFIG admin\.port: must differ from PORT \(3000\)/);
  });

  test('storage.sqliteSynchronous: full by default (every commit fsynced), normal on request, nothing else', () => {
    expect(loadConfig({}).storage.sqliteSynchronous).toBe('full');
    expect(loadConfig({ AGENTAUTH_CONFIG: withFile({ storage: { sqliteSynchronous: 'normal' } }) }).storage.sqliteSynchronous).toBe('normal');
    expect(message({ AGENTAUTH_CONFIG: withFile({ storage: { sqliteSynchronous: 'off' } }) })).toMatch(/storage\.sqliteSynchronous/);
  });

  test('AGENTAUTH_STORE: SQLite by default, memory on request, MongoDB whenever MONGODB_URI is set', () => {
    expect(loadConfig({}).store).toBe('sqlite');
    expect(loadConfig({ AGENTAUTH_STORE: 'sqlite' }).store).toBe('sqlite');
    expect(loadConfig({ AGENTAUTH_STORE: 'memory' }).store).toBe('memory');
    expect(loadConfig({ AGENTAUTH_STORE: 'memory' }).mongodb).toBeUndefined();
    expect(loadConfig({ MONGODB_URI: 'mongodb://h/' }).store).toBe('mongodb');
    expect(loadConfig({ MONGODB_URI: 'mongodb://h/', AGENTAUTH_STORE: '' }).store).toBe('mongodb'); // empty is unset
  });

  test('AGENTAUTH_STORE: an unknown store, or any store beside MONGODB_URI, is refused naming AGENTAUTH_STORE', () => {
    expect(message({ AGENTAUTH_STORE: 'mongo' })).toMatch(/^AGENTAUTH_STORE: .*"sqlite"\|"memory"/);
    expect(message({ AGENTAUTH_STORE: 'memory', MONGODB_URI: 'mongodb://h/' })).toMatch(/^AGENTAUTH_STORE: memory is the store used without MONGODB_URI; unset one of the two/);
    expect(message({ AGENTAUTH_STORE: 'sqlite', MONGODB_URI: 'mongodb://h/' })).toMatch(/^AGENTAUTH_STORE: sqlite .*MONGODB_URI/);
  });

  test('MONGODB_DB: explicit, else the database in the URI path, else agentauth', () => {
    expect(loadConfig({ MONGODB_URI: 'mongodb://h:27017/', MONGODB_DB: 'x' }).mongodb?.dbName).toBe('x');
    expect(loadConfig({ MONGODB_URI: 'mongodb://u:p@h1,h2/prod?replicaSet=rs0' }).mongodb?.dbName).toBe('prod');
    expect(loadConfig({ MONGODB_URI: 'mongodb+srv://cluster.example.net/?retryWrites=true' }).mongodb?.dbName).toBe('agentauth');
    expect(loadConfig({ MONGODB_URI: 'mongodb://h' }).mongodb?.dbName).toBe('agentauth');
  });

  test('MONGODB_URI: a string the driver would refuse is refused with the configuration, quoting none of it; the store is named without credentials', () => {
    for (const [uri, rule] of [
      ['mongodb://agentauth:Zm9v/YmFy+cXV4@127.0.0.1:27017/prod', /^MONGODB_URI: the user name or password has characters that must be percent-encoded/],
      ['mongodb://alice@S3CRET@db.example.com/prod', /^MONGODB_URI: the user name or password has characters that must be percent-encoded/],
      ['mongodb://alice:pa:ss@db.example.com/prod', /^MONGODB_URI: the user name or password has characters that must be percent-encoded/],
      ['mongodb://', /^MONGODB_URI: is not a MongoDB connection string the driver accepts/],
      // Hosts and options the driver refuses as its client is made (nothing connects), in its words.
      ['mongodb://alice:Zm9v@db.example.com/prod?foo=bar', /^MONGODB_URI: option foo is not supported$/],
      ['mongodb://alice:Zm9v@db.example.com/prod?tls=maybe', /^MONGODB_URI: tls\/ssl must be either "true" or "false"$/],
      ['mongodb://alice:Zm9v@db.example.com:99999/prod', /^MONGODB_URI: Unable to parse db.example.com:99999 with URL$/],
      ['mongodb+srv://alice:Zm9v@cluster.example.net:27017/', /^MONGODB_URI: /],
    ] as const) {
      const text = message({ MONGODB_URI: uri });
      expect({ uri, text }).toEqual({ uri, text: expect.stringMatching(rule) });
      for (const secret of ['Zm9v', 'YmFy', 'S3CRET', 'pa:ss']) expect(text).not.toContain(secret);
    }
    // Percent-encoded, the same password is accepted; the database is the path's, and the store's name has no credentials.
    const config = loadConfig({ MONGODB_URI: `mongodb://agentauth:${encodeURIComponent('Zm9v/YmFy+cXV4')}@h1:27017,h2/prod%2Db` });
    expect(config.mongodb?.dbName).toBe('prod-b');
    expect(describeContext(config).location).toBe('mongodb://h1:27017,h2/prod-b');
  });

  test('TRUST_PROXY is off unless set to true', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(message({ TRUST_PROXY: 'yes' })).toMatch(/^TRUST_PROXY: /);
  });

  test('ISSUER follows PORT unless set; a trailing slash is dropped', () => {
    expect(loadConfig({ PORT: '8080' }).issuer).toBe('http://localhost:8080');
    expect(loadConfig({ ISSUER: 'https://as.example.com/' }).issuer).toBe('https://as.example.com');
  });

  test('resource server and client defaults are applied', () => {
    const c = loadConfig({
      AGENTAUTH_CONFIG: withFile({
        resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }],
        clients: [{ client_id: 'c', client_secret: 'x'.repeat(32) }],
      }),
    });
    expect(c.resourceServers[0]).toEqual({ identifier: 'https://api.example.com', scopes: ['read'], accessTokenTTL: 300, accessTokenFormat: 'jwt' });
    expect(c.clients[0]).toMatchObject({ token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'] });
  });

  test.each([
    [{ PORT: 'abc' }, /^PORT: must be an integer from 1 to 65535/],
    [{ PORT: '0' }, /^PORT: /],
    [{ ISSUER: 'ftp://x' }, /^ISSUER: /],
    [{ ISSUER: 'https://x/#frag' }, /^ISSUER: /],
    [{ ISSUER: 'https://x#' }, /^ISSUER: /],
    [{ ISSUER: 'https://x?' }, /^ISSUER: /],
    // Discovery and every endpoint URL would miss the path (openid-client refused the server either way).
    [{ ISSUER: 'http://localhost:3000/tenant1' }, /^ISSUER: must have no path \(https:\/\/auth\.example\.com, not https:\/\/auth\.example\.com\/tenant\)/],
    [{ ISSUER: 'https://as.example.com/a/' }, /^ISSUER: must have no path/],
    [{ MONGODB_DB: 'bad.name' }, /^MONGODB_DB: /],
    [{ AGENTAUTH_KEY_ALG: 'RS256' }, /^AGENTAUTH_KEY_ALG: /],
    [{ AGENTAUTH_AUDIT_CHAIN: 'has/slash' }, /^AGENTAUTH_AUDIT_CHAIN: must be 1-100 letters/],
    [{ AGENTAUTH_AUDIT_CHAIN: 'x'.repeat(101) }, /^AGENTAUTH_AUDIT_CHAIN: /],
    [{ AGENTAUTH_KEK_FALLBACK: 'a', AGENTAUTH_KEK_FALLBACK_FILE: '/x' }, /^AGENTAUTH_KEK_FALLBACK_FILE: set either AGENTAUTH_KEK_FALLBACK or AGENTAUTH_KEK_FALLBACK_FILE, not both$/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL: /],
  ])('%j is refused by name', (env, pattern) => {
    expect(message(env)).toMatch(pattern);
  });

  test.each([
    [{ resourceServers: [{ identifier: 'not a uri', scopes: ['a'] }] }, /resourceServers\[0\]\.identifier: must be an absolute URI/],
    [{ resourceServers: [{ identifier: 'https://a.example#x', scopes: ['a'] }] }, /resourceServers\[0\]\.identifier/],
    [{ resourceServers: [{ identifier: 'https://a.example', scopes: ['bad scope'] }] }, /resourceServers\[0\]\.scopes\[0\]/],
    [{ resourceServers: [{ identifier: 'https://a.example', scopes: ['a'], accessTokenTTL: 86400 }] }, /accessTokenTTL/],
    [{ resourceServers: [{ identifier: 'https://a.example', scopes: ['a'] }, { identifier: 'https://a.example', scopes: ['b'] }] }, /resourceServers\[1\]\.identifier: duplicate/],
    // The same URL spelled another way (RFC 3986 section 6.2.2-6.2.3): host case, '/' for an empty path, a default port.
    [{ resourceServers: [{ identifier: 'https://a.example', scopes: ['a'] }, { identifier: 'https://A.example/', scopes: ['b'] }] }, /^AGENTAUTH_CONFIG resourceServers\[1\]\.identifier: https:\/\/A\.example\/ is the same URL as https:\/\/a\.example \(both are https:\/\/a\.example\/\)/],
    [{ resourceServers: [{ identifier: 'HTTPS://a.example:443/api', scopes: ['a'] }, { identifier: 'https://a.example/api', scopes: ['b'] }] }, /resourceServers\[1\]\.identifier: https:\/\/a\.example\/api is the same URL as HTTPS:\/\/a\.example:443\/api/],
    [{ clients: [{ client_id: '$bad', client_secret: 'x'.repeat(32) }] }, /clients\[0\]\.client_id/],
    [{ clients: [{ client_id: 'c' }] }, /clients\[0\]\.client_secret: is required for client_secret_basic/],
    [{ clients: [{ client_id: 'c', token_endpoint_auth_method: 'private_key_jwt' }] }, /clients\[0\]\.jwks: is required for private_key_jwt/],
    [{ clients: [{ client_id: 'c', client_secret: 'x'.repeat(32), grant_types: ['implicit'] }] }, /clients\[0\]\.grant_types\[0\]/],
    [{ clients: [{ client_id: 'c', token_endpoint_auth_method: 'none', grant_types: ['client_credentials'] }] }, /clients\[0\]\.grant_types: client_credentials needs an authenticated client/],
    [{ clients: [{ client_id: 'c', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] }] }, /clients\[0\]\.redirect_uris: are required/],
    [{ clients: [{ client_id: 'c', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], redirect_uris: ['http://example.com/cb'] }] }, /clients\[0\]\.redirect_uris\[0\]: must be an exact https URI/],
    [{ unknownSetting: true }, /^AGENTAUTH_CONFIG unknownSetting: not a setting agentauth knows/],
    [{ storage: { timeout: 5 } }, /^AGENTAUTH_CONFIG storage\.timeout: not a setting agentauth knows/],
    // A record's key (a tier name, a chain id) is refused with its rule, not zod's "Invalid key in record".
    [{ tiers: { Gold: {} } }, /^AGENTAUTH_CONFIG tiers\.Gold: tier names are 1-32 of a-z 0-9 _ -$/],
    [{ wallet: { chains: { '01': {} } } }, /^AGENTAUTH_CONFIG wallet\.chains\.01: chain ids are positive integers$/],
    [{ storage: { timeoutMs: 5 } }, /storage\.timeoutMs/],
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }], tokenExchange: { rules: [{ clients: ['x'], from: ['https://a.example.com'], to: ['https://nowhere.example.com'] }] } }, /tokenExchange\.rules\[0\]\.to: https:\/\/nowhere\.example\.com is not a configured resource server/],
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }], tokenExchange: { rules: [{ from: ['https://a.example.com'], to: ['https://a.example.com'] }] } }, /tokenExchange\.rules\[0\]: name the clients or the tiers/],
    [{ tokenExchange: { maxDepth: 0 } }, /tokenExchange\.maxDepth/],
    // A tier or a scope that does not exist: the rule would never match, or never carry the scope, with no word said.
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }], tokenExchange: { rules: [{ tiers: ['partners'], from: ['https://a.example.com'], to: ['https://a.example.com'] }] } }, /^AGENTAUTH_CONFIG tokenExchange\.rules\[0\]\.tiers: no tier named partners \(tiers: standard, bound, strict\)$/],
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }, { identifier: 'https://b.example.com', scopes: ['w'] }], tokenExchange: { rules: [{ clients: ['x'], from: ['https://a.example.com'], to: ['https://a.example.com'], scopes: ['w'] }] } }, /^AGENTAUTH_CONFIG tokenExchange\.rules\[0\]\.scopes: "w" is not a scope of any resource server in the rule's "to"$/],
    // Two rules that can allow one client the same hop with different next actors (one token names only one).
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }, { identifier: 'https://b.example.com', scopes: ['r'] }], tokenExchange: { rules: [{ clients: ['x'], from: ['https://a.example.com'], to: ['https://b.example.com'], nextActor: 'p' }, { clients: ['y', 'x'], from: ['https://a.example.com'], to: ['https://b.example.com', 'https://a.example.com'], nextActor: 'q' }] } }, /tokenExchange\.rules\[1\]\.nextActor: rules\[0\] and rules\[1\] can both allow one client the same hop, and name different next actors \(p, q\)/],
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }], tokenExchange: { rules: [{ tiers: ['standard'], from: ['https://a.example.com'], to: ['https://a.example.com'], nextActor: 'p' }, { tiers: ['bound', 'standard'], from: ['https://a.example.com'], to: ['https://a.example.com'], nextActor: 'q' }] } }, /rules\[0\] and rules\[1\] can both allow/],
    // A client id not in the file could be registered in the tier the other rule names.
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }], tokenExchange: { rules: [{ clients: ['registered-id'], from: ['https://a.example.com'], to: ['https://a.example.com'], nextActor: 'p' }, { tiers: ['bound'], from: ['https://a.example.com'], to: ['https://a.example.com'], nextActor: 'q' }] } }, /rules\[0\] and rules\[1\] can both allow/],
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }], clients: [{ client_id: 'c', client_secret: 'x'.repeat(32), token_exchange_resources: ['https://nowhere.example.com'] }] }, /clients\[0\]\.token_exchange_resources: https:\/\/nowhere\.example\.com is not a configured resource server/],
    [{ resourceServers: [{ identifier: 'https://a.example.com', scopes: ['r'] }], clients: [{ client_id: 'c', client_secret: 'x'.repeat(32), token_exchange_resources: ['https://a.example.com', 'https://a.example.com'] }] }, /clients\[0\]\.token_exchange_resources: must not repeat/],
    [{ clients: [{ client_id: 'c', client_secret: 'x'.repeat(32), token_exchange_resources: [] }] }, /clients\[0\]\.token_exchange_resources/],
    [{ clients: [{ client_id: 'c', client_secret: 'x'.repeat(32), client_name: 'Agent\u202Eevil' }] }, /clients\[0\]\.client_name: must not contain control, line-separator or bidirectional-formatting characters \(found U\+202E\)/],
    [{ clients: [{ client_id: 'c', client_secret: 'x'.repeat(32), client_name: 'Agent\u0000' }] }, /clients\[0\]\.client_name: .*U\+0000/],
    [{ clients: [{ client_id: 'c', client_secret: 'x'.repeat(32), client_name: '' }] }, /clients\[0\]\.client_name: must be a string of 1 to 200 characters/],
  ])('config file %j is refused by path', (file, pattern) => {
    expect(message({ AGENTAUTH_CONFIG: withFile(file) })).toMatch(pattern);
  });
});

describe('docs/configuration.md', () => {
  const doc = readFileSync(join(process.cwd(), 'docs', 'configuration.md'), 'utf8');
  /** Every ```json block of the page, in order. */
  const blocks = [...doc.matchAll(/^```json\n([\s\S]*?)\n```$/gm)].map((m) => m[1]!);

  test('"The JSON file" lists every member with its default: loading it gives what an empty file gives', () => {
    const listing = blocks[0]!;
    expect(doc.indexOf(listing)).toBeGreaterThan(doc.indexOf('## The JSON file'));
    const { configFile: _a, ...fromListing } = loadConfig({ AGENTAUTH_CONFIG: withFile(listing) });
    const { configFile: _b, ...fromNothing } = loadConfig({ AGENTAUTH_CONFIG: withFile({}) });
    expect(fromListing).toEqual(fromNothing);
    // And the listing names every top-level member the schema has.
    expect(Object.keys(JSON.parse(listing) as object).sort()).toEqual(
      ['resourceServers', 'clients', 'registration', 'clientIdMetadataDocuments', 'tiers', 'maxBearerTokenTTL', 'dpop', 'tokenExchange', 'wallet', 'limits', 'keys', 'storage', 'admin', 'shutdownTimeoutMs'].sort(),
    );
  });

  test('rules with different next actors are accepted where no client can meet both', () => {
    const resourceServers = [{ identifier: 'https://a.example.com', scopes: ['r'] }, { identifier: 'https://b.example.com', scopes: ['r'] }];
    const rule = (extra: Record<string, unknown>) => ({ from: ['https://a.example.com'], to: ['https://b.example.com'], ...extra });
    for (const rules of [
      [rule({ clients: ['x'], nextActor: 'p' }), rule({ clients: ['y'], nextActor: 'q' })],
      [rule({ tiers: ['standard'], nextActor: 'p' }), rule({ tiers: ['bound'], nextActor: 'q' })],
      [rule({ clients: ['x'], nextActor: 'p' }), { ...rule({ clients: ['x'], nextActor: 'q' }), from: ['https://b.example.com'] }],
      [rule({ clients: ['x'], nextActor: 'p' }), rule({ clients: ['x'] })],
      [rule({ clients: ['x'], nextActor: 'p' }), rule({ clients: ['x'], nextActor: 'p' })],
      // x is a client of the file, in tier standard: a rule for tier bound never applies to it.
      [rule({ clients: ['x'], nextActor: 'p' }), rule({ tiers: ['bound'], nextActor: 'q' })],
    ]) {
      const file = { resourceServers, clients: [{ client_id: 'x', client_secret: 'x'.repeat(32), tier: 'standard' }], tokenExchange: { rules } };
      expect(() => loadConfig({ AGENTAUTH_CONFIG: withFile(file) })).not.toThrow();
    }
  });

  test('every example on the page is a configuration the server accepts', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(4);
    const resourceServers = [
      { identifier: 'https://skill-a.example.com', scopes: ['read'] },
      { identifier: 'https://skill-b.example.com', scopes: ['read'] },
      { identifier: 'https://skill-c.example.com', scopes: ['read'] },
    ];
    for (const block of blocks) {
      // A fragment ("member": value) is completed into a file; the token-exchange example needs its resource servers.
      const parsed = JSON.parse(block.trimStart().startsWith('{') ? block : `{${block}}`) as Record<string, unknown>;
      const file = parsed.tokenExchange && !parsed.resourceServers ? { resourceServers, clients: [{ client_id: 'skill-a', client_secret: 'x'.repeat(32) }], ...parsed } : parsed;
      const env = (file.admin as { port?: number } | undefined)?.port ? { AGENTAUTH_ADMIN_TOKEN: 'a'.repeat(32) } : {};
      expect(() => loadConfig({ AGENTAUTH_CONFIG: withFile(file), ...env })).not.toThrow();
    }
  });
});


describe('initial access token limits are checked as registration will read them back', () => {
  const manyScopes = Array.from({ length: 120 }, (_, i) => `s${i}`);
  const config = () => loadConfig({ AGENTAUTH_CONFIG: withFile({ registration: { mode: 'token' }, resourceServers: [{ identifier: 'https://api.example.com', scopes: manyScopes }] }) });

  test('more scopes than a limits record holds are refused at creation, not made into a token that registers nothing', async () => {
    const { checkInitialAccessTokenRequest } = await import('../../server/initial-access-tokens.js');
    expect(checkInitialAccessTokenRequest(config(), { scope: manyScopes.slice(0, 100).join(' ') }, { inProcess: true }).limits?.scope?.split(' ')).toHaveLength(100);
    expect(() => checkInitialAccessTokenRequest(config(), { scope: manyScopes.slice(0, 101).join(' ') }, { inProcess: true })).toThrow('--scope: names 101 scopes; at most 100');
  });

  test('refresh_token without a grant it is registered with is refused at creation', async () => {
    const { checkInitialAccessTokenRequest } = await import('../../server/initial-access-tokens.js');
    expect(() => checkInitialAccessTokenRequest(config(), { grantTypes: 'refresh_token' }, { inProcess: true })).toThrow(
      '--grant-types: refresh_token is only registered with authorization_code or urn:agentauth:params:oauth:grant-type:wallet-signature: name one of them too',
    );
    expect(checkInitialAccessTokenRequest(config(), { grantTypes: 'authorization_code,refresh_token' }, { inProcess: true }).limits).toEqual({ grant_types: ['authorization_code', 'refresh_token'] });
  });
});
