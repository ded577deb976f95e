import { Wallet } from 'ethers';
import { MongoClient } from 'mongodb';
import * as oidc from 'openid-client';

import { baseConfig, insecure, introspect, OPAQUE_RESOURCE, register, REDIRECT, RESOURCE, RS_CLIENT, startAgentServer } from '../support/agent-server.js';
import type { AgentServer } from '../support/agent-server.js';
import { runCli, startServer, tempDir, writeConfig } from '../support/server.js';
import type { RunningServer } from '../support/server.js';
import { mongoUri } from '../support/storages.js';
import { walletCode } from '../support/races.js';
import { sentBack } from '../support/sent-back.js';

const codeWallet = new Wallet('0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('dynamic client registration (RFC 7591) under agentauth policy', () => {
  let as: AgentServer;
  let issuer: string;
  let mongo: MongoClient;

  beforeAll(async () => {
    // This operator lets anonymous registrations use client_credentials, with two allowlisted scopes (the default is
    // no client_credentials at all: see 'default registration policy' below).
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 1000 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read', 'write'] } } }));
    issuer = as.server.url;
    mongo = await new MongoClient(mongoUri()).connect();
  });
  afterAll(async () => {
    await as?.server.stop();
    await mongo?.close();
  });

  const clientCount = () => mongo.db(as.dbName).collection('oidc_Client').countDocuments();
  const valid = { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };

  test.each([
    ['an unknown field', { ...valid, foo: 'bar' }, 'invalid_client_metadata', /^foo is not a supported client metadata field/],
    ['jwks_uri', { ...valid, jwks_uri: 'https://client.example.com/jwks' }, 'invalid_client_metadata', /^jwks_uri is not supported/],
    ['a self-chosen tier', { ...valid, agentauth_tier: 'strict' }, 'invalid_client_metadata', /^agentauth_tier is assigned by the authorization server/],
    ['software_statement', { ...valid, software_statement: 'eyJ...' }, 'unapproved_software_statement', /^software_statement is not supported: this server approves no software statements/],
    ['client_secret_jwt', { ...valid, token_endpoint_auth_method: 'client_secret_jwt' }, 'invalid_client_metadata', /^token_endpoint_auth_method must be one of none, private_key_jwt, client_secret_basic/],
    ['implicit', { ...valid, grant_types: ['implicit'] }, 'invalid_client_metadata', /^grant_types may only contain/],
    ['client_credentials for a public client', { ...valid, grant_types: ['client_credentials'], redirect_uris: [] }, 'invalid_client_metadata', /^grant_types client_credentials needs an authenticated client/],
    ['response_types token', { ...valid, response_types: ['token'] }, 'invalid_client_metadata', /^response_types/],
    ['an unknown scope', { ...valid, scope: 'read admin' }, 'invalid_client_metadata', /^scope contains 'admin'/],
    ['a non-boolean dpop_bound_access_tokens', { ...valid, dpop_bound_access_tokens: 'yes' }, 'invalid_client_metadata', /^dpop_bound_access_tokens must be a boolean/],
    ['an http redirect URI that is not loopback', { ...valid, redirect_uris: ['http://client.example.com/cb'] }, 'invalid_redirect_uri', /^redirect_uris must use https, or http on a loopback host \(127\.0\.0\.1, \[::1\], localhost\); got 'http:\/\/client\.example\.com\/cb'$/],
    ['a custom-scheme redirect URI', { ...valid, redirect_uris: ['com.example.app:/cb'] }, 'invalid_redirect_uri', /^redirect_uris must use https, or http on a loopback host .*; got 'com\.example\.app:\/cb'$/],
    ['a wildcard redirect URI', { ...valid, redirect_uris: ['https://*.example.com/cb'] }, 'invalid_redirect_uri', /wildcards/],
    ['a redirect URI with a fragment', { ...valid, redirect_uris: ['https://client.example.com/cb#x'] }, 'invalid_redirect_uri', /fragment/],
    ['no redirect URI for authorization_code', { ...valid, redirect_uris: [] }, 'invalid_redirect_uri', /required/],
    ['a self-chosen registration origin', { ...valid, agentauth_registration: 'operator' }, 'invalid_client_metadata', /^agentauth_registration is recorded by the authorization server/],
    ['client_credentials with a scope outside the anonymous allowlist', { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read files' }, 'invalid_client_metadata', /^scope contains 'files', which clients registered without an initial access token may not receive/],
    ['private_key_jwt with an empty key set', { grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [] } }, 'invalid_client_metadata', /^jwks must hold at least one key$/],
    ['private_key_jwt with a key of an unknown type', { grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ kty: 'XYZ' }] } }, 'invalid_client_metadata', /^jwks keys\[0\] must have kty EC, OKP or RSA$/],
    // oidc-provider's own check, before any policy: the body is not a metadata object at all.
    ['a JSON array instead of an object', [valid], 'invalid_request', /must be a JSON object/],
  ])('%s is refused with the RFC error naming the field, and registers nothing', async (_label, body, error, description) => {
    const before = await clientCount();
    const res = await register(issuer, body as Record<string, unknown>);
    expect(res.status).toBe(400);
    expect(res.body.error).toBe(error);
    expect(res.body.error_description).toMatch(description);
    expect(await clientCount()).toBe(before);
  });

  test('a body that is not JSON is invalid_request', async () => {
    const res = await fetch(`${issuer}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"redirect_uris": [' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request');
  });

  test('an object where an algorithm name goes is invalid_client_metadata at registration and update (it was a 500), and the update keeps its token', async () => {
    for (const field of ['id_token_signed_response_alg', 'token_endpoint_auth_signing_alg']) {
      const before = await clientCount();
      const res = await register(issuer, { ...valid, [field]: { toString: 1 } });
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_client_metadata');
      expect(res.body.error_description).toMatch(new RegExp(`^${field} must be one of `));
      expect(await clientCount()).toBe(before);
    }
    const created = await register(issuer, valid);
    const uri = created.body.registration_client_uri as string;
    const rat = created.body.registration_access_token as string;
    const put = await fetch(uri, { method: 'PUT', headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' }, body: JSON.stringify({ ...valid, client_id: created.body.client_id, id_token_signed_response_alg: { toString: 1 } }) });
    expect(put.status).toBe(400);
    expect(((await put.json()) as { error: string }).error).toBe('invalid_client_metadata');
    expect((await fetch(uri, { headers: { authorization: `Bearer ${rat}` } })).status).toBe(200);
  });

  test('software_id and software_version are registered and returned (RFC 7591 §3.2.1), by reads and updates too', async () => {
    const created = await register(issuer, { ...valid, software_id: '4NRB1-0XZABZI9E6-5SM3R', software_version: '2.1' });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ software_id: '4NRB1-0XZABZI9E6-5SM3R', software_version: '2.1' });
    const read = await fetch(created.body.registration_client_uri as string, { headers: { authorization: `Bearer ${created.body.registration_access_token as string}` } });
    const current = (await read.json()) as Record<string, unknown>;
    expect(current).toMatchObject({ software_id: '4NRB1-0XZABZI9E6-5SM3R', software_version: '2.1' });
    const { registration_access_token: rat, ...echo } = current;
    const put = await fetch(created.body.registration_client_uri as string, { method: 'PUT', headers: { authorization: `Bearer ${rat as string}`, 'content-type': 'application/json' }, body: JSON.stringify({ ...echo, software_version: '2.2' }) });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({ software_id: '4NRB1-0XZABZI9E6-5SM3R', software_version: '2.2' });
  });

  test('an update may send back the registration response itself (client_secret and client_secret_expires_at included); a changed client_secret_expires_at is refused by name', async () => {
    const created = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    expect(created.status).toBe(201);
    expect(created.body.client_secret_expires_at).toBe(0);
    const { registration_access_token: rat, ...registered } = created.body;
    const put = (body: Record<string, unknown>, token: string) =>
      fetch(created.body.registration_client_uri as string, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const changed = await put({ ...registered, client_secret_expires_at: 1 }, rat as string);
    expect(changed.status).toBe(400);
    expect(await changed.json()).toEqual({ error: 'invalid_client_metadata', error_description: 'client_secret_expires_at is assigned by the authorization server and cannot be changed by the client' });
    const echoed = await put({ ...registered, client_name: 'Renamed agent' }, rat as string);
    expect(echoed.status).toBe(200);
    expect(await echoed.json()).toMatchObject({ client_id: created.body.client_id, client_name: 'Renamed agent' });
  });

  test('HEAD on the configuration URI checks the registration access token without using it up (its successor could never arrive)', async () => {
    const created = await register(issuer, valid);
    const uri = created.body.registration_client_uri as string;
    const rat = created.body.registration_access_token as string;
    for (const path of [uri, uri.replace('/reg/', '/REG/')]) {
      const head = await fetch(path, { method: 'HEAD', headers: { authorization: `Bearer ${rat}` } });
      expect(head.status).toBe(200);
      expect(await head.text()).toBe('');
    }
    expect((await fetch(uri, { method: 'HEAD', headers: { authorization: 'Bearer not-the-token' } })).status).toBe(401);
    const read = await fetch(uri, { headers: { authorization: `Bearer ${rat}` } });
    expect(read.status).toBe(200);
    expect(((await read.json()) as Record<string, unknown>).registration_access_token).not.toBe(rat);
  });

  test('metadata sent without a Content-Type is refused as such (it was read as no metadata: "redirect_uris are required"), and so is a PUT', async () => {
    const before = await clientCount();
    const res = await fetch(`${issuer}/reg`, { method: 'POST', body: new Blob([JSON.stringify(valid)]) });
    expect(res.headers.get('content-type')).toMatch(/json/);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: 'invalid_request', error_description: 'send the client metadata as a JSON object with Content-Type: application/json (the request has no Content-Type or no body)' });
    expect(await clientCount()).toBe(before);
    const created = await register(issuer, valid);
    const put = await fetch(created.body.registration_client_uri as string, { method: 'PUT', headers: { authorization: `Bearer ${created.body.registration_access_token as string}` }, body: new Blob([JSON.stringify({ ...valid, client_id: created.body.client_id })]) });
    expect(put.status).toBe(400);
    expect(((await put.json()) as { error_description: string }).error_description).toMatch(/^send the client metadata as a JSON object/);
  });

  test('Content-Type: application/json with no body is told to send the metadata (it was told only JSON bodies are supported), and so is a PUT', async () => {
    const before = await clientCount();
    const expected = { error: 'invalid_request', error_description: 'send the client metadata as a JSON object with Content-Type: application/json (the request has no Content-Type or no body)' };
    const res = await fetch(`${issuer}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    expect([res.status, await res.json()]).toEqual([400, expected]);
    expect(await clientCount()).toBe(before);
    const created = await register(issuer, valid);
    const put = await fetch(created.body.registration_client_uri as string, { method: 'PUT', headers: { authorization: `Bearer ${created.body.registration_access_token as string}`, 'content-type': 'application/json' } });
    expect([put.status, await put.json()]).toEqual([400, expected]);
    // The token was not used up by the refused update.
    const read = await fetch(created.body.registration_client_uri as string, { headers: { authorization: `Bearer ${created.body.registration_access_token as string}` } });
    expect(read.status).toBe(200);
    // A body of another type is still refused as such.
    const text = await fetch(`${issuer}/reg`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: JSON.stringify(valid) });
    expect([text.status, ((await text.json()) as { error_description: string }).error_description]).toEqual([400, 'only application/json content-type bodies are supported on POST /reg']);
  });

  test('all resource-server scopes are registrable', async () => {
    const res = await register(issuer, { ...valid, scope: 'read write files' });
    expect(res.status).toBe(201);
    expect(res.body.scope).toBe('read write files');
  });

  test('confidential client: secret returned once and stored hashed; RFC 7592 read/update rotate the registration access token; delete revokes its tokens', async () => {
    const created = await register(issuer, {
      client_name: 'Confidential agent',
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'read',
    });
    expect(created.status).toBe(201);
    const clientId = created.body.client_id as string;
    const secret = created.body.client_secret as string;
    let rat = created.body.registration_access_token as string;
    const clientUri = created.body.registration_client_uri as string;
    expect(secret.length).toBeGreaterThanOrEqual(43);

    const stored = await mongo.db(as.dbName).collection('oidc_Client').findOne({ _id: clientId as never });
    const payload = JSON.parse(stored!.payload as string) as Record<string, string>;
    expect(payload.client_secret).toMatch(/^hmac-sha256:/);
    expect(JSON.stringify(stored)).not.toContain(secret);

    const config = new oidc.Configuration(await oidc.discovery(new URL(issuer), clientId, undefined, oidc.ClientSecretBasic(secret), insecure).then((c) => c.serverMetadata()), clientId, secret, oidc.ClientSecretBasic(secret));
    oidc.allowInsecureRequests(config);
    const cc = await oidc.clientCredentialsGrant(config, { resource: RESOURCE, scope: 'read' });
    expect((await introspect(issuer, cc.access_token)).active).toBe(true);
    await expect(
      oidc.clientCredentialsGrant(new oidc.Configuration(config.serverMetadata(), clientId, 'wrong', oidc.ClientSecretBasic('wrong-secret')), { resource: RESOURCE }),
    ).rejects.toThrow();

    // RFC 7592 read: no secret in the answer (it is stored hashed), and a new registration access token.
    const read = await fetch(clientUri, { headers: { authorization: `Bearer ${rat}` } });
    expect(read.status).toBe(200);
    const readBody = (await read.json()) as Record<string, unknown>;
    expect(readBody.client_secret).toBeUndefined();
    expect(readBody.registration_access_token).not.toBe(rat);
    expect((await fetch(clientUri, { headers: { authorization: `Bearer ${rat}` } })).status).toBe(401);
    rat = readBody.registration_access_token as string;

    // RFC 7592 update: the client echoes its secret; a wrong secret or a changed tier is refused.
    const update = (body: Record<string, unknown>, token = rat) =>
      fetch(clientUri, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const base = { client_id: clientId, grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read write' };
    let res = await update({ ...base, client_secret: 'not-the-secret' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request');
    res = await update({ ...base, client_secret: secret, agentauth_tier: 'strict' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_client_metadata');
    res = await update({ ...base, client_secret: secret, agentauth_tier: 'standard', client_name: 'Renamed agent' });
    expect(res.status).toBe(200);
    const updated = (await res.json()) as Record<string, unknown>;
    expect(updated).toMatchObject({ client_name: 'Renamed agent', scope: 'read write', agentauth_tier: 'standard' });
    expect(updated.client_secret).toBeUndefined();
    expect(updated.registration_access_token).not.toBe(rat);
    rat = updated.registration_access_token as string;
    // The secret still works after the update.
    const cc2 = await oidc.clientCredentialsGrant(config, { resource: RESOURCE, scope: 'write' });

    // RFC 7592 delete: every token issued to the client stops being valid.
    const del = await fetch(clientUri, { method: 'DELETE', headers: { authorization: `Bearer ${rat}` } });
    expect(del.status).toBe(204);
    expect(await introspect(issuer, cc.access_token)).toEqual({ active: false });
    expect(await introspect(issuer, cc2.access_token)).toEqual({ active: false });
    const after = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE }),
    });
    expect(after.status).toBe(401);
    expect(((await after.json()) as { error: string }).error).toBe('invalid_client');
  });

  test('RFC 7592 §2.1: a registration access token sent for another client id is refused and revoked (docs/agents.md); the client keeps working', async () => {
    const created = await register(issuer, valid);
    const id = created.body.client_id as string;
    const rat = created.body.registration_access_token as string;
    const other = (await register(issuer, valid)).body.client_id as string;
    const read = (clientId: string) => fetch(`${issuer}/reg/${encodeURIComponent(clientId)}`, { headers: { authorization: `Bearer ${rat}` } });
    // Named another client, or none that exists: 401 client mismatch, and the token is gone.
    for (const wrong of [other, `${id}x`]) {
      const fresh = await register(issuer, valid);
      const freshRat = fresh.body.registration_access_token as string;
      const res = await fetch(`${issuer}/reg/${encodeURIComponent(wrong)}`, { headers: { authorization: `Bearer ${freshRat}` } });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: 'invalid_token', error_description: 'invalid token provided' });
      const after = await fetch(`${issuer}/reg/${encodeURIComponent(fresh.body.client_id as string)}`, { headers: { authorization: `Bearer ${freshRat}` } });
      expect(after.status).toBe(401);
    }
    // The client whose token was never misused still reads its registration.
    expect((await read(id)).status).toBe(200);
  });

  describe('RFC 6750 §3: a registration access token in a form the server does not take', () => {
    const forms: Array<[string, (rat: string) => { query?: string; headers?: Record<string, string> }, RegExp]> = [
      ['an Authorization header of another scheme', (rat) => ({ headers: { authorization: `Basic ${rat}` } }), /^authorization header scheme must be `Bearer`$/],
      ['the token in the query', (rat) => ({ query: `access_token=${rat}` }), /^access tokens must not be provided via query parameter$/],
      ['the token in the query and in the header', (rat) => ({ query: `access_token=${rat}`, headers: { authorization: `Bearer ${rat}` } }), /^access token must only be provided using one mechanism$/],
      ['Bearer and no token', () => ({ headers: { authorization: 'Bearer' } }), /^invalid authorization header value format$/],
      // It said "`DPoP` header not provided", with a DPoP header sent.
      ['the DPoP scheme, with a DPoP header', (rat) => ({ headers: { authorization: `DPoP ${rat}`, dpop: 'x.y.z' } }), /^registration access tokens and initial access tokens are bearer tokens: send Authorization: Bearer <token>/],
    ];

    test.each(forms)('%s: 400 invalid_request with a Bearer challenge at GET, PUT and DELETE, every spelling; the token is not used up and nothing changes', async (_label, form, description) => {
      const created = await register(issuer, valid);
      const id = created.body.client_id as string;
      const rat = created.body.registration_access_token as string;
      const { query, headers } = form(rat);
      for (const method of ['GET', 'PUT', 'DELETE']) {
        for (const path of [`/reg/${id}`, `/REG/${id}/`]) {
          const res = await fetch(`${issuer}${path}${query ? `?${query}` : ''}`, {
            method,
            headers: { ...headers, ...(method === 'PUT' ? { 'content-type': 'application/json' } : {}) },
            ...(method === 'PUT' ? { body: JSON.stringify({ ...valid, client_id: id, client_name: 'changed' }) } : {}),
          });
          expect({ method, path, status: res.status }).toEqual({ method, path, status: 400 });
          const body = (await res.json()) as { error: string; error_description: string };
          expect(body.error).toBe('invalid_request');
          expect(body.error_description).toMatch(description);
          // It had no WWW-Authenticate.
          expect(res.headers.get('www-authenticate')).toBe(`Bearer realm="${issuer}", error="invalid_request", error_description="${body.error_description}"`);
        }
      }
      // Neither used up nor rotated, and the client neither changed nor deleted.
      const read = await fetch(`${issuer}/reg/${id}`, { headers: { authorization: `Bearer ${rat}` } });
      expect(read.status).toBe(200);
      expect(((await read.json()) as Record<string, unknown>).client_name).toBeUndefined();
    });

    test('a refusal of the metadata, or a 401 for the token itself, keeps its own answer: no invalid_request challenge', async () => {
      const created = await register(issuer, valid);
      const id = created.body.client_id as string;
      const rat = created.body.registration_access_token as string;
      const metadata = await fetch(`${issuer}/reg/${id}`, { method: 'PUT', headers: { authorization: `Bearer ${rat}`, 'content-type': 'application/json' }, body: '{"redirect_uris": [' });
      expect(metadata.status).toBe(400);
      expect(((await metadata.json()) as { error: string }).error).toBe('invalid_request');
      expect(metadata.headers.get('www-authenticate')).toBeNull();
      const notJson = await fetch(`${issuer}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"redirect_uris": [' });
      expect(notJson.status).toBe(400);
      expect(notJson.headers.get('www-authenticate')).toBeNull();
      const unknown = await fetch(`${issuer}/reg/${id}`, { headers: { authorization: 'Bearer not-a-registration-token' } });
      expect(unknown.status).toBe(401);
      expect(unknown.headers.get('www-authenticate')).toBe(`Bearer realm="${issuer}", error="invalid_token", error_description="invalid token provided"`);
      const none = await fetch(`${issuer}/reg/${id}`);
      expect(none.status).toBe(401);
      expect(none.headers.get('www-authenticate')).toBe(`Bearer realm="${issuer}"`);
    });
  });

  test('RFC 7592 update reveals nothing about a client until its registration access token is valid', async () => {
    const created = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    const uri = created.body.registration_client_uri as string;
    const put = (auth: string | undefined, secret: string) =>
      fetch(uri, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
        body: JSON.stringify({ client_id: created.body.client_id, client_secret: secret, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' }),
      });
    for (const auth of [undefined, 'Bearer not-a-registration-token']) {
      const wrong = await put(auth, 'wrong-secret');
      const right = await put(auth, created.body.client_secret as string);
      expect(wrong.status).toBe(401);
      expect(right.status).toBe(401);
    }
  });

  test('a client_credentials client registers without sending response_types, and a PUT that makes a public client confidential returns its new secret once', async () => {
    const cc = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' });
    expect(cc.status).toBe(201);
    expect(cc.body.response_types).toEqual([]);

    const pub = await register(issuer, valid);
    const res = await fetch(pub.body.registration_client_uri as string, {
      method: 'PUT',
      headers: { authorization: `Bearer ${pub.body.registration_access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...valid, client_id: pub.body.client_id, token_endpoint_auth_method: 'client_secret_basic' }),
    });
    expect(res.status).toBe(200);
    const updated = (await res.json()) as Record<string, unknown>;
    expect(typeof updated.client_secret).toBe('string');
    expect(updated.client_secret).not.toMatch(/^hmac-sha256:/);
  });

  test('RFC 7592 with one registration access token sent many times at once: exactly one read, one update, one delete succeeds; the update stored is the winner\'s', async () => {
    const created = await register(issuer, valid);
    expect(created.status).toBe(201);
    const uri = created.body.registration_client_uri as string;
    const id = created.body.client_id as string;
    const send = (method: string, token: string, body?: Record<string, unknown>) =>
      fetch(uri, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
    const statuses = async (responses: Response[]) => responses.map((r) => r.status).sort();

    const reads = await Promise.all(Array.from({ length: 10 }, () => send('GET', created.body.registration_access_token as string)));
    expect(await statuses(reads)).toEqual([200, ...Array(9).fill(401)]);
    const token = (await reads.find((r) => r.status === 200)!.json() as { registration_access_token: string }).registration_access_token;

    const updates = await Promise.all(Array.from({ length: 20 }, (_, i) => send('PUT', token, { ...valid, client_id: id, client_name: `update ${i}` })));
    expect(await statuses(updates)).toEqual([200, ...Array(19).fill(401)]);
    const winner = (await updates.find((r) => r.status === 200)!.json()) as { client_name: string; registration_access_token: string };
    for (const loser of updates.filter((r) => r.status === 401)) expect(((await loser.json()) as { error: string }).error).toBe('invalid_token');
    const stored = await mongo.db(as.dbName).collection('oidc_Client').findOne({ _id: id as never });
    expect(JSON.parse(stored!.payload as string).client_name).toBe(winner.client_name);

    const deletes = await Promise.all(Array.from({ length: 10 }, () => send('DELETE', winner.registration_access_token)));
    expect(await statuses(deletes)).toEqual([204, ...Array(9).fill(401)]);
    expect(await mongo.db(as.dbName).collection('oidc_Client').findOne({ _id: id as never })).toBeNull();
  });

  test('a PUT to a method without a secret drops the secret; a PUT back gets a new one, and the old one never works again', async () => {
    const confidential = { redirect_uris: [REDIRECT], grant_types: ['authorization_code'], token_endpoint_auth_method: 'client_secret_basic' };
    const created = await register(issuer, confidential);
    expect(created.status).toBe(201);
    const id = created.body.client_id as string;
    const first = created.body.client_secret as string;
    const put = async (token: string, method: string) => {
      const res = await fetch(created.body.registration_client_uri as string, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...confidential, client_id: id, token_endpoint_auth_method: method }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as Record<string, unknown>;
    };
    /** A code request with a made-up code: the secret authenticates (invalid_grant) or does not (invalid_client). */
    const authenticates = async (secret: string) => {
      const res = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: 'made-up', redirect_uri: REDIRECT, code_verifier: 'x'.repeat(43) }),
      });
      return ((await res.json()) as { error: string }).error;
    };
    expect(await authenticates(first)).toBe('invalid_grant');

    const toNone = await put(created.body.registration_access_token as string, 'none');
    expect(toNone).not.toHaveProperty('client_secret');
    const stored = await mongo.db(as.dbName).collection('oidc_Client').findOne({ _id: id as never });
    expect(JSON.parse(stored!.payload as string)).not.toHaveProperty('client_secret');

    const back = await put(toNone.registration_access_token as string, 'client_secret_basic');
    const second = back.client_secret as string;
    expect(typeof second).toBe('string');
    expect(second).not.toBe(first);
    expect(await authenticates(first)).toBe('invalid_client');
    expect(await authenticates(second)).toBe('invalid_grant');
  });

  test('a self-registered confidential client cannot introspect another client\'s tokens; the configured resource server can', async () => {
    const a = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    const b = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    const basic = (r: typeof a) => `Basic ${Buffer.from(`${r.body.client_id}:${r.body.client_secret}`).toString('base64')}`;
    const tokenRes = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers: { authorization: basic(a), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    const { access_token: token } = (await tokenRes.json()) as { access_token: string };
    const asB = await fetch(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: basic(b), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    expect(await asB.json()).toEqual({ active: false });
    expect((await introspect(issuer, token)).active).toBe(true);
  });

  test('PKCE plain is refused; PKCE is required; an unknown resource gets invalid_target', async () => {
    const created = await register(issuer, valid);
    const clientId = created.body.client_id as string;
    const authorize = async (params: Record<string, string>) => {
      const url = new URL(`${issuer}/auth`);
      for (const [k, v] of Object.entries({ client_id: clientId, redirect_uri: REDIRECT, response_type: 'code', scope: 'read', ...params })) url.searchParams.set(k, v);
      // This client registered itself: the way back is the refused-request page's link (server/http/untrusted-redirects.ts).
      return sentBack(await fetch(url, { redirect: 'manual' }));
    };
    let cb = await authorize({ code_challenge: 'x'.repeat(43), code_challenge_method: 'plain', resource: RESOURCE });
    expect(cb.searchParams.get('error')).toBe('invalid_request');
    expect(cb.searchParams.get('error_description')).toMatch(/code_challenge_method/);
    cb = await authorize({ resource: RESOURCE });
    expect(cb.searchParams.get('error')).toBe('invalid_request');
    expect(cb.searchParams.get('error_description')).toMatch(/requires PKCE/);
    cb = await authorize({ code_challenge: 'x'.repeat(43), code_challenge_method: 'S256', resource: 'https://unknown.example.com' });
    expect(cb.searchParams.get('error')).toBe('invalid_target');
  });

  test('redirect_uri is required at /auth and when the code is redeemed (RFC 6749 §4.1.3), even for a client with one registered URI; a refused redemption leaves the code', async () => {
    const created = await register(issuer, valid);
    const clientId = created.body.client_id as string;
    // Without it /auth cannot know where to send an error: the answer is the error page (JSON for this caller).
    const url = new URL(`${issuer}/auth`);
    for (const [k, v] of Object.entries({ client_id: clientId, response_type: 'code', scope: 'read', resource: RESOURCE, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' })) url.searchParams.set(k, v);
    const res = await fetch(url, { redirect: 'manual' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: 'invalid_request', error_description: "missing required parameter 'redirect_uri'" });

    const { code, verifier } = await walletCode(issuer, clientId, codeWallet);
    const redeem = (params: Record<string, string>) =>
      fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'authorization_code', client_id: clientId, code, code_verifier: verifier, resource: RESOURCE, ...params }) });
    const without = await redeem({});
    expect(without.status).toBe(400);
    expect(await without.json()).toEqual({ error: 'invalid_request', error_description: "missing required parameter 'redirect_uri'" });
    const redeemed = await redeem({ redirect_uri: REDIRECT });
    expect(redeemed.status).toBe(200);
  });
});

describe('default registration policy: anonymous clients get no machine access nobody consented to', () => {
  let as: AgentServer;
  let issuer: string;
  afterAll(async () => {
    await as?.server.stop();
  });

  test('by default an anonymous registration cannot use client_credentials; a client the operator vouched for can', async () => {
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 100 } } }));
    issuer = as.server.url;
    const res = await register(issuer, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_client_metadata' });
    expect(res.body.error_description).toMatch(/^grant_types client_credentials is not available to clients registered without an initial access token/);
    // Registering for authorization_code (a person consents) still works, and PUT cannot add client_credentials.
    const pub = await register(issuer, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code'] });
    expect(pub.status).toBe(201);
    const put = await fetch(pub.body.registration_client_uri as string, {
      method: 'PUT',
      headers: { authorization: `Bearer ${pub.body.registration_access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: pub.body.client_id, client_secret: pub.body.client_secret, redirect_uris: [REDIRECT], token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code', 'client_credentials'], response_types: ['code'] }),
    });
    expect(put.status).toBe(400);
    expect(((await put.json()) as { error_description: string }).error_description).toMatch(/client_credentials is not available/);
  });

  test('at the token endpoint an anonymous client gets only the allowlisted scopes (invalid_scope otherwise)', async () => {
    await as?.server.stop();
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 100 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } }));
    issuer = as.server.url;
    // Registered for both flows, so its `scope` may hold what a person may consent to; unattended access stays narrow.
    const c = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read write' });
    expect(c.status).toBe(201);
    const token = (scope: string) =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${c.body.client_id}:${c.body.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope }),
      });
    const ok = await token('read');
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { scope: string }).scope).toBe('read');
    const wide = await token('read write');
    expect(wide.status).toBe(400);
    expect(await wide.json()).toMatchObject({ error: 'invalid_scope' });
  });

  test('client_credentials for a resource server none of whose scopes the client may receive is invalid_target, whichever limit applies', async () => {
    await as?.server.stop();
    const limited = { client_id: 'limited-svc', client_secret: 'limited-svc-secret-0123456789abcdefgh', grant_types: ['client_credentials'], scope: 'read' };
    as = await startAgentServer(baseConfig({
      registration: { quota: { max: 100 }, anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } },
      clients: [{ client_id: RS_CLIENT.id, client_secret: RS_CLIENT.secret, grant_types: ['client_credentials'] }, limited],
    }));
    issuer = as.server.url;
    // Anonymous, registered with the opaque resource server's scope too: the allowlist holds none of that server's scopes.
    const anonymous = await register(issuer, { redirect_uris: [REDIRECT], grant_types: ['authorization_code', 'client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read files' });
    expect(anonymous.status).toBe(201);
    const token = (id: string, secret: string, params: Record<string, string>) =>
      fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', ...params }),
      });
    const callers: Array<[string, string, string]> = [
      ['an anonymous client (allowlist: read)', String(anonymous.body.client_id), String(anonymous.body.client_secret)],
      ['a static client registered with scope read', limited.client_id, limited.client_secret],
    ];
    for (const [who, id, secret] of callers) {
      // Asked with no scope, with a scope of another resource server, with the resource server's own scope.
      for (const scope of [undefined, 'read', 'files']) {
        const res = await token(id, secret, { resource: OPAQUE_RESOURCE, ...(scope === undefined ? {} : { scope }) });
        const body = (await res.json()) as Record<string, unknown>;
        expect({ who, scope, status: res.status, body }).toMatchObject({
          status: 400,
          // The anonymous client's scope outside its allowlist is named as such first (invalid_scope).
          body: scope === 'files' && who.startsWith('an anonymous')
            ? { error: 'invalid_scope', error_description: 'clients registered without an initial access token may not receive files through client_credentials' }
            : { error: 'invalid_target', error_description: `this client may receive none of the scopes of ${OPAQUE_RESOURCE} (files), so it gets no token for it` },
        });
      }
      // Where it may receive a scope, it still gets its token.
      expect((await token(id, secret, { resource: RESOURCE, scope: 'read' })).status).toBe(200);
    }
    // A client limited by nothing (static, no scope) names any resource server.
    const open = await token(RS_CLIENT.id, RS_CLIENT.secret, { resource: OPAQUE_RESOURCE });
    expect(open.status).toBe(200);
  });
});

describe('an operator who withdraws anonymous client_credentials', () => {
  let first: AgentServer | undefined;
  let second: RunningServer | undefined;
  afterAll(async () => {
    await first?.server.stop();
    await second?.stop();
  });

  test('clients registered while it was allowed are refused at the token endpoint, with or without a resource', async () => {
    first = await startAgentServer(baseConfig({ registration: { anonymous: { clientCredentials: true, clientCredentialsScopes: ['read'] } } }));
    const c = await register(first.server.url, { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' });
    expect(c.status).toBe(201);
    await first.server.stop();
    // Same database and KEK, new configuration: the default (no anonymous client_credentials).
    second = await startServer({ ...first.env, AGENTAUTH_CONFIG: writeConfig(tempDir(), baseConfig()) });
    const token = (params: Record<string, string>) =>
      fetch(`${second!.url}/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${c.body.client_id}:${c.body.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', ...params }),
      });
    const attempts: Array<Record<string, string>> = [{ resource: RESOURCE, scope: 'read' }, { scope: 'read' }, { scope: 'openid' }, {}];
    for (const params of attempts) {
      const res = await token(params);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'unauthorized_client' });
    }
  });
});

describe('open registration quota', () => {
  let as: AgentServer;
  beforeAll(async () => {
    as = await startAgentServer(baseConfig({ registration: { quota: { max: 2, windowSeconds: 60 } } }));
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  test('past the per-IP quota registration answers 429 with Retry-After', async () => {
    const body = { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' };
    expect((await register(as.server.url, body)).status).toBe(201);
    expect((await register(as.server.url, body)).status).toBe(201);
    const third = await register(as.server.url, body);
    expect(third.status).toBe(429);
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(Number(third.headers.get('retry-after'))).toBeLessThanOrEqual(60);
    expect(third.body.error_description).toMatch(/quota/);
  });
});

describe('token mode: initial access tokens assign tiers', () => {
  let as: AgentServer;
  const cli = (args: string[]) => runCli(['clients', 'iat', 'create', ...args], as.env);

  beforeAll(async () => {
    as = await startAgentServer(baseConfig({ registration: { mode: 'token' } }));
  });
  afterAll(async () => {
    await as?.server.stop();
  });

  const confidential = { grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', scope: 'read' };

  test('registration without an initial access token is refused', async () => {
    const res = await register(as.server.url, confidential);
    expect(res.status).toBe(401);
    expect(res.body.error).toBe('invalid_token');
  });

  test('an initial access token in a form the server does not take: 400 invalid_request with a Bearer challenge (RFC 6750 §3), and no client', async () => {
    const iat = (await cli(['--expires-in', '600'])).stdout.trim();
    const clients = async () => {
      const mongo = await new MongoClient(mongoUri()).connect();
      try {
        return await mongo.db(as.dbName).collection('oidc_Client').countDocuments();
      } finally {
        await mongo.close();
      }
    };
    const before = await clients();
    for (const path of ['/reg', '/REG/']) {
      for (const [query, headers] of [['', { authorization: `Basic ${iat}` }], [`?access_token=${iat}`, {}], [`?access_token=${iat}`, { authorization: `Bearer ${iat}` }]] as const) {
        const res = await fetch(`${as.server.url}${path}${query}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(confidential) });
        expect(res.status).toBe(400);
        const body = (await res.json()) as { error: string; error_description: string };
        expect(body.error).toBe('invalid_request');
        expect(res.headers.get('www-authenticate')).toBe(`Bearer realm="${as.server.url}", error="invalid_request", error_description="${body.error_description}"`);
      }
    }
    expect(await clients()).toBe(before);
    // The initial access token was not used up by the refusals.
    expect((await register(as.server.url, confidential, { headers: { authorization: `Bearer ${iat}` } })).status).toBe(201);
  });

  test('an IAT for the strict tier: DPoP required, server nonces required', async () => {
    const created = await cli(['--tier', 'strict', '--expires-in', '600']);
    expect(created.code).toBe(0);
    const iat = created.stdout.trim();
    expect(iat).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(created.stderr).toMatch(/tier strict, expires in 600 s/);

    const res = await register(as.server.url, confidential, { headers: { authorization: `Bearer ${iat}` } });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ agentauth_tier: 'strict', dpop_bound_access_tokens: true });
    const clientId = res.body.client_id as string;
    const secret = res.body.client_secret as string;

    const server = (await oidc.discovery(new URL(as.server.url), clientId, undefined, oidc.ClientSecretBasic(secret), insecure)).serverMetadata();
    const config = new oidc.Configuration(server, clientId, secret, oidc.ClientSecretBasic(secret));
    oidc.allowInsecureRequests(config);
    // No DPoP proof: refused.
    await expect(oidc.clientCredentialsGrant(config, { resource: RESOURCE, scope: 'read' })).rejects.toMatchObject({
      error: 'invalid_grant',
      error_description: 'DPoP proof JWT not provided',
    });
    // A proof without the server's nonce: use_dpop_nonce with a DPoP-Nonce header, which openid-client retries with.
    const raw = await fetch(`${as.server.url}/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
        dpop: await dpopProofFor(`${as.server.url}/token`),
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'read' }),
    });
    expect(raw.status).toBe(400);
    expect(((await raw.json()) as { error: string }).error).toBe('use_dpop_nonce');
    expect(raw.headers.get('dpop-nonce')).toBeTruthy();
    const dpop = oidc.getDPoPHandle(config, await oidc.randomDPoPKeyPair('ES256'));
    const tokens = await oidc.clientCredentialsGrant(config, { resource: RESOURCE, scope: 'read' }, { DPoP: dpop });
    expect(tokens.token_type).toBe('dpop');
    expect(tokens.expires_in).toBe(300);
  });

  test('initial access tokens expire; an unknown tier is refused by the CLI', async () => {
    const short = await cli(['--expires-in', '1']);
    expect(short.code).toBe(0);
    await sleep(1500);
    const res = await register(as.server.url, confidential, { headers: { authorization: `Bearer ${short.stdout.trim()}` } });
    expect(res.status).toBe(401);
    const unknown = await cli(['--tier', 'platinum']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/--tier: no tier named platinum/);
    // Names every object has are not tiers either.
    for (const tier of ['__proto__', 'constructor', 'toString']) {
      const inherited = await cli(['--tier', tier]);
      expect({ tier, code: inherited.code }).toEqual({ tier, code: 2 });
      expect(inherited.stderr).toContain(`--tier: no tier named ${tier}`);
    }
  });

  test('--expires-in takes whole seconds written in decimal digits only', async () => {
    for (const value of ['1e3', '0x10', '600.0', ' 600', '+600', '0', '2592001', '']) {
      const refused = await cli(['--expires-in', value]);
      expect({ value, code: refused.code }).toEqual({ value, code: 2 });
      expect(refused.stderr).toContain('--expires-in: must be a whole number of seconds from 1 to 2592000 (30 days)');
      expect(refused.stdout).toBe('');
    }
    const ok = await cli(['--expires-in', '2592000']);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toMatch(/expires in 2592000 s/);
  });
});

async function dpopProofFor(htu: string): Promise<string> {
  const { SignJWT, exportJWK, generateKeyPair } = await import('jose');
  const { publicKey, privateKey } = await generateKeyPair('ES256');
  return new SignJWT({ htm: 'POST', htu, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(publicKey) })
    .sign(privateKey);
}
