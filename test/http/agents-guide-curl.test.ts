import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { decodeJwt } from 'jose';

import { GUIDE_PATH, guideFencedBlock, guideShellBlock, replaceExactly, runShell } from '../support/guide.js';
import { onPath } from '../support/provision.js';
import { ROOT, startOnLoopback } from '../support/server.js';

/**
 * The shell examples of docs/agents.md (registration, RFC 7592 management, client credentials, revocation) and
 * docs/resource-servers.md's introspection, run as written with `bash -c` and the real curl against a live agentauth,
 * in the guide's order, as a new reader follows them: each variable the guide tells the reader to set
 * (INITIAL_ACCESS_TOKEN, CLIENT_ID, ...) is taken from the output of the step before, and nothing else is in the
 * environment but PATH. The answers are checked against what the guides say comes back, including the JSON they show.
 *
 * The only changes to the blocks: the guide's issuer https://auth.example.com becomes this test's agentauth (plain
 * http on 127.0.0.1, which the server is configured with as its ISSUER). The PUT body names the client by
 * `$CLIENT_ID`, which the shell fills in from the registration's answer, as for the reader. agentauth is configured with the guide's own
 * resource servers (docs/resource-servers.md, "Declaring the resource server"), so https://api.example.com and its
 * scopes stay as written. `agentauth ...` is run from this checkout, as docs/operations.md says
 * (`node dist/server/cli.js <command>`), with the server's own environment.
 */

const GUIDE_ISSUER = 'https://auth.example.com';
const RESOURCE = 'https://api.example.com'; // the guide's resource server, configured as written below

type Json = Record<string, unknown>;

const agents = (marker: string) => guideShellBlock('agents.md', marker);
const BLOCKS = {
  iatCreate: agents('The operator creates an initial access token with the CLI.'),
  registerConfidential: agents('### A confidential client for client credentials'),
  registerPublic: agents('### A public client for the authorization code flow'),
  read: agents('\n### Read\n'),
  update: agents('\n### Update\n'),
  remove: agents('\n### Delete\n'),
  clientCredentials: agents('\n### Client credentials\n'),
  revoke: agents('Revocation (RFC 7009), `POST /token/revocation`, authenticated as your client:'),
  introspect: guideShellBlock('resource-servers.md', '\n### Introspection\n'),
};

/** What the guides show coming back, parsed from their ```json blocks. */
const SHOWN = {
  registered: JSON.parse(guideFencedBlock('agents.md', 'The answer is `201` (the secret is shortened here):', ['json'])) as Json,
  token: JSON.parse(guideFencedBlock('agents.md', '\n### Client credentials\n', ['json'])) as Json,
  introspected: JSON.parse(guideFencedBlock('agents.md', 'Introspection (RFC 7662), `POST /token/introspection`, same authentication', ['json'])) as Json,
};
/** The example client_id the guide shows in the registration answer, and again in the PUT body. */
const EXAMPLE_CLIENT_ID = String(SHOWN.registered.client_id);

/**
 * curl -s prints the body only; the status is what the guide describes next to it. This function, defined before the
 * block in the same bash, makes every `curl` of the block also write its HTTP status to standard error
 * (`--write-out '%{stderr}...'`), so standard output stays exactly what the reader sees, and the request is unchanged.
 */
const CURL_STATUS = `curl() { command curl --write-out '%{stderr}%{http_code}\\n' "$@"; }`;

interface Answer {
  status: number;
  body: string;
}

/** Runs a shell block with `bash -c` and PATH plus `vars` only: the one curl request's status and printed body. */
async function runCurl(block: string, vars: Record<string, string>): Promise<Answer> {
  const { stdout, stderr } = await runShell(`${CURL_STATUS}\n${block}`, { PATH: GUIDE_PATH, ...vars });
  const statuses = stderr.split('\n').filter(Boolean);
  if (statuses.length !== 1 || !/^\d{3}$/.test(statuses[0]!)) throw new Error(`expected one curl request and its status, got stderr ${JSON.stringify(stderr)}:\n${block}`);
  return { status: Number(statuses[0]), body: stdout };
}

function json(answer: Answer): Json {
  try {
    return JSON.parse(answer.body) as Json;
  } catch {
    throw new Error(`the answer (${answer.status}) is not JSON: ${JSON.stringify(answer.body)}`);
  }
}

function omit(object: Json, keys: string[]): Json {
  return Object.fromEntries(Object.entries(object).filter(([k]) => !keys.includes(k)));
}

type Agentauth = Awaited<ReturnType<typeof startOnLoopback>>;

/** The operator's `API_EXAMPLE_SECRET`: the guide's placeholder says `openssl rand -hex 32`. */
const API_EXAMPLE_SECRET = randomBytes(32).toString('hex');
/** docs/resource-servers.md's configuration of the resource servers and of `api-example`, with that secret. */
const GUIDE_CONFIG = JSON.parse(
  replaceExactly(guideFencedBlock('resource-servers.md', '## Declaring the resource server', ['json']), '<at least 32 characters, e.g. openssl rand -hex 32>', API_EXAMPLE_SECRET, 'docs/resource-servers.md\'s configuration'),
) as Json;

let as: Agentauth; // registration.mode "token": the guide's main path
let open: Agentauth; // registration.mode "open" (the default): for the guide's registration without a token
/** The variables the reader has set so far, from the answers of the steps before (a reader's shell session). */
const reader: Record<string, string> = {};
/** Answers kept from one step for the next. */
let registered: Json;
let lastRead: Json;

/** A block of docs/agents.md with the guide's issuer replaced by `server`'s (`times`: how often the block names it). */
const at = (server: Agentauth, block: string, name: string, times = 1) => replaceExactly(block, GUIDE_ISSUER, server.url, `docs/agents.md's ${name} block`, times);

beforeAll(async () => {
  if (!onPath('curl', GUIDE_PATH)) throw new Error('curl is not on PATH: install it (e.g. `sudo apt-get install curl`) to run the curl examples of docs/agents.md and docs/resource-servers.md');
  [as, open] = await Promise.all([startOnLoopback({ ...GUIDE_CONFIG, registration: { mode: 'token' } }), startOnLoopback(GUIDE_CONFIG)]);
});

afterAll(async () => {
  await Promise.all([as?.server.stop(), open?.server.stop()]);
  for (const server of [as, open]) if (server) rmSync(server.dir, { recursive: true, force: true });
});

test('`agentauth clients iat create`, run from a checkout as docs/operations.md says, prints the token alone on standard output and its tier and lifetime on standard error', async () => {
  expect(readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8')).toContain('`agentauth <command>` (from a checkout: `node dist/server/cli.js <command>`)');
  const command = replaceExactly(BLOCKS.iatCreate, 'agentauth clients iat create ', 'node dist/server/cli.js clients iat create ', 'docs/agents.md\'s initial access token block');
  const tier = /--tier (\S+)/.exec(command)?.[1];
  const expiresIn = /--expires-in (\d+)/.exec(command)?.[1];
  expect([tier, expiresIn]).toEqual([expect.any(String), expect.any(String)]);
  // The operator's shell: the server's environment and configuration file, in the checkout.
  const { stdout, stderr } = await runShell(command, { PATH: GUIDE_PATH, ...as.env }, ROOT);
  expect(stdout).toMatch(/^[A-Za-z0-9_-]{20,}\n$/);
  expect(stderr).toContain(`initial access token for tier ${tier}, expires in ${expiresIn} s`);
  reader.INITIAL_ACCESS_TOKEN = stdout.trim();
});

test('registering the confidential client with it: 201, with every field of the answer the guide shows, and its values where they are not generated', async () => {
  const before = Math.floor(Date.now() / 1000);
  const answer = await runCurl(at(as, BLOCKS.registerConfidential, 'confidential registration'), reader);
  expect(answer.status).toBe(201);
  const body = json(answer);
  const generated = ['client_id', 'client_secret', 'client_id_issued_at', 'registration_access_token', 'registration_client_uri'];
  expect(Object.keys(body).sort()).toEqual(Object.keys(SHOWN.registered).sort());
  expect(omit(body, generated)).toEqual(omit(SHOWN.registered, generated));
  expect(body.agentauth_tier).toBe(/--tier (\S+)/.exec(BLOCKS.iatCreate)?.[1]); // the initial access token's tier
  expect(body.client_id).toMatch(/^[A-Za-z0-9_-]{20,}$/);
  expect(body.client_secret).toMatch(/^[A-Za-z0-9_-]{32,}$/); // URL-safe only, as the guide says for `curl -u`
  expect(body.registration_access_token).toEqual(expect.any(String));
  expect(body.client_id_issued_at).toBeGreaterThanOrEqual(before);
  expect(body.client_id_issued_at).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
  const uri = String(SHOWN.registered.registration_client_uri).replace(GUIDE_ISSUER, as.url).replace(EXAMPLE_CLIENT_ID, String(body.client_id));
  expect(body.registration_client_uri).toBe(uri);
  registered = body;
  // "Store client_id, client_secret, registration_client_uri and registration_access_token right away."
  reader.CLIENT_ID = String(body.client_id);
  reader.CLIENT_SECRET = String(body.client_secret);
  reader.REGISTRATION_CLIENT_URI = String(body.registration_client_uri);
  reader.REGISTRATION_ACCESS_TOKEN = String(body.registration_access_token);
});

test('in token mode, registering without an initial access token (the public-client block), or with an unknown one, is refused with 401 invalid_token', async () => {
  const without = await runCurl(at(as, BLOCKS.registerPublic, 'public registration'), {});
  expect(without.status).toBe(401);
  expect(json(without).error).toBe('invalid_token');
  const unknown = await runCurl(at(as, BLOCKS.registerConfidential, 'confidential registration'), { INITIAL_ACCESS_TOKEN: 'not-an-initial-access-token-0123456789' });
  expect(unknown.status).toBe(401);
  expect(json(unknown).error).toBe('invalid_token');
});

test('in open mode, the public client registers without a token: 201, no client_secret, its metadata as sent', async () => {
  const block = at(open, BLOCKS.registerPublic, 'public registration');
  const sent = JSON.parse(/-d '([^']*)'/.exec(block)![1]!) as Json;
  const answer = await runCurl(block, {});
  expect(answer.status).toBe(201);
  const body = json(answer);
  expect(body).not.toHaveProperty('client_secret');
  expect(body).toMatchObject({ ...sent, agentauth_tier: 'standard', client_id: expect.any(String), registration_access_token: expect.any(String) });
});

test('in open mode, the confidential block without its authorization line (as the guide says to leave it out without a token) is refused: client_credentials needs an initial access token', async () => {
  const block = replaceExactly(at(open, BLOCKS.registerConfidential, 'confidential registration'), '  -H "authorization: Bearer $INITIAL_ACCESS_TOKEN" \\\n', '', 'docs/agents.md\'s confidential registration block');
  const answer = await runCurl(block, {});
  expect(answer.status).toBe(400);
  const body = json(answer);
  expect(body.error).toBe('invalid_client_metadata');
  expect(body.error_description).toMatch(/^grant_types client_credentials is not available to clients registered without an initial access token/);
});

test('read (RFC 7592): 200, the current metadata without client_secret and client_secret_expires_at, and a new registration access token; the one sent stops working (401 invalid_token)', async () => {
  const block = at(as, BLOCKS.read, 'read', 0);
  const answer = await runCurl(block, reader);
  expect(answer.status).toBe(200);
  const body = json(answer);
  expect(body).toEqual({ ...omit(registered, ['client_secret', 'client_secret_expires_at']), registration_access_token: expect.any(String) });
  expect(body.registration_access_token).not.toBe(reader.REGISTRATION_ACCESS_TOKEN);
  const again = await runCurl(block, reader);
  expect(again.status).toBe(401);
  expect(json(again).error).toBe('invalid_token');
  reader.REGISTRATION_ACCESS_TOKEN = String(body.registration_access_token);
  lastRead = body;
});

test('update (RFC 7592), with the reader\'s own client_id in the body: 200, client_name changed and nothing else, no client_secret; a read then shows the new name', async () => {
  // The guide's body is a here-document naming the client as "$CLIENT_ID", which the shell expands as it does for the reader.
  const block = at(as, BLOCKS.update, 'update', 0);
  const sent = JSON.parse(/<<EOF\n([\s\S]*?)\nEOF/.exec(block)![1]!.replace('$CLIENT_ID', reader.CLIENT_ID!)) as Json;
  expect(sent.client_id).toBe(reader.CLIENT_ID);
  expect(sent.client_name).not.toBe(lastRead.client_name);
  const answer = await runCurl(block, reader);
  expect(answer.status).toBe(200);
  const body = json(answer);
  expect(body).toEqual({ ...lastRead, client_name: sent.client_name, registration_access_token: expect.any(String) });
  expect(body.registration_access_token).not.toBe(reader.REGISTRATION_ACCESS_TOKEN);
  reader.REGISTRATION_ACCESS_TOKEN = String(body.registration_access_token);

  const read = await runCurl(at(as, BLOCKS.read, 'read', 0), reader);
  expect(read.status).toBe(200);
  expect(json(read).client_name).toBe(sent.client_name);
  reader.REGISTRATION_ACCESS_TOKEN = String(json(read).registration_access_token);
});

test('delete (RFC 7592): 204 with no body; then the read gets 401 invalid_token and the client credentials request 401 invalid_client', async () => {
  const answer = await runCurl(at(as, BLOCKS.remove, 'delete', 0), reader);
  expect(answer).toEqual({ status: 204, body: '' });
  const read = await runCurl(at(as, BLOCKS.read, 'read', 0), reader);
  expect(read.status).toBe(401);
  expect(json(read).error).toBe('invalid_token');
  const token = await runCurl(at(as, BLOCKS.clientCredentials, 'client credentials'), reader);
  expect(token.status).toBe(401);
  expect(json(token).error).toBe('invalid_client');
});

test('client credentials, for a client registered again with the same initial access token: 200, the bearer token the guide shows, whose sub is the client', async () => {
  // "If you lose it, delete the client and register again"; the initial access token serves more than one registration.
  const again = await runCurl(at(as, BLOCKS.registerConfidential, 'confidential registration'), reader);
  expect(again.status).toBe(201);
  const client = json(again);
  reader.CLIENT_ID = String(client.client_id);
  reader.CLIENT_SECRET = String(client.client_secret);
  reader.REGISTRATION_CLIENT_URI = String(client.registration_client_uri);
  reader.REGISTRATION_ACCESS_TOKEN = String(client.registration_access_token);

  const answer = await runCurl(at(as, BLOCKS.clientCredentials, 'client credentials'), reader);
  expect(answer.status).toBe(200);
  const body = json(answer);
  expect(Object.keys(body).sort()).toEqual(Object.keys(SHOWN.token).sort());
  expect(omit(body, ['access_token'])).toEqual(omit(SHOWN.token, ['access_token']));
  // The guide shows the start of the JWT: its header, {"alg":"ES256","typ":"at+jwt",...
  expect(body.access_token).toEqual(expect.stringMatching(new RegExp(`^${String(SHOWN.token.access_token).replace(/\.\.\.$/, '')}`)));
  expect(decodeJwt(String(body.access_token))).toMatchObject({ iss: as.url, sub: reader.CLIENT_ID, client_id: reader.CLIENT_ID, aud: RESOURCE, scope: 'read' });
  reader.ACCESS_TOKEN = String(body.access_token);
});

test('introspection by the resource server (docs/resource-servers.md): 200, active, with the fields the guides list for a bearer JWT access token', async () => {
  reader.RS_CLIENT_SECRET = API_EXAMPLE_SECRET;
  const answer = await runCurl(replaceExactly(BLOCKS.introspect, GUIDE_ISSUER, as.url, 'docs/resource-servers.md\'s introspection block'), reader);
  expect(answer.status).toBe(200);
  const body = json(answer);
  // agents.md's example is a DPoP-bound token; cnf is only for those (resource-servers.md's table).
  expect(Object.keys(body).sort()).toEqual(Object.keys(omit(SHOWN.introspected, ['cnf'])).sort());
  const claims = decodeJwt(reader.ACCESS_TOKEN!);
  expect(body).toEqual({
    active: true, iss: as.url, sub: reader.CLIENT_ID, client_id: reader.CLIENT_ID, aud: RESOURCE, scope: 'read',
    exp: claims.exp, iat: claims.iat, jti: claims.jti, token_type: 'Bearer',
  });
});

test('revocation: 200 with an empty body; introspection of the revoked token then answers {"active": false} and nothing else', async () => {
  const answer = await runCurl(at(as, BLOCKS.revoke, 'revocation'), reader);
  expect(answer).toEqual({ status: 200, body: '' });
  const introspected = await runCurl(replaceExactly(BLOCKS.introspect, GUIDE_ISSUER, as.url, 'docs/resource-servers.md\'s introspection block'), reader);
  expect(introspected.status).toBe(200);
  expect(json(introspected)).toEqual({ active: false });
});

test('delete revokes every token the client held: its access token, active before, introspects as {"active": false} after', async () => {
  const token = await runCurl(at(as, BLOCKS.clientCredentials, 'client credentials'), reader);
  expect(token.status).toBe(200);
  reader.ACCESS_TOKEN = String(json(token).access_token);
  const introspect = () => runCurl(replaceExactly(BLOCKS.introspect, GUIDE_ISSUER, as.url, 'docs/resource-servers.md\'s introspection block'), reader);
  expect(json(await introspect()).active).toBe(true);
  expect(await runCurl(at(as, BLOCKS.remove, 'delete', 0), reader)).toEqual({ status: 204, body: '' });
  const after = await introspect();
  expect(after.status).toBe(200);
  expect(json(after)).toEqual({ active: false });
});
