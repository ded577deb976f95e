import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';

import { EmbeddedStorage } from '../../adapters/memory.js';
import type { AdapterPayload } from '../../adapters/types.js';
import { ClientAdmin } from '../../server/admin/client-admin.js';
import { REVISION_FIELD } from '../../server/admin/client-writes.js';
import { ClientSecretHasher } from '../../server/client-secrets.js';
import { loadConfig } from '../../server/config.js';
import { scratchProvider } from '../../server/scratch-provider.js';
import { freePort } from '../support/ferretdb.js';
import { tempDir, writeConfig } from '../support/server.js';

/**
 * An RFC 7592 update is built by oidc-provider from the client it read when the request began, and written later.
 * Here the update is held, deterministically, between that read and its write (at its claim of the record,
 * server/admin/client-writes.ts) while the operator rotates the client's secret: the update must not put the old
 * secret back. The provider is agentauth's own (server/scratch-provider.ts, as `start` assembles it), served in this
 * process on the in-memory store, so the store can be held at the right moment.
 */
describe('an RFC 7592 update that read the client before a rotate-secret, written after it', () => {
  let server: Server;
  let issuer: string;
  let storage: EmbeddedStorage;
  /** Set to hold the next claim of a client record; resolved by the test to let it go on. */
  let hold: { reached: () => void; release: Promise<void> } | undefined;

  beforeAll(async () => {
    const port = await freePort();
    issuer = `http://127.0.0.1:${port}`;
    const dataDir = tempDir('agentauth-update-race-');
    const config = loadConfig({
      ISSUER: issuer,
      AGENTAUTH_DATA_DIR: dataDir,
      AGENTAUTH_STORE: 'memory',
      AGENTAUTH_CONFIG: writeConfig(tempDir(), { resourceServers: [{ identifier: 'https://api.example.com', scopes: ['read'] }] }),
    });
    storage = new EmbeddedStorage({ dataDir });
    await storage.init();
    const takeAttempt = storage.nonces.takeAttempt.bind(storage.nonces);
    storage.nonces.takeAttempt = async (key: string, limit: number, ttl: number) => {
      const held = key.startsWith('client-rev:') ? hold : undefined;
      if (held) {
        hold = undefined;
        held.reached();
        await held.release;
      }
      return takeAttempt(key, limit, ttl);
    };
    const provider = await scratchProvider(config, storage);
    server = createServer(provider.callback());
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    await storage?.close();
  });

  const metadata = (method: string, name: string) => ({ redirect_uris: ['https://client.example.com/cb'], token_endpoint_auth_method: method, scope: 'read', client_name: name });
  const admin = () => new ClientAdmin({ storage, hasher: new ClientSecretHasher(randomBytes(32)), staticClients: [], audit: async () => undefined });

  /** Registers a client with `method`, named "before". */
  async function registerClient(method: string): Promise<Record<string, string>> {
    const registered = await fetch(`${issuer}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(metadata(method, 'before')) });
    expect(registered.status).toBe(201);
    return (await registered.json()) as Record<string, string>;
  }

  /**
   * Sends the client's RFC 7592 update (renaming it "after") and resolves once it has read the client and reached its
   * claim of the record, where it is held: `release` lets it go on, `response` is its answer.
   */
  async function heldUpdate(reg: Record<string, string>, method: string): Promise<{ release: () => void; response: Promise<Response> }> {
    let reached!: () => void;
    const atClaim = new Promise<void>((resolve) => (reached = resolve));
    let release!: () => void;
    hold = { reached, release: new Promise<void>((resolve) => (release = resolve)) };
    const response = fetch(reg.registration_client_uri!, {
      method: 'PUT',
      headers: { authorization: `Bearer ${reg.registration_access_token!}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: reg.client_id!, ...metadata(method, 'after') }),
    });
    await atClaim;
    return { release, response };
  }

  test('the rotated secret stays; the update\'s own change is written too; the record\'s revision is never shown', async () => {
    const reg = await registerClient('client_secret_basic');
    const clientId = reg.client_id!;
    const stored = async () => (await storage.model('Client').find(clientId)) as AdapterPayload;
    const original = (await stored()).client_secret;
    const update = await heldUpdate(reg, 'client_secret_basic'); // it has read the client and is about to claim it

    const rotated = await admin().rotateSecret(clientId, { kind: 'cli' });
    const rotatedHash = (await stored()).client_secret;
    expect(rotatedHash).not.toBe(original);
    expect(rotated.client.client_id).toBe(clientId);

    update.release();
    const res = await update.response;
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body.client_name).toBe('after');
    expect(body).not.toHaveProperty(REVISION_FIELD);
    expect(await stored()).toMatchObject({ client_name: 'after', client_secret: rotatedHash });

    // The RFC 7592 read shows no revision either.
    const read = await fetch(reg.registration_client_uri!, { headers: { authorization: `Bearer ${body.registration_access_token as string}` } });
    expect(read.status).toBe(200);
    const shown = (await read.json()) as Record<string, unknown>;
    expect(shown).not.toHaveProperty(REVISION_FIELD);
    expect(shown.client_name).toBe('after');
  });

  test('a disable made between the update\'s read and its write stays: the client is disabled after the update', async () => {
    const reg = await registerClient('none');
    const clientId = reg.client_id!;
    const update = await heldUpdate(reg, 'none');
    expect((await admin().disable(clientId, { kind: 'cli' })).disabled).toBe(true);
    update.release();
    expect((await update.response).status).toBe(200);
    expect(await storage.model('Client').find(clientId)).toMatchObject({ client_name: 'after', agentauth_disabled: true });
    expect((await admin().show(clientId)).disabled).toBe(true);
  });

  test('an update that waits too long for another change (one that stopped halfway) answers 503 and keeps its registration access token', async () => {
    const reg = await registerClient('client_secret_basic');
    // An operator's change that claims the record and never gets further (its audit record never written).
    const stuck = new ClientAdmin({ storage, hasher: new ClientSecretHasher(randomBytes(32)), staticClients: [], audit: () => new Promise(() => undefined) });
    void stuck.rotateSecret(reg.client_id!, { kind: 'cli' });
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    const res = await fetch(reg.registration_client_uri!, {
      method: 'PUT',
      headers: { authorization: `Bearer ${reg.registration_access_token!}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: reg.client_id!, ...metadata('client_secret_basic', 'after') }),
    });
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: 'temporarily_unavailable', error_description: expect.stringMatching(/^another change of client \S+ is in progress/) });
    expect(Date.now() - started).toBeGreaterThanOrEqual(4_900);
    expect((await storage.model('Client').find(reg.client_id!))?.client_name).toBe('before');
    // The token was not used up: a read with it succeeds.
    const read = await fetch(reg.registration_client_uri!, { headers: { authorization: `Bearer ${reg.registration_access_token!}` } });
    expect(read.status).toBe(200);
  }, 20_000);

  test('a delete made between the update\'s read and its write stays: the update is refused, the client is not recreated', async () => {
    const reg = await registerClient('none');
    const clientId = reg.client_id!;
    const update = await heldUpdate(reg, 'none');
    await admin().delete(clientId, { kind: 'cli' });
    update.release();
    const res = await update.response;
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: 'invalid_token', error_description: 'the client was deleted while this request was being answered' });
    expect(await storage.model('Client').find(clientId)).toBeUndefined();
  });
});
