import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { jest } from '@jest/globals';

import { EmbeddedStorage } from '../../adapters/memory.js';
import { ClientAdmin } from '../../server/admin/client-admin.js';
import { revokedBeforeOf, revokedByDisable } from '../../server/admin/client-fields.js';
import { REVOKED_BEFORE_FIELD } from '../../server/admin/disabled-clients.js';
import { ClientSecretHasher } from '../../server/client-secrets.js';
import {
  MARK_TTL_SECONDS, MAX_LINEAGE, RevocationMarks, childLineage, clientGeneration, clientMark, grantMark, lineageActive, lineageOf, tokenMark,
} from '../../server/revocation-lineage.js';

describe('revocation lineage (cascade revocation of exchanged tokens)', () => {
  test('marks are per kind, hashed (no token value in them) and fixed in size', () => {
    const jti = 'an-opaque-access-token-value-that-is-its-jti';
    expect(tokenMark(jti)).toMatch(/^t:[A-Za-z0-9_-]{22}$/);
    expect(tokenMark(jti)).not.toContain(jti.slice(0, 8));
    expect(grantMark(jti)).not.toBe(tokenMark(jti).replace(/^t/, 'g'));
    expect(clientMark('c1', 0)).not.toBe(clientMark('c1', 1700000000));
    expect(clientMark('c1', 0)).toBe(clientMark('c1', 0));
  });

  test('a child carries its parent lineage, then the parent token, grant (if any) and client generation', () => {
    const root = childLineage({ lineage: [], jti: 'j0', clientId: 'agent', clientGeneration: 0 });
    expect(root).toEqual([tokenMark('j0'), clientMark('agent', 0)]);
    const next = childLineage({ lineage: root, jti: 'j1', grantId: 'g1', clientId: 'skill-a', clientGeneration: 5 });
    expect(next).toEqual([...root, tokenMark('j1'), grantMark('g1'), clientMark('skill-a', 5)]);
  });

  test('lineageOf: absent means none; anything but a bounded array of marks is malformed', () => {
    expect(lineageOf(undefined)).toEqual([]);
    expect(lineageOf([tokenMark('x')])).toEqual([tokenMark('x')]);
    for (const bad of ['t:abc', [1], ['t:short'], [`x:${'a'.repeat(22)}`], { 0: tokenMark('x') }, null, Array.from({ length: MAX_LINEAGE + 1 }, (_, i) => tokenMark(String(i)))]) {
      expect(lineageOf(bad)).toBeUndefined();
    }
  });

  test('clientGeneration is the last disable time, 0 when never disabled or malformed', () => {
    expect(clientGeneration(undefined)).toBe(0);
    expect(clientGeneration({})).toBe(0);
    expect(clientGeneration({ [REVOKED_BEFORE_FIELD]: 1700000000 })).toBe(1700000000);
    expect(clientGeneration({ [REVOKED_BEFORE_FIELD]: '1700000000' })).toBe(0);
  });

  test('revokedByDisable: a token dated up to the disable second (included) is revoked, one dated after it is not; no iat counts as 0', () => {
    const client = { [REVOKED_BEFORE_FIELD]: 1_700_000_000 };
    expect(revokedBeforeOf(client)).toBe(1_700_000_000);
    expect(revokedByDisable(1_699_999_999, revokedBeforeOf(client))).toBe(true);
    expect(revokedByDisable(1_700_000_000, revokedBeforeOf(client))).toBe(true);
    expect(revokedByDisable(1_700_000_001, revokedBeforeOf(client))).toBe(false);
    expect(revokedByDisable(undefined, revokedBeforeOf(client))).toBe(true);
    expect(revokedByDisable('1700000001', revokedBeforeOf(client))).toBe(true);
    // Never disabled, or a field that is not a number: nothing is revoked by a disable.
    expect(revokedBeforeOf({})).toBeUndefined();
    expect(revokedBeforeOf(undefined)).toBeUndefined();
    expect(revokedBeforeOf({ [REVOKED_BEFORE_FIELD]: '1700000000' })).toBeUndefined();
    expect(revokedByDisable(0, undefined)).toBe(false);
  });

  test('a written mark makes every lineage holding it inactive, and only those; marks live MARK_TTL_SECONDS', async () => {
    const storage = new EmbeddedStorage({ dataDir: mkdtempSync(join(tmpdir(), 'agentauth-lineage-')) });
    const now = Math.floor(Date.now() / 1000) * 1000;
    const revoke = jest.fn(storage.revokedTokens.revoke.bind(storage.revokedTokens));
    const marks = new RevocationMarks({ revoke }, () => now);
    const lineage = childLineage({ lineage: [], jti: 'j0', grantId: 'g0', clientId: 'agent', clientGeneration: 0 });
    const other = childLineage({ lineage: [], jti: 'j9', clientId: 'agent', clientGeneration: 7 });
    expect(await lineageActive(storage.revokedTokens, [])).toBe(true);
    expect(await lineageActive(storage.revokedTokens, lineage)).toBe(true);
    await marks.grant('g0');
    expect(revoke).toHaveBeenLastCalledWith(grantMark('g0'), now / 1000 + MARK_TTL_SECONDS);
    expect(await lineageActive(storage.revokedTokens, lineage)).toBe(false);
    expect(await lineageActive(storage.revokedTokens, other)).toBe(true);
    // The client's generation 0 is marked; a client disabled since (generation 7) is another generation.
    await marks.client('agent', {});
    expect(await lineageActive(storage.revokedTokens, other)).toBe(true);
    await marks.client('agent', { [REVOKED_BEFORE_FIELD]: 7 });
    expect(await lineageActive(storage.revokedTokens, other)).toBe(false);
    await storage.close();
  });
});

describe('a client disabled twice within one second (agentauth clients disable, enable, disable, enable)', () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  /** After disable, enable, disable, enable (the second disable `later` ms after the first): is a token exchanged from the client's new tokens active? */
  async function exchangedAfterReEnable(laterMs: number): Promise<{ active: boolean; generations: number[] }> {
    // Only the clock is pinned (to the middle of one second); timers run as usual.
    jest.useFakeTimers({ now: new Date('2031-05-05T10:00:00.400Z'), doNotFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'nextTick', 'queueMicrotask', 'hrtime', 'performance'] });
    const storage = new EmbeddedStorage({ dataDir: mkdtempSync(join(tmpdir(), 'agentauth-generation-')) });
    await storage.init();
    try {
      const clients = storage.model('Client');
      await clients.upsert('agent-1', { client_id: 'agent-1', token_endpoint_auth_method: 'none', grant_types: ['client_credentials'] });
      // An enable waits for the disable's second to pass (ClientAdmin.enable): here that moves the pinned clock.
      const admin = new ClientAdmin({ storage, hasher: new ClientSecretHasher(randomBytes(32)), staticClients: [], audit: async () => undefined, wait: async (ms) => void jest.setSystemTime(Date.now() + ms) });
      const generations: number[] = [];
      for (const at of [0, laterMs]) {
        // Never back in time: the first enable already waited into the next second.
        jest.setSystemTime(new Date(Math.max(Date.now(), Date.parse('2031-05-05T10:00:00.400Z') + at)));
        const before = clientGeneration(await clients.find('agent-1'));
        // A token exchanged from one of the client's tokens of this generation, before it is disabled: revoked by it.
        const old = childLineage({ lineage: [], jti: `before-${at}`, clientId: 'agent-1', clientGeneration: before });
        await admin.disable('agent-1', { kind: 'cli' });
        await admin.enable('agent-1', { kind: 'cli' });
        expect(await lineageActive(storage.revokedTokens, old)).toBe(false);
        generations.push(clientGeneration(await clients.find('agent-1')));
      }
      // The token-exchange grant gives a token exchanged after the enable the client's generation as it is now.
      const child = childLineage({ lineage: [], jti: 'after', clientId: 'agent-1', clientGeneration: generations.at(-1)! });
      return { active: await lineageActive(storage.revokedTokens, child), generations };
    } finally {
      await storage.close();
    }
  }

  test('a second later: each disable is its own generation, and what is exchanged after the last enable is active', async () => {
    const t = Date.parse('2031-05-05T10:00:00Z') / 1000;
    expect(await exchangedAfterReEnable(1000)).toEqual({ active: true, generations: [t, t + 1] });
  });

  test('asked for in the same second: the second disable still starts a new generation (the next second, which the enable waited for), so what is exchanged after the last enable is not born revoked', async () => {
    const t = Date.parse('2031-05-05T10:00:00Z') / 1000;
    expect(await exchangedAfterReEnable(100)).toEqual({ active: true, generations: [t, t + 1] });
  });
});

describe('an enable right after a disable (ClientAdmin.enable)', () => {
  afterEach(() => {
    jest.useRealTimers();
  });

  async function withAdmin(fn: (admin: ClientAdmin, clients: ReturnType<EmbeddedStorage['model']>, waits: number[]) => Promise<void>): Promise<void> {
    jest.useFakeTimers({ now: new Date('2031-05-05T10:00:00.400Z'), doNotFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'nextTick', 'queueMicrotask', 'hrtime', 'performance'] });
    const storage = new EmbeddedStorage({ dataDir: mkdtempSync(join(tmpdir(), 'agentauth-enable-')) });
    await storage.init();
    const waits: number[] = [];
    try {
      const clients = storage.model('Client');
      await clients.upsert('agent-1', { client_id: 'agent-1', token_endpoint_auth_method: 'none', grant_types: ['client_credentials'] });
      const admin = new ClientAdmin({
        storage, hasher: new ClientSecretHasher(randomBytes(32)), staticClients: [], audit: async () => undefined,
        wait: async (ms) => void (waits.push(ms), jest.setSystemTime(Date.now() + ms)),
      });
      await fn(admin, clients, waits);
    } finally {
      await storage.close();
    }
  }

  test('waits for the next second, so that a token issued once it is enabled is not dated in the revoked second', async () => {
    await withAdmin(async (admin, clients, waits) => {
      await admin.disable('agent-1', { kind: 'cli' });
      const revokedBefore = (await clients.find('agent-1'))![REVOKED_BEFORE_FIELD] as number;
      expect(revokedBefore).toBe(Date.parse('2031-05-05T10:00:00Z') / 1000);
      expect((await admin.enable('agent-1', { kind: 'cli' })).disabled).toBe(false);
      // Without the wait the client was enabled at .400 of the revoked second: a token issued then (iat is the second)
      // was answered and inactive from its first use.
      // To .250 of the next second: past the revoked second by a margin for instances whose clock is behind this one's.
      expect(waits).toEqual([850]);
      expect(Math.floor((Date.now() - 250) / 1000)).toBeGreaterThan(revokedBefore);
      // Enabled already: nothing to wait for.
      expect((await admin.enable('agent-1', { kind: 'cli' })).disabled).toBe(false);
      expect(waits).toEqual([850]);
    });
  });

  test('a revoked second further away than the limit (clocks of two hosts apart): 409 with the time it can be enabled, no wait, still disabled', async () => {
    await withAdmin(async (admin, clients, waits) => {
      await admin.disable('agent-1', { kind: 'cli' });
      const ahead = Math.floor(Date.now() / 1000) + 60;
      await clients.upsert('agent-1', { ...(await clients.find('agent-1'))!, [REVOKED_BEFORE_FIELD]: ahead });
      await expect(admin.enable('agent-1', { kind: 'cli' })).rejects.toMatchObject({ status: 409, code: 'conflict', message: expect.stringContaining(`cannot be enabled before ${new Date((ahead + 1) * 1000 + 250).toISOString()}`) });
      expect(waits).toEqual([]);
      expect((await admin.show('agent-1')).disabled).toBe(true);
    });
  });
});
