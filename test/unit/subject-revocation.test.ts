import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { EmbeddedStorage } from '../../adapters/memory.js';
import type { ModelStore, Storage } from '../../adapters/types.js';
import { LOOKBACK_MS, revokeSubject, revokedWhileServed } from '../../server/subject-revocation.js';
import { tempDir } from '../support/server.js';

const SUB = 'did:pkh:eip155:1:0x0000000000000000000000000000000000000001';

async function storageWithGrants(ids: string[]): Promise<EmbeddedStorage> {
  const storage = new EmbeddedStorage({ dataDir: tempDir('agentauth-subject-') });
  await storage.init();
  for (const id of ids) await storage.model('Grant').upsert(id, { kind: 'Grant', accountId: SUB, clientId: 'c' }, 600);
  return storage;
}

/**
 * `storage` as revokeSubject sees it, with each listing of grants going through `listing` (given the listing's number,
 * from 1, and the real listing to call), and `revokedTokens` replaced where given.
 */
function withGrantListing(
  storage: EmbeddedStorage,
  listing: (n: number, list: () => ReturnType<ModelStore['idsByAccount']>) => ReturnType<ModelStore['idsByAccount']>,
  revokedTokens: Storage['revokedTokens'] = storage.revokedTokens,
): Pick<Storage, 'model' | 'revokedTokens'> {
  const grants = storage.model('Grant');
  let n = 0;
  return {
    revokedTokens,
    model: (name) => (name !== 'Grant' ? storage.model(name) : ({
      ...grants,
      idsByAccount: async (...args: Parameters<ModelStore['idsByAccount']>) => listing((n += 1), () => grants.idsByAccount(...args)),
      revokeByGrantId: grants.revokeByGrantId.bind(grants),
      destroy: grants.destroy.bind(grants),
    } as ModelStore)),
  };
}

describe('revoking a person while requests store grants for them', () => {
  test('grants stored while the revocation runs are found by listing again, until a listing finds none', async () => {
    const storage = await storageWithGrants(['g1']);
    // A request in flight stores a grant just after each of the first two listings read.
    const grants = storage.model('Grant');
    const racing = withGrantListing(storage, async (listing, list) => {
      const page = await list();
      if (listing <= 2) await grants.upsert(`late${listing}`, { kind: 'Grant', accountId: SUB, clientId: 'c' }, 600);
      return page;
    });
    const result = await revokeSubject(racing, SUB, async () => undefined);
    expect(result?.grants.sort()).toEqual(['g1', 'late1', 'late2']);
    expect((await grants.idsByAccount(SUB, undefined, 10)).ids).toEqual([]);
    await storage.close();
  });

  test('a grant stored after the last listing, by a request received before it, finds the mark; one received later does not', async () => {
    const storage = await storageWithGrants(['g1']);
    let clock = Date.now();
    const now = () => clock;
    await revokeSubject(storage, SUB, async () => undefined, now);
    // Received 5 s before the revocation, stored 50 ms after it: refused.
    clock += 50;
    expect(await revokedWhileServed(storage.revokedTokens, SUB, clock - 5_050, now)).toBe(true);
    // Received 90 s before (more than one lookup of slots back): refused.
    expect(await revokedWhileServed(storage.revokedTokens, SUB, clock - 90_000, now)).toBe(true);
    // Another person: not.
    expect(await revokedWhileServed(storage.revokedTokens, `${SUB.slice(0, -1)}2`, clock - 5_050, now)).toBe(false);
    // Received a second after the revocation: a grant of its own.
    clock += 1_000;
    expect(await revokedWhileServed(storage.revokedTokens, SUB, clock - 10, now)).toBe(false);
    await storage.close();
  });

  test('a listing that finds nothing but ends more than a slot after its mark is followed by a fresh mark and listing', async () => {
    const storage = await storageWithGrants(['g1']);
    let clock = Date.now();
    const now = () => clock;
    const markSlots: number[] = [];
    let listings = 0;
    const marking = { ...storage.revokedTokens, revoke: async (id: string, exp: number) => { if (id.startsWith('s:')) markSlots.push(Math.floor(clock / 100)); await storage.revokedTokens.revoke(id, exp); } } as Storage['revokedTokens'];
    // The first three listings take 150 ms each (more than a slot); later ones 20 ms.
    const slow = withGrantListing(storage, (listing, list) => {
      listings = listing;
      clock += listing <= 3 ? 150 : 20;
      return list();
    }, marking);
    const result = await revokeSubject(slow, SUB, async () => undefined, now);
    expect(result?.grants).toEqual(['g1']);
    // The first listing found g1; the second and third found nothing but were slow; the fourth was quick: it ends.
    expect(listings).toBe(4);
    // Its subject marks: one before each listing.
    expect(markSlots).toHaveLength(4);
    // A request that arrived while the third listing ran (after the second mark's slot) and stored after it read finds
    // the third mark, written before the fourth listing.
    expect(await revokedWhileServed(storage.revokedTokens, SUB, clock - 30, now)).toBe(true);
    await storage.close();
  });

  test('a request whose body trickled in for as long as the HTTP server allows still finds a revocation made when it arrived', async () => {
    // Node ends a request not received in full after requestTimeout, checked every connectionsCheckingInterval;
    // agentauth keeps both defaults (start.ts sets neither).
    const defaults = createServer() as ReturnType<typeof createServer> & { connectionsCheckingInterval?: number };
    expect([typeof defaults.requestTimeout, typeof defaults.connectionsCheckingInterval]).toEqual(['number', 'number']);
    const longest = defaults.requestTimeout + defaults.connectionsCheckingInterval!;
    expect(longest + 10_000).toBeLessThanOrEqual(LOOKBACK_MS);
    expect(readFileSync(new URL('../../server/start.ts', import.meta.url), 'utf8')).not.toMatch(/requestTimeout|connectionsCheckingInterval/);
    const storage = await storageWithGrants(['g1']);
    let clock = Date.now();
    const now = () => clock;
    const arrived = clock;
    await revokeSubject(storage, SUB, async () => undefined, now);
    clock += longest;
    expect(await revokedWhileServed(storage.revokedTokens, SUB, arrived, now)).toBe(true);
    await storage.close();
  });

  test('a first listing that finds nothing but is slow is marked and made again: a sign-in that arrived during it and stored after it is found', async () => {
    const storage = await storageWithGrants([]);
    let clock = Date.now();
    const now = () => clock;
    const grants = storage.model('Grant');
    let arrivedDuringFirst = 0;
    // The first listing takes 250 ms; a sign-in arrives 200 ms into it and stores its grant just after it read.
    const slow = withGrantListing(storage, async (listing, list) => {
      if (listing > 1) {
        clock += 10;
        return list();
      }
      clock += 200;
      arrivedDuringFirst = clock;
      const page = await list();
      clock += 50;
      await grants.upsert('late', { kind: 'Grant', accountId: SUB, clientId: 'c' }, 600);
      return page;
    });
    const result = await revokeSubject(slow, SUB, async () => undefined, now);
    // The second listing (after a fresh mark) finds the late grant and revokes it.
    expect(result?.grants).toEqual(['late']);
    expect(arrivedDuringFirst).toBeGreaterThan(0);
    expect((await grants.idsByAccount(SUB, undefined, 10)).ids).toEqual([]);
    await storage.close();
  });

  test('nothing to revoke: no record, and a mark all the same, for a sign-in in flight that has stored nothing yet', async () => {
    const storage = await storageWithGrants([]);
    let recorded = 0;
    let clock = Date.now();
    const now = () => clock;
    expect(await revokeSubject(storage, SUB, async () => { recorded += 1; }, now)).toBeUndefined();
    expect(recorded).toBe(0);
    clock += 50;
    // Received before the revocation, its grant stored after the listing found nothing: refused.
    expect(await revokedWhileServed(storage.revokedTokens, SUB, clock - 1_000, now)).toBe(true);
    // Received a second later: not.
    clock += 1_000;
    expect(await revokedWhileServed(storage.revokedTokens, SUB, clock - 10, now)).toBe(false);
    await storage.close();
  });
});
