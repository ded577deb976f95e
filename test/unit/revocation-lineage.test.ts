import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { jest } from '@jest/globals';

import { EmbeddedStorage } from '../../adapters/memory.js';
import { REVOKED_BEFORE_FIELD } from '../../server/admin/disabled-clients.js';
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
