import type { AdapterPayload } from '../../adapters/types.js';
import { clientUpdateOnStored as onStored } from '../../server/admin/disabled-clients.js';

/** Client records as plain objects (AdapterPayload types some members more narrowly). */
const clientUpdateOnStored = (update: object, read: object | undefined, stored: object) => onStored(update as AdapterPayload, read as AdapterPayload | undefined, stored as AdapterPayload);

/**
 * An RFC 7592 update is built by oidc-provider from the record it read when the request began; it is written onto
 * the record as stored at the write (server/admin/client-writes.ts decides again on a newer one). What administration
 * changed between the two must survive it.
 */
describe('clientUpdateOnStored: an RFC 7592 update written onto the record as stored now', () => {
  const read = { client_id: 'c', client_name: 'old', client_secret: 'hmac-sha256:old', token_endpoint_auth_method: 'client_secret_basic' };
  const update = { client_id: 'c', client_name: 'new', client_secret: 'hmac-sha256:old', token_endpoint_auth_method: 'client_secret_basic' };

  test('a secret rotated by the operator after the update read the client is kept (the update did not touch it)', () => {
    const stored = { ...read, client_secret: 'hmac-sha256:rotated', agentauth_rev: 'r2' };
    expect(clientUpdateOnStored(update, read, stored)).toEqual({ ...update, client_secret: 'hmac-sha256:rotated' });
  });

  test('a disable made after the update read the client is kept, its fields and all', () => {
    const stored = { ...read, agentauth_disabled: true, agentauth_disabled_at: '2026-12-03T17:00:00.000Z', agentauth_tokens_revoked_before: 1_796_000_000 };
    expect(clientUpdateOnStored(update, read, stored)).toEqual({
      ...update, agentauth_disabled: true, agentauth_disabled_at: '2026-12-03T17:00:00.000Z', agentauth_tokens_revoked_before: 1_796_000_000,
    });
  });

  test('a secret the update itself generated (a move to a secret method) is the one written', () => {
    const fromNone = { client_id: 'c', token_endpoint_auth_method: 'none' };
    const moved = { client_id: 'c', token_endpoint_auth_method: 'client_secret_basic', client_secret: 'plain-new-secret' };
    expect(clientUpdateOnStored(moved, fromNone, { ...fromNone })).toEqual(moved);
    // A stored secret is taken only where the update kept the one it read.
    expect(clientUpdateOnStored(moved, read, { ...read, client_secret: 'hmac-sha256:rotated' })).toEqual(moved);
  });

  test('a move to a method without a secret stores none, whatever is stored, even where oidc-provider carries the old one over', () => {
    const toNone = { client_id: 'c', token_endpoint_auth_method: 'none' };
    expect(clientUpdateOnStored(toNone, read, { ...read, client_secret: 'hmac-sha256:rotated' })).toEqual(toNone);
    const carried = { ...toNone, client_secret: 'hmac-sha256:old', client_secret_expires_at: 0 };
    expect(clientUpdateOnStored(carried, read, { ...read })).toEqual(toNone);
    const toKeys = { client_id: 'c', token_endpoint_auth_method: 'private_key_jwt', client_secret: 'hmac-sha256:old' };
    expect(clientUpdateOnStored(toKeys, read, { ...read })).toEqual({ client_id: 'c', token_endpoint_auth_method: 'private_key_jwt' });
  });

  test('without the record the request read (never the case for an update), the update\'s own secret is written', () => {
    expect(clientUpdateOnStored(update, undefined, { ...read, client_secret: 'hmac-sha256:rotated' })).toEqual(update);
  });
});
