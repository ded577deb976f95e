import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

import introspection from 'oidc-provider/lib/actions/introspection.js';
import revocation from 'oidc-provider/lib/actions/revocation.js';
import * as grants from 'oidc-provider/lib/helpers/grants.js';
import initializeKeystore from 'oidc-provider/lib/helpers/initialize_keystore.js';

/**
 * agentauth patches or calls these internals of oidc-provider (server/structured-tokens.ts, server/key-watcher.ts,
 * server/grants/wallet-signature.ts). They are not public API: this test fails on any upgrade, so whoever upgrades
 * re-checks each use before changing the pinned version in package.json.
 */
describe('oidc-provider internals agentauth relies on', () => {
  test('the installed version is exactly the pinned one', () => {
    const require = createRequire(import.meta.url);
    const pkg = JSON.parse(readFileSync(join(dirname(require.resolve('oidc-provider')), '..', 'package.json'), 'utf8')) as { version: string };
    const ours = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(ours.dependencies['oidc-provider']).toBe('9.13.3');
    expect(pkg.version).toBe('9.13.3');
  });

  test('the introspection and revocation pipelines still have the steps that are replaced', () => {
    const names = (list: Array<{ name: string }>) => list.map((h) => h.name);
    // After patching (a Provider was built in this process or not), the replaced steps keep their names.
    expect(names(introspection)).toEqual(expect.arrayContaining(['renderTokenResponse']));
    expect(names(introspection).some((n) => n === 'rejectStructuredTokens' || n === 'acceptStructuredTokens')).toBe(true);
    expect(names(revocation)).toEqual(expect.arrayContaining(['revokeToken']));
    expect(names(revocation).some((n) => n === 'rejectStructuredTokens' || n === 'acceptStructuredTokens')).toBe(true);
  });

  test('the grant helpers and the keystore initialiser have the shapes called', () => {
    for (const fn of ['validateDpop', 'checkDpopRequired', 'checkDpopReplay', 'resolveRequestedResources', 'validateClientScope', 'applyRefreshTokenBindings', 'buildTokenResponse'] as const) {
      expect(typeof grants[fn]).toBe('function');
    }
    expect(grants.validateDpop.length).toBeGreaterThanOrEqual(2);
    expect(grants.buildTokenResponse.length).toBe(1);
    expect(typeof initializeKeystore).toBe('function');
    expect(initializeKeystore.length).toBe(1);
  });
});
