import { randomBytes } from 'node:crypto';

import type { CommandStartedEvent } from 'mongodb';
import { errors } from 'oidc-provider';

import { InvalidStorageValueError } from '../../adapters/errors.js';
import { MongoStorage } from '../../adapters/mongodb.js';
import { RefreshTokenRaceLost, oidcAdapterFactory } from '../../adapters/oidc-adapter.js';
import { sealCredentialIds } from '../../adapters/sealed-credential-ids.js';
import { SqliteStorage } from '../../adapters/sqlite.js';
import type { AdapterPayload, ModelName, Storage, StoredKey } from '../../adapters/types.js';
import { MAX_REVOKED_LOOKUP, MODEL_NAMES } from '../../adapters/types.js';
import { FACTORIES, mongoUri, recordContractRun } from '../support/storages.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rid = () => Math.random().toString(36).slice(2) + Date.now().toString(36);

/** Requests can put objects, arrays and operator strings where identifiers belong. None may reach a query. */
const HOSTILE: unknown[] = [{ $gt: '' }, { $ne: null }, ['a', 'b'], '$where', '$gt', '', 'a\u0000b', 'tab\there', 'x'.repeat(5000), 42, null];

describe.each(FACTORIES)('storage contract: $name', (factory) => {
  let storage: Storage;
  let testsRun = 0;
  const commands: CommandStartedEvent[] = [];

  beforeAll(async () => {
    storage = factory.create('contract');
    if (storage instanceof MongoStorage) storage.client.on('commandStarted', (e) => commands.push(e));
    await storage.init();
  });

  afterEach(() => {
    testsRun += 1;
  });

  afterAll(async () => {
    let server: Record<string, unknown> = {};
    if (storage instanceof MongoStorage) {
      const info = await storage.db.command({ buildInfo: 1 });
      const hello = await storage.db.command({ hello: 1 });
      server = { version: info.version, maxWireVersion: hello.maxWireVersion, ttlIndexes: storage.ttlSupported, uri: mongoUri().replace(/\/\/[^@]*@/, '//***@') };
    }
    if (storage instanceof SqliteStorage) {
      const one = (sql: string) => Object.values((storage as SqliteStorage).db.prepare(sql).get() as Record<string, unknown>)[0];
      server = { version: one('SELECT sqlite_version()'), journalMode: one('PRAGMA journal_mode'), synchronous: one('PRAGMA synchronous'), file: storage.file };
    }
    recordContractRun({ backend: factory.name, testsRun, server, at: new Date().toISOString() });
    await storage.close();
  });

  describe.each(MODEL_NAMES.map((m) => [m]))('%s', (model: ModelName) => {
    test('upsert then find returns a copy of the payload; destroy removes it', async () => {
      const store = storage.model(model);
      const id = rid();
      const payload: AdapterPayload = { kind: model, jti: id, grantId: `g-${id}`, exp: 2_000_000_000 };
      await store.upsert(id, payload, 60);
      const found = await store.find(id);
      expect(found).toEqual(payload);
      found!.kind = 'mutated';
      expect((await store.find(id))?.kind).toBe(model);
      await store.upsert(id, { ...payload, scope: 'read' }, 60);
      expect((await store.find(id))?.scope).toBe('read');
      await store.destroy(id);
      expect(await store.find(id)).toBeUndefined();
    });

    test('revokeByGrantId removes every record of that grant and nothing else', async () => {
      const store = storage.model(model);
      const grantId = `g-${rid()}`;
      const [a, b, other] = [rid(), rid(), rid()];
      await store.upsert(a, { grantId, kind: model }, 60);
      await store.upsert(b, { grantId, kind: model }, 60);
      await store.upsert(other, { grantId: `${grantId}-other`, kind: model }, 60);
      await store.revokeByGrantId(grantId);
      expect(await store.find(a)).toBeUndefined();
      expect(await store.find(b)).toBeUndefined();
      expect(await store.find(other)).toBeDefined();
    });

    test('findByUid and findByUserCode find by those fields only', async () => {
      const store = storage.model(model);
      const id = rid();
      const uid = `uid-${id}`;
      const userCode = `UC-${id}`;
      await store.upsert(id, { uid, userCode, kind: model }, 60);
      expect((await store.findByUid(uid))?.uid).toBe(uid);
      expect((await store.findByUserCode(userCode))?.userCode).toBe(userCode);
      expect(await store.findByUid(`${uid}-nope`)).toBeUndefined();
      expect(await store.findByUserCode(`${userCode}-nope`)).toBeUndefined();
    });
  });

  test('payload maps keyed by URLs (keys with "." and ":") round-trip unchanged', async () => {
    const store = storage.model('Grant');
    const id = rid();
    const payload: AdapterPayload = {
      kind: 'Grant',
      resources: { 'https://api.example.com/v1': 'read write', 'urn:example:x.y': 'a' },
      rejected: { $weird: 'value' } as unknown as AdapterPayload['rejected'],
    };
    await store.upsert(id, payload, 60);
    expect(await store.find(id)).toEqual(payload);
  });

  test('expired records are never returned by any lookup, and are reclaimed', async () => {
    const store = storage.model('Session');
    const id = rid();
    const uid = `uid-${id}`;
    await store.upsert(id, { uid, kind: 'Session', grantId: `g-${id}` }, 1);
    expect(await store.find(id)).toBeDefined();
    await sleep(1100);
    expect(await store.find(id)).toBeUndefined();
    expect(await store.findByUid(uid)).toBeUndefined();
    expect(await store.consume(id)).toBe(false);

    if (storage instanceof MongoStorage) {
      const raw = storage.db.collection('oidc_Session');
      if (storage.ttlSupported) {
        const ttl = (await raw.indexes()).find((i) => i.name === 'expiresAt_1');
        expect(ttl?.expireAfterSeconds).toBe(0);
      } else {
        // No TTL indexes on this server (FerretDB v1): the sweep reclaims what reads already ignore.
        expect(await raw.countDocuments({ _id: id as never })).toBe(1);
        expect(await storage.sweep()).toBeGreaterThanOrEqual(1);
        expect(await raw.countDocuments({ _id: id as never })).toBe(0);
      }
    }
    if (storage instanceof SqliteStorage) {
      // The row is still in the file until the sweep reclaims it; reads above filtered it out on expires_at.
      const count = () => (storage as SqliteStorage).db.prepare("SELECT count(*) AS n FROM oidc_records WHERE model = 'Session' AND id = ?").get(id) as { n: number };
      expect(count().n).toBe(1);
      expect(await storage.sweep()).toBeGreaterThanOrEqual(1);
      expect(count().n).toBe(0);
    }
  });

  test('records without an expiry never expire', async () => {
    const store = storage.model('Client');
    const id = rid();
    await store.upsert(id, { client_id: id });
    expect((await store.find(id))?.client_id).toBe(id);
  });

  test('consume is atomic: 20 concurrent consumes of one authorization code give exactly one success', async () => {
    const store = storage.model('AuthorizationCode');
    const id = rid();
    await store.upsert(id, { kind: 'AuthorizationCode', grantId: `g-${id}` }, 60);
    const results = await Promise.all(Array.from({ length: 20 }, () => store.consume(id)));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(typeof (await store.find(id))?.consumed).toBe('number');
    expect(await store.consume(id)).toBe(false);
  });

  test('through the oidc-provider adapter, the 19 losers get invalid_grant', async () => {
    const adapter = oidcAdapterFactory(storage)('AuthorizationCode');
    const id = rid();
    await adapter.upsert(id, { kind: 'AuthorizationCode' }, 60);
    const settled = await Promise.allSettled(Array.from({ length: 20 }, () => adapter.consume(id)));
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(1);
    const rejected = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
    expect(rejected).toHaveLength(19);
    for (const r of rejected) {
      expect(r.reason).toBeInstanceOf(errors.InvalidGrant);
      expect((r.reason as { error_detail?: string }).error_detail).toBe('authorization code already used');
    }
  });

  test('consumption: undefined until consumed; then when, and no successor', async () => {
    const store = storage.model('RefreshToken');
    const id = rid();
    await store.upsert(id, { kind: 'RefreshToken', grantId: `g-${id}` }, 60);
    expect(await store.consumption(id)).toBeUndefined();
    const before = Math.floor(Date.now() / 1000);
    expect(await store.consume(id)).toBe(true);
    const mark = await store.consumption(id);
    expect(mark).toEqual({ at: expect.any(Number) });
    expect(mark!.at).toBeGreaterThanOrEqual(before);
    expect(mark!.at).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    expect(await store.consumption(rid())).toBeUndefined();
  });

  test('setSuccessor is atomic: of 20 concurrent calls for one consumed token exactly one records its successor', async () => {
    const store = storage.model('RefreshToken');
    const id = rid();
    await store.upsert(id, { kind: 'RefreshToken', grantId: `g-${id}` }, 60);
    expect(await store.consume(id)).toBe(true);
    const candidates = Array.from({ length: 20 }, () => rid());
    const results = await Promise.all(candidates.map((successor) => store.setSuccessor(id, successor)));
    expect(results.filter(Boolean)).toHaveLength(1);
    const winner = candidates[results.indexOf(true)];
    expect((await store.consumption(id))?.successor).toBe(winner);
    expect(await store.setSuccessor(id, rid())).toBe(false);
    expect((await store.consumption(id))?.successor).toBe(winner);
    // The successor is kept beside the record, not handed back in its payload.
    expect(await store.find(id)).toEqual({ kind: 'RefreshToken', grantId: `g-${id}`, consumed: expect.any(Number) });
  });

  test('setSuccessor refuses an unconsumed, missing or revoked record; consumption forgets a revoked one', async () => {
    const store = storage.model('RefreshToken');
    const id = rid();
    await store.upsert(id, { kind: 'RefreshToken', grantId: `g-${id}` }, 60);
    expect(await store.setSuccessor(id, rid())).toBe(false);
    expect(await store.consumption(id)).toBeUndefined();
    expect(await store.setSuccessor(rid(), rid())).toBe(false);
    expect(await store.consume(id)).toBe(true);
    expect(await store.setSuccessor(id, rid())).toBe(true);
    await store.revokeByGrantId(`g-${id}`);
    expect(await store.consumption(id)).toBeUndefined();
    expect(await store.setSuccessor(id, rid())).toBe(false);
    await expect(store.setSuccessor(id, { $ne: null } as unknown as string)).rejects.toBeInstanceOf(InvalidStorageValueError);
    expect(await store.consumption({ $ne: null } as unknown as string)).toBeUndefined();
  });

  test('rotate is atomic: of 50 concurrent rotations of one token exactly one consumes it, stores its successor and records it', async () => {
    const store = storage.model('RefreshToken');
    for (let round = 0; round < 3; round += 1) {
      const id = rid();
      await store.upsert(id, { kind: 'RefreshToken', grantId: `g-${id}` }, 60);
      const successors = Array.from({ length: 50 }, () => rid());
      const results = await Promise.all(
        successors.map((next) => store.rotate(id, next, { kind: 'RefreshToken', grantId: `g-${id}`, rotations: 1 }, 60, true)),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = successors[results.indexOf(true)]!;
      expect(await store.find(winner)).toEqual({ kind: 'RefreshToken', grantId: `g-${id}`, rotations: 1 });
      // The losers stored nothing: no second live token for the grant.
      for (const loser of successors.filter((s) => s !== winner)) expect(await store.find(loser)).toBeUndefined();
      expect(await store.consumption(id)).toEqual({ at: expect.any(Number), successor: winner });
      expect(await store.consume(id)).toBe(false);
    }
  });

  test('rotate refuses a consumed, missing, expired or hostile token and then stores nothing; without recordSuccessor it records none', async () => {
    const store = storage.model('RefreshToken');
    const id = rid();
    await store.upsert(id, { kind: 'RefreshToken', grantId: `g-${id}` }, 60);
    expect(await store.consume(id)).toBe(true);
    const next = rid();
    expect(await store.rotate(id, next, { kind: 'RefreshToken', grantId: `g-${id}` }, 60, true)).toBe(false);
    expect(await store.find(next)).toBeUndefined();
    expect(await store.consumption(id)).toEqual({ at: expect.any(Number) });
    for (const missing of [rid(), ...HOSTILE]) {
      const other = rid();
      expect(await store.rotate(missing as string, other, { kind: 'RefreshToken' }, 60, true)).toBe(false);
      expect(await store.find(other)).toBeUndefined();
    }
    const short = rid();
    await store.upsert(short, { kind: 'RefreshToken', grantId: `g-${short}` }, 1);
    await new Promise((r) => setTimeout(r, 1100));
    const afterExpiry = rid();
    expect(await store.rotate(short, afterExpiry, { kind: 'RefreshToken' }, 60, true)).toBe(false);
    expect(await store.find(afterExpiry)).toBeUndefined();

    const plain = rid();
    await store.upsert(plain, { kind: 'RefreshToken', grantId: `g-${plain}` }, 60);
    const plainNext = rid();
    expect(await store.rotate(plain, plainNext, { kind: 'RefreshToken', grantId: `g-${plain}` }, 60, false)).toBe(true);
    expect(await store.find(plainNext)).toEqual({ kind: 'RefreshToken', grantId: `g-${plain}` });
    expect(await store.consumption(plain)).toEqual({ at: expect.any(Number) });
  });

  test('an expired consumed record has no consumption', async () => {
    const store = storage.model('RefreshToken');
    const id = rid();
    await store.upsert(id, { kind: 'RefreshToken', grantId: `g-${id}` }, 1);
    expect(await store.consume(id)).toBe(true);
    expect(await store.setSuccessor(id, rid())).toBe(true);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await store.consumption(id)).toBeUndefined();
  });

  test('through the oidc-provider adapter with deferRefreshTokenReuse, a lost refresh-token race revokes nothing', async () => {
    const adapter = oidcAdapterFactory(storage, undefined, { deferRefreshTokenReuse: true })('RefreshToken');
    const id = rid();
    const grantId = `g-${id}`;
    await adapter.upsert(id, { kind: 'RefreshToken', grantId }, 60);
    const sibling = rid();
    await storage.model('AccessToken').upsert(sibling, { kind: 'AccessToken', grantId }, 60);
    const settled = await Promise.allSettled(Array.from({ length: 10 }, () => adapter.consume(id)));
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(1);
    for (const r of settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected')) expect(r.reason).toBeInstanceOf(RefreshTokenRaceLost);
    expect(await storage.model('RefreshToken').find(id)).toBeDefined();
    expect(await storage.model('AccessToken').find(sibling)).toBeDefined();
  });

  test('insertOnce is atomic: 20 concurrent inserts of one id give exactly one success (DPoP / assertion replay)', async () => {
    const store = storage.model('ReplayDetection');
    const id = rid();
    const results = await Promise.all(Array.from({ length: 20 }, () => store.insertOnce(id, { kind: 'ReplayDetection', iss: 'x' }, 60)));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await store.insertOnce(id, { kind: 'ReplayDetection' }, 60)).toBe(false);
  });

  test('insertOnce succeeds again once the earlier record has expired', async () => {
    const store = storage.model('ReplayDetection');
    const id = rid();
    expect(await store.insertOnce(id, { kind: 'ReplayDetection' }, 1)).toBe(true);
    await sleep(1100);
    expect(await store.insertOnce(id, { kind: 'ReplayDetection' }, 60)).toBe(true);
    expect(await store.insertOnce(id, { kind: 'ReplayDetection' }, 60)).toBe(false);
  });

  test('revokeByClientId removes that client\'s grants, codes and tokens, and nothing of other clients', async () => {
    const clientId = `c-${rid()}`;
    const ids: Array<[ModelName, string]> = (['Grant', 'AccessToken', 'RefreshToken', 'AuthorizationCode', 'ClientCredentials'] as const).map((m) => [m, rid()]);
    for (const [m, id] of ids) await storage.model(m).upsert(id, { kind: m, clientId, grantId: `g-${id}` }, 60);
    const other = rid();
    await storage.model('RefreshToken').upsert(other, { kind: 'RefreshToken', clientId: `${clientId}-other` }, 60);
    for (const [m] of ids) await storage.model(m).revokeByClientId(clientId);
    for (const [m, id] of ids) expect(await storage.model(m).find(id)).toBeUndefined();
    expect(await storage.model('RefreshToken').find(other)).toBeDefined();
  });

  test('list: live records in id order after a cursor, up to a limit, expired ones skipped (pages are never cut short by them)', async () => {
    const store = storage.model('InitialAccessToken');
    const prefix = `L-${rid()}-`;
    for (const suffix of ['c', 'a', 'b']) await store.upsert(`${prefix}${suffix}`, { kind: 'InitialAccessToken', jti: `${prefix}${suffix}` }, 60);
    await store.upsert(`${prefix}bb`, { kind: 'InitialAccessToken', jti: `${prefix}bb` }, 1);
    await store.upsert(`${prefix}b0`, { kind: 'InitialAccessToken', jti: `${prefix}b0` }, 1);
    await new Promise((r) => setTimeout(r, 1100));
    const mine = (page: Array<{ id: string }>) => page.map((r) => r.id).filter((id) => id.startsWith(prefix));
    const all = await store.list(prefix, 1000);
    expect(mine(all)).toEqual([`${prefix}a`, `${prefix}b`, `${prefix}c`]);
    expect(all.find((r) => r.id === `${prefix}a`)?.payload).toEqual({ kind: 'InitialAccessToken', jti: `${prefix}a` });
    // After b come the two expired records, then c: a page of one must still be c.
    expect((await store.list(`${prefix}b`, 1)).map((r) => r.id)).toEqual([`${prefix}c`]);
    expect(await store.list(`${prefix}a`, 0)).toEqual([]);
    const ids = (await store.list(undefined, 100_000)).map((r) => r.id);
    expect(ids).toEqual([...ids].sort());
    expect(ids).toEqual(expect.arrayContaining([`${prefix}a`, `${prefix}b`, `${prefix}c`]));
  });

  test('idsByAccount: one person\'s live grants and sessions, in id order, a page at a time; nobody else\'s, no expired one, and nothing for a hostile or empty account', async () => {
    const account = `did:pkh:eip155:1:0x${randomBytes(20).toString('hex')}`;
    const other = `${account}0`;
    for (const model of ['Grant', 'Session'] as const) {
      const store = storage.model(model);
      const prefix = `A-${rid()}-`;
      for (const suffix of ['c', 'a', 'b', 'd']) await store.upsert(`${prefix}${suffix}`, { kind: model, jti: `${prefix}${suffix}`, accountId: account, clientId: 'agent' }, 60);
      await store.upsert(`${prefix}b0`, { kind: model, accountId: account }, 1);
      await store.upsert(`${prefix}x`, { kind: model, accountId: other }, 60);
      await store.upsert(`${prefix}y`, { kind: model }, 60);
      await sleep(1100);
      const all = async (limit: number) => {
        const ids: string[] = [];
        let pages = 0;
        for (let after: string | undefined; ; pages += 1) {
          const page = await store.idsByAccount(account, after, limit);
          ids.push(...page.ids);
          if (page.next === undefined) return { ids, pages: pages + 1 };
          after = page.next;
        }
      };
      expect((await all(500)).ids).toEqual([`${prefix}a`, `${prefix}b`, `${prefix}c`, `${prefix}d`]);
      const paged = await all(2);
      expect(paged.ids).toEqual([`${prefix}a`, `${prefix}b`, `${prefix}c`, `${prefix}d`]);
      expect(paged.pages).toBeGreaterThanOrEqual(2);
      expect((await store.idsByAccount(other, undefined, 500)).ids).toEqual([`${prefix}x`]);
      await store.destroy(`${prefix}a`);
      expect((await all(500)).ids).toEqual([`${prefix}b`, `${prefix}c`, `${prefix}d`]);
      for (const bad of HOSTILE) expect((await store.idsByAccount(bad as string, undefined, 500)).ids).toEqual([]);
    }
  });

  if (factory.name === 'mongodb') {
    test('idsByAccount on MongoDB: grants and sessions stored before the accountId field are still found (matched on their payload)', async () => {
      if (!(storage instanceof MongoStorage)) throw new Error('MongoDB store expected');
      const account = `did:pkh:eip155:1:0x${randomBytes(20).toString('hex')}`;
      const id = `legacy-${rid()}`;
      await storage.db.collection('oidc_Grant').insertOne({ _id: id as never, payload: JSON.stringify({ kind: 'Grant', jti: id, accountId: account }), expiresAt: new Date(Date.now() + 60_000), grantId: id, clientId: 'agent' });
      await storage.model('Grant').upsert(`${id}-new`, { kind: 'Grant', jti: `${id}-new`, accountId: account }, 60);
      expect((await storage.model('Grant').idsByAccount(account, undefined, 500)).ids.sort()).toEqual([id, `${id}-new`].sort());
      expect(await storage.db.collection('oidc_Grant').findOne({ _id: `${id}-new` as never })).toMatchObject({ accountId: account });
      const indexes = await storage.db.collection('oidc_Session').indexes();
      expect(indexes.find((i) => i.name === 'accountId_1__id_1')?.key).toEqual({ accountId: 1, _id: 1 });
    });
  }

  if (factory.name === 'sqlite') {
    test('idsByAccount on SQLite: grants and sessions are read through their account index (named), not the whole table', async () => {
      if (!(storage instanceof SqliteStorage)) throw new Error('SQLite store expected');
      const account = `did:pkh:eip155:1:0x${randomBytes(20).toString('hex')}`;
      for (const model of ['Grant', 'Session'] as const) {
        const index = `oidc_records_${model.toLowerCase()}_account`;
        const plan = (storage.db.prepare(`EXPLAIN QUERY PLAN SELECT id FROM oidc_records INDEXED BY ${index} WHERE model = '${model}' AND json_extract(payload, '$.accountId') = ? AND id > ? ORDER BY id LIMIT 1`).all('a', '') as Array<{ detail: string }>).map((r) => r.detail);
        expect(plan.join(' ')).toContain(`USING INDEX ${index}`);
        // The store's query names the index: without it, the lookup fails instead of reading every record.
        await storage.model(model).upsert(`I-${rid()}`, { kind: model, accountId: account }, 60);
        const { sql } = storage.db.prepare('SELECT sql FROM sqlite_schema WHERE name = ?').get(index) as { sql: string };
        expect(sql).toContain(`WHERE model = '${model}'`);
        storage.db.exec(`DROP INDEX ${index}`);
        try {
          await expect(storage.model(model).idsByAccount(account, undefined, 10)).rejects.toThrow(/no such index/);
        } finally {
          storage.db.exec(sql);
        }
        expect((await storage.model(model).idsByAccount(account, undefined, 10)).ids).toHaveLength(1);
      }
    });
  }

  test('revoked-token denylist: idempotent revoke, kept until exp, unknown jti not revoked', async () => {
    const jti = rid();
    const exp = Math.floor(Date.now() / 1000) + 60;
    expect(await storage.revokedTokens.isRevoked(jti)).toBe(false);
    await storage.revokedTokens.revoke(jti, exp);
    await storage.revokedTokens.revoke(jti, exp);
    expect(await storage.revokedTokens.isRevoked(jti)).toBe(true);
    const short = rid();
    await storage.revokedTokens.revoke(short, Math.floor(Date.now() / 1000) + 1);
    await sleep(1100);
    expect(await storage.revokedTokens.isRevoked(short)).toBe(false);
    expect(await storage.revokedTokens.isRevoked({ $gt: '' } as unknown as string)).toBe(false);
  });

  test('revoked-token denylist: anyRevoked finds one live id among many, ignores expired and invalid ids, bounds the list', async () => {
    const [a, b, c, gone] = [rid(), rid(), rid(), rid()];
    const exp = Math.floor(Date.now() / 1000) + 60;
    expect(await storage.revokedTokens.anyRevoked([])).toBe(false);
    expect(await storage.revokedTokens.anyRevoked([a, b, c])).toBe(false);
    await storage.revokedTokens.revoke(b, exp);
    await storage.revokedTokens.revoke(gone, Math.floor(Date.now() / 1000) + 1);
    expect(await storage.revokedTokens.anyRevoked([a, b, c])).toBe(true);
    expect(await storage.revokedTokens.anyRevoked([b])).toBe(true);
    expect(await storage.revokedTokens.anyRevoked([a, c])).toBe(false);
    await sleep(1100);
    expect(await storage.revokedTokens.anyRevoked([a, gone, c])).toBe(false);
    // Hostile entries match nothing and do not hide a real match next to them.
    const hostile = [{ $gt: '' }, ['x'], '$where', ''] as unknown as string[];
    expect(await storage.revokedTokens.anyRevoked(hostile)).toBe(false);
    expect(await storage.revokedTokens.anyRevoked([...hostile, b])).toBe(true);
    const many = Array.from({ length: MAX_REVOKED_LOOKUP }, () => rid());
    expect(await storage.revokedTokens.anyRevoked([...many.slice(1), b])).toBe(true);
    await expect(storage.revokedTokens.anyRevoked([...many, b])).rejects.toBeInstanceOf(InvalidStorageValueError);
  });

  test('nonces: 20 concurrent consumes give exactly one success; unknown and expired nonces fail', async () => {
    const nonce = rid();
    await storage.nonces.issue(nonce, 60, 'client:c1');
    const results = await Promise.all(Array.from({ length: 20 }, () => storage.nonces.consume(nonce)));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await storage.nonces.consume(nonce)).toBe(false);
    expect(await storage.nonces.consume(rid())).toBe(false);
    const short = rid();
    await storage.nonces.issue(short, 1, 'client:c1');
    await sleep(1100);
    expect(await storage.nonces.consume(short)).toBe(false);
    expect(await storage.nonces.consume({ $ne: null } as unknown as string)).toBe(false);
  });

  test('nonces: boundTo answers the binding of an issued, unexpired nonce (consumed or not) and nothing else', async () => {
    const a = rid();
    const b = rid();
    await storage.nonces.issue(a, 60, 'interaction:uid-1');
    await storage.nonces.issue(b, 60, 'client:https://agent.example.com/id');
    expect(await storage.nonces.boundTo(a)).toBe('interaction:uid-1');
    expect(await storage.nonces.boundTo(b)).toBe('client:https://agent.example.com/id');
    expect(await storage.nonces.consume(a)).toBe(true);
    expect(await storage.nonces.boundTo(a)).toBe('interaction:uid-1');
    expect(await storage.nonces.boundTo(rid())).toBeUndefined();
    const short = rid();
    await storage.nonces.issue(short, 1, 'client:c1');
    await sleep(1100);
    expect(await storage.nonces.boundTo(short)).toBeUndefined();
    for (const bad of HOSTILE) expect(await storage.nonces.boundTo(bad as string)).toBeUndefined();
    await expect(storage.nonces.issue(rid(), 60, { $ne: null } as unknown as string)).rejects.toBeInstanceOf(InvalidStorageValueError);
  });

  test('attempt slots: of 20 concurrent takes for one key exactly `limit` succeed, later takes fail, other keys are separate', async () => {
    const key = `nonce:${rid()}`;
    const results = await Promise.all(Array.from({ length: 20 }, () => storage.nonces.takeAttempt(key, 5, 60)));
    expect(results.filter(Boolean)).toHaveLength(5);
    expect(await storage.nonces.takeAttempt(key, 5, 60)).toBe(false);
    const other = `interaction:${rid()}`;
    expect(await storage.nonces.takeAttempt(other, 2, 60)).toBe(true);
    expect(await storage.nonces.takeAttempt(other, 2, 60)).toBe(true);
    expect(await storage.nonces.takeAttempt(other, 2, 60)).toBe(false);
    await expect(storage.nonces.takeAttempt({ $gt: '' } as unknown as string, 5, 60)).rejects.toBeInstanceOf(InvalidStorageValueError);
  });

  test('claims: of 50 concurrent claims of one key, three rounds, exactly one records its value and every other gets that value; an expired claim is taken over', async () => {
    for (let round = 0; round < 3; round += 1) {
      const key = `consent:${rid()}`;
      const values = Array.from({ length: 50 }, (_, i) => `${i % 2 === 0 ? 'approve' : 'deny'}.${round}-${i}`);
      const held = await Promise.all(values.map((v) => storage.nonces.claim(key, v, 60)));
      const winners = values.filter((v, i) => held[i] === v);
      expect({ round, winners: winners.length }).toEqual({ round, winners: 1 });
      expect(new Set(held)).toEqual(new Set(winners));
      // Later claims, and a read of the key, see the same value.
      expect(await storage.nonces.claim(key, 'deny.late', 60)).toBe(winners[0]);
      expect(await storage.nonces.boundTo(key)).toBe(winners[0]);
    }
    const short = `consent:${rid()}`;
    expect(await storage.nonces.claim(short, 'approve.first', 1)).toBe('approve.first');
    expect(await storage.nonces.claim(short, 'deny.second', 60)).toBe('approve.first');
    await sleep(1100);
    expect(await storage.nonces.claim(short, 'deny.third', 60)).toBe('deny.third');
    expect(await storage.nonces.claim(short, 'approve.fourth', 60)).toBe('deny.third');
    await expect(storage.nonces.claim({ $ne: null } as unknown as string, 'approve.x', 60)).rejects.toBeInstanceOf(InvalidStorageValueError);
    await expect(storage.nonces.claim(`consent:${rid()}`, { $gt: '' } as unknown as string, 60)).rejects.toBeInstanceOf(InvalidStorageValueError);
  });

  test('claims are withdrawn only by their holder: a release with another value changes nothing; the holder\'s frees the key, and of 50 concurrent claims after it exactly one wins', async () => {
    const key = `consent:${rid()}`;
    expect(await storage.nonces.claim(key, 'approve.first', 60)).toBe('approve.first');
    // A loser (or anyone else) withdraws nothing, whatever it sends.
    await storage.nonces.release(key, 'deny.second');
    await storage.nonces.release(key, 'approve.firs');
    expect(await storage.nonces.boundTo(key)).toBe('approve.first');
    expect(await storage.nonces.claim(key, 'deny.third', 60)).toBe('approve.first');
    // The holder's release frees the key: the next claims race afresh, and one of them wins.
    await storage.nonces.release(key, 'approve.first');
    expect(await storage.nonces.boundTo(key)).toBeUndefined();
    const values = Array.from({ length: 50 }, (_, i) => `${i % 2 === 0 ? 'approve' : 'deny'}.again-${i}`);
    const held = await Promise.all(values.map((v) => storage.nonces.claim(key, v, 60)));
    const winners = values.filter((v, i) => held[i] === v);
    expect(winners).toHaveLength(1);
    expect(new Set(held)).toEqual(new Set(winners));
    // Releasing a key nobody holds, or the old holder's value again, is harmless.
    await storage.nonces.release(key, 'approve.first');
    await storage.nonces.release(`consent:${rid()}`, 'approve.x');
    expect(await storage.nonces.boundTo(key)).toBe(winners[0]);
    await expect(storage.nonces.release({ $ne: null } as unknown as string, 'approve.x')).rejects.toBeInstanceOf(InvalidStorageValueError);
    await expect(storage.nonces.release(key, { $gt: '' } as unknown as string)).rejects.toBeInstanceOf(InvalidStorageValueError);
    expect(await storage.nonces.boundTo(key)).toBe(winners[0]);
  });

  test('attempt slots with a large limit (the shared request limits): of 10 sequential then 60 concurrent takes, exactly 40 in all succeed', async () => {
    const key = `limit:test:${rid()}`;
    for (let i = 0; i < 10; i += 1) expect(await storage.nonces.takeAttempt(key, 40, 60)).toBe(true);
    const results = await Promise.all(Array.from({ length: 60 }, () => storage.nonces.takeAttempt(key, 40, 60)));
    expect(results.filter(Boolean)).toHaveLength(30);
    expect(await storage.nonces.takeAttempt(key, 40, 60)).toBe(false);
  });

  test('attempt slots with a limit that does not split evenly (21): each of 21 sequential takes succeeds and later ones are refused; of 5 sequential then 30 concurrent takes, exactly 21 succeed', async () => {
    // On MongoDB, 21 slots are two ranges of 10 and 11 that fill independently: a take may refuse only when both are full.
    for (let round = 0; round < 3; round += 1) {
      const sequential = `limit:uneven:${rid()}`;
      for (let i = 0; i < 21; i += 1) expect(await storage.nonces.takeAttempt(sequential, 21, 60)).toBe(true);
      expect(await Promise.all(Array.from({ length: 10 }, () => storage.nonces.takeAttempt(sequential, 21, 60)))).toEqual(Array(10).fill(false));
    }
    const key = `limit:uneven:${rid()}`;
    for (let i = 0; i < 5; i += 1) expect(await storage.nonces.takeAttempt(key, 21, 60)).toBe(true);
    const results = await Promise.all(Array.from({ length: 30 }, () => storage.nonces.takeAttempt(key, 21, 60)));
    expect(results.filter(Boolean)).toHaveLength(16);
    for (let i = 0; i < 4; i += 1) expect(await storage.nonces.takeAttempt(key, 21, 60)).toBe(false);
  });

  if (factory.name === 'mongodb') {
    test('attempt slots taken through two stores on one database (two processes, each with its own hints of the slots it saw taken): exactly the limit, sequential and at once', async () => {
      if (!(storage instanceof MongoStorage)) throw new Error('MongoDB store expected');
      const other = new MongoStorage({ uri: mongoUri(), dbName: storage.db.databaseName });
      await other.init();
      try {
        for (let round = 0; round < 3; round += 1) {
          const key = `limit:two:${rid()}`;
          // Alternating, then each store again after the other moved on: neither may skip a free slot or take past the limit.
          const sequential: boolean[] = [];
          for (let i = 0; i < 30; i += 1) sequential.push(await (i % 3 === 0 ? other : storage).nonces.takeAttempt(key, 40, 60));
          expect(sequential).toEqual(Array(30).fill(true));
          const burst = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? other : storage).nonces.takeAttempt(key, 40, 60)));
          expect(burst.filter(Boolean)).toHaveLength(10);
          expect(await storage.nonces.takeAttempt(key, 40, 60)).toBe(false);
          expect(await other.nonces.takeAttempt(key, 40, 60)).toBe(false);
        }
      } finally {
        await other.close();
      }
    });
  }

  test('sealed registration access tokens: a rotation records its successor, which comes back as the token it is (never as stored); of 20 concurrent rotations one wins', async () => {
    const kek = randomBytes(32);
    const sealed = sealCredentialIds(storage, kek, { acceptUnsealed: false }).model('RegistrationAccessToken');
    const old = rid();
    await sealed.upsert(old, { jti: old, kind: 'RegistrationAccessToken', clientId: `c-${old}` });
    const successors = Array.from({ length: 20 }, () => rid());
    const results = await Promise.all(successors.map((next) => sealed.rotate(old, next, { jti: next, kind: 'RegistrationAccessToken', clientId: `c-${old}` }, undefined, true)));
    expect(results.filter(Boolean)).toHaveLength(1);
    const winner = successors[results.indexOf(true)]!;
    expect(await sealed.consumption(old)).toEqual({ at: expect.any(Number), successor: winner });
    expect(await sealed.find(winner)).toMatchObject({ jti: winner, clientId: `c-${old}` });
    for (const loser of successors.filter((s) => s !== winner)) expect(await sealed.find(loser)).toBeUndefined();
    // The store itself holds neither token under its value; another KEK gets no successor out of the record.
    expect(await storage.model('RegistrationAccessToken').find(winner)).toBeUndefined();
    expect((await sealCredentialIds(storage, randomBytes(32), { acceptUnsealed: false }).model('RegistrationAccessToken').consumption(old))?.successor).toBeUndefined();
  });

  test('during a rotation of the KEK, credentials stored under the fallback KEK are found, used once (of 50 concurrent rotations one wins, three times) and succeeded under the new KEK; without the fallback they are not found', async () => {
    const [old, next] = [randomBytes(32), randomBytes(32)];
    const before = sealCredentialIds(storage, old, { acceptUnsealed: false });
    const rotating = sealCredentialIds(storage, next, { acceptUnsealed: false, fallback: old });
    const after = sealCredentialIds(storage, next, { acceptUnsealed: false });
    const [opaque, doomed] = [rid(), rid()];
    await before.model('ClientCredentials').upsert(opaque, { jti: opaque, kind: 'ClientCredentials', clientId: 'c' }, 600);
    await before.model('ClientCredentials').upsert(doomed, { jti: doomed, kind: 'ClientCredentials', clientId: 'c' }, 600);
    expect(await after.model('ClientCredentials').find(opaque)).toBeUndefined();
    expect(await rotating.model('ClientCredentials').find(opaque)).toMatchObject({ jti: opaque, clientId: 'c' });
    await rotating.model('ClientCredentials').destroy(doomed);
    expect(await before.model('ClientCredentials').find(doomed)).toBeUndefined();

    for (let round = 0; round < 3; round += 1) {
      const token = rid();
      await before.model('RefreshToken').upsert(token, { jti: token, kind: 'RefreshToken', grantId: `g-${token}` }, 600);
      const successors = Array.from({ length: 50 }, () => rid());
      const results = await Promise.all(successors.map((s) => rotating.model('RefreshToken').rotate(token, s, { jti: s, kind: 'RefreshToken', grantId: `g-${token}` }, 600, true)));
      expect(results.filter(Boolean)).toHaveLength(1);
      const winner = successors[results.indexOf(true)]!;
      // The successor is stored under the new KEK's key only, and comes back from the old token's consumption mark.
      expect(await after.model('RefreshToken').find(winner)).toMatchObject({ jti: winner });
      expect(await before.model('RefreshToken').find(winner)).toBeUndefined();
      expect(await rotating.model('RefreshToken').consumption(token)).toEqual({ at: expect.any(Number), successor: winner });
      expect(await rotating.model('RefreshToken').consume(token)).toBe(false); // used once
    }
  });

  test('sealed device codes: found by user code with their jti back, under the stored key only; a sealed value moved to another record, or one sealed under another KEK, is not handed out', async () => {
    const kek = randomBytes(32);
    const sealed = sealCredentialIds(storage, kek, { acceptUnsealed: false }).model('DeviceCode');
    const [code, other] = [rid(), rid()];
    const userCode = `UC-${code}`;
    await sealed.upsert(code, { jti: code, kind: 'DeviceCode', userCode, grantId: `g-${code}` }, 60);
    expect(await storage.model('DeviceCode').find(code)).toBeUndefined(); // not stored under the code itself
    expect(await sealed.findByUserCode(userCode)).toEqual({ jti: code, kind: 'DeviceCode', userCode, grantId: `g-${code}` });
    expect(await sealed.findByUserCode(`${userCode}-nope`)).toBeUndefined();
    // The same sealed value copied into another record with another user code: bound to the first user code.
    const raw = await storage.model('DeviceCode').findByUserCode(userCode);
    await storage.model('DeviceCode').upsert(`h1.${other}`, { ...raw, userCode: `UC-${other}` }, 60);
    expect(await sealed.findByUserCode(`UC-${other}`)).toBeUndefined();
    // Another KEK cannot unseal it.
    expect(await sealCredentialIds(storage, randomBytes(32), { acceptUnsealed: false }).model('DeviceCode').findByUserCode(userCode)).toBeUndefined();
    // Once consumed and destroyed, it is gone by either lookup.
    await sealed.destroy(code);
    expect(await sealed.findByUserCode(userCode)).toBeUndefined();
    // A device code stored before ids were sealed is found while unsealed ids are accepted, and not after.
    const legacy = rid();
    await storage.model('DeviceCode').upsert(legacy, { jti: legacy, kind: 'DeviceCode', userCode: `UC-${legacy}` }, 60);
    expect((await sealCredentialIds(storage, kek, { acceptUnsealed: true }).model('DeviceCode').findByUserCode(`UC-${legacy}`))?.jti).toBe(legacy);
    expect(await sealed.findByUserCode(`UC-${legacy}`)).toBeUndefined();
  });

  test('consume of a missing record fails', async () => {
    expect(await storage.model('RefreshToken').consume(rid())).toBe(false);
  });

  test('objects, arrays and $-prefixed strings never reach the driver', async () => {
    const store = storage.model('AccessToken');
    commands.length = 0;
    for (const bad of HOSTILE) {
      expect(await store.find(bad as string)).toBeUndefined();
      expect(await store.findByUid(bad as string)).toBeUndefined();
      expect(await store.findByUserCode(bad as string)).toBeUndefined();
      expect(await store.consume(bad as string)).toBe(false);
      await store.destroy(bad as string);
      await store.revokeByGrantId(bad as string);
      await store.revokeByClientId(bad as string);
      expect((await store.idsByAccount(bad as string, undefined, 10)).ids).toEqual([]);
      await expect(store.insertOnce(bad as string, { kind: 'AccessToken' }, 60)).rejects.toBeInstanceOf(InvalidStorageValueError);
      expect(await storage.revokedTokens.isRevoked(bad as string)).toBe(false);
      expect(await storage.nonces.consume(bad as string)).toBe(false);
      await expect(store.upsert(bad as string, { kind: 'AccessToken' }, 60)).rejects.toBeInstanceOf(InvalidStorageValueError);
    }
    await expect(store.upsert(rid(), { kind: 'AccessToken', grantId: { $gt: '' } as unknown as string }, 60)).rejects.toBeInstanceOf(
      InvalidStorageValueError,
    );
    await expect(store.upsert(rid(), { kind: 'Session', uid: '$x' }, 60)).rejects.toBeInstanceOf(InvalidStorageValueError);
    if (storage instanceof MongoStorage) {
      expect(commands.map((c) => c.commandName)).toEqual([]);
    }
  });

  test('signing keys: insert, list in order, and a taken seq is refused', async () => {
    const key = (kid: string, seq: number): StoredKey => ({
      kid,
      seq,
      alg: 'ES256',
      state: 'active',
      createdAt: new Date().toISOString(),
      publicJwk: { kty: 'EC', kid },
      sealed: { kekId: 'k', iv: 'i', ciphertext: 'c', tag: 't' },
    });
    expect(await storage.keys.list()).toEqual([]);
    expect(await storage.keys.insert(key('two', 2))).toBe(true);
    expect(await storage.keys.insert(key('one', 1))).toBe(true);
    expect(await storage.keys.insert(key('other-one', 1))).toBe(false);
    expect((await storage.keys.list()).map((k) => k.kid)).toEqual(['one', 'two']);
  });

  test('signing keys: concurrent inserts of one seq give exactly one winner', async () => {
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        storage.keys.insert({
          kid: `race-${i}`,
          seq: 100,
          alg: 'ES256',
          state: 'active',
          createdAt: new Date().toISOString(),
          publicJwk: {},
          sealed: { kekId: 'k', iv: 'i', ciphertext: 'c', tag: 't' },
        }),
      ),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
  });

  test('key transitions: recorded once per (kid, type), listed back', async () => {
    const t = { kid: 'k1', type: 'activate' as const, at: new Date().toISOString(), recordedAt: new Date().toISOString() };
    expect(await storage.keys.addTransition(t)).toBe(true);
    expect(await storage.keys.addTransition({ ...t, at: new Date(0).toISOString() })).toBe(false);
    expect(await storage.keys.addTransition({ ...t, type: 'retire' })).toBe(true);
    const all = await storage.keys.transitions();
    expect(all.filter((x) => x.kid === 'k1').map((x) => [x.type, x.at]).sort()).toEqual([['activate', t.at], ['retire', t.at]].sort());
  });

  test('audit records: consecutive seqs only, a taken seq stops the batch, concurrent writers never share a seq', async () => {
    const rec = (seq: number, writer: string) => ({
      seq, time: new Date().toISOString(), type: 'test', details: { writer, 'https://x.example': 1 }, prev_hash: 'p', hash: `${writer}-${seq}`,
    });
    expect(await storage.audit.head()).toBeUndefined();
    expect(await storage.audit.insertBatch([rec(1, 'a'), rec(2, 'a')])).toBe(2);
    expect(await storage.audit.insertBatch([rec(2, 'b'), rec(3, 'b')])).toBe(0);
    const racers = await Promise.all(['c', 'd', 'e', 'f'].map((w) => storage.audit.insertBatch([rec(3, w), rec(4, w)])));
    expect(racers.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
    const all = await storage.audit.list(1, 100);
    expect(all.map((r) => r.seq)).toEqual(Array.from({ length: all.length }, (_, i) => i + 1));
    expect(all[0]?.details).toEqual({ writer: 'a', 'https://x.example': 1 });
    expect((await storage.audit.head())?.seq).toBe(all.length);
    expect((await storage.audit.list(2, 1)).map((r) => r.seq)).toEqual([2]);
  });

  test('init is idempotent: a second start changes no index', async () => {
    const again = factory.create('idempotent');
    try {
      await again.init();
      const snapshot = async () => {
        if (again instanceof SqliteStorage) {
          // A second store on the same file runs the schema creation again, as a restart (or a second process) does.
          const other = new SqliteStorage({ dataDir: again.dataDir });
          await other.init();
          await other.close();
          return again.db.prepare('SELECT type, name, sql FROM sqlite_schema ORDER BY name').all();
        }
        if (!(again instanceof MongoStorage)) return 'embedded';
        const names = (await again.db.listCollections().toArray()).map((c) => c.name).sort();
        return Promise.all(names.map(async (n) => [n, await again.db.collection(n).indexes()]));
      };
      const before = await snapshot();
      await again.init();
      expect(await snapshot()).toEqual(before);
      if (again instanceof MongoStorage) expect(JSON.stringify(before)).toContain('expiresAt_1');
      if (again instanceof SqliteStorage) expect(JSON.stringify(before)).toContain('oidc_records_expires_at');
    } finally {
      await again.close();
    }
  });
});
