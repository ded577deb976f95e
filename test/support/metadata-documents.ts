import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

import { newKek, ROOT, startServer, tempDir, uniqueDbName, writeConfig } from './server.js';
import type { RunningServer } from './server.js';
import { mongoUri } from './storages.js';

/** Made-up names the tests resolve themselves (never through DNS); the leaf certificate covers all of them. */
export const TEST_NAMES = ['agent.test', 'other.test', 'loopback.test', 'sub.allowed.test', 'allowed.test', 'denied.test'];

export interface TestPki {
  caPem: string;
  keyPem: string;
  certPem: string;
}

/** A throwaway CA and a leaf certificate for TEST_NAMES, made with /usr/bin/openssl in a temp dir. */
export function makeTestPki(): TestPki {
  const dir = tempDir('agentauth-cimd-pki-');
  const run = (...args: string[]) => execFileSync('/usr/bin/openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=agentauth test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=agent.test');
  writeFileSync(join(dir, 'ext.cnf'), `subjectAltName=${TEST_NAMES.map((n) => `DNS:${n}`).join(',')},IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  run('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '2', '-extfile', 'ext.cnf');
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return { caPem: read('ca.pem'), keyPem: read('leaf.key'), certPem: read('leaf.pem') };
}

export interface Route {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  /** Send the body one byte every `trickleMs` (a slow body). */
  trickleMs?: number;
}

export interface DocumentServer {
  server: Server;
  port: number;
  /** https://<name>:<port><path> */
  url(name: string, path: string): string;
  /** Serve `route` at `path` (replacing what was there). */
  serve(path: string, route: Route): void;
  /** Serve `doc` as application/json at `path`, with extra headers. */
  serveJson(path: string, doc: unknown, headers?: Record<string, string>): void;
  /** How many requests reached `path`. */
  hits(path: string): number;
  close(): Promise<void>;
}

/** An https server on 127.0.0.1 with the test PKI's leaf certificate, serving whatever the test sets per path. */
export async function startDocumentServer(pki: TestPki): Promise<DocumentServer> {
  const routes = new Map<string, Route>();
  const counts = new Map<string, number>();
  const timers = new Set<NodeJS.Timeout>();
  const server = createServer({ key: pki.keyPem, cert: pki.certPem }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const route = routes.get(path);
    if (!route) return res.writeHead(404).end();
    res.writeHead(route.status ?? 200, { 'content-type': 'application/json', ...route.headers });
    const body = Buffer.from(route.body ?? '');
    if (!route.trickleMs) return res.end(body);
    let i = 0;
    const timer = setInterval(() => {
      if (i >= body.length || res.destroyed) {
        clearInterval(timer);
        timers.delete(timer);
        res.end();
        return;
      }
      res.write(body.subarray(i, ++i));
    }, route.trickleMs);
    timers.add(timer);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    url: (name, path) => `https://${name}:${port}${path}`,
    serve: (path, route) => routes.set(path, route),
    serveJson: (path, doc, headers = {}) => routes.set(path, { body: JSON.stringify(doc), headers }),
    hits: (path) => counts.get(path) ?? 0,
    async close() {
      for (const t of timers) clearInterval(t);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The test-only fetch overrides (server/client-metadata/fetch.ts), as the test entry point takes them. */
export interface CimdTestSwitch {
  ca: string;
  /** name → address, instead of DNS */
  hosts: Record<string, string>;
  /** special-use addresses the test server may be reached on */
  allowAddresses: string[];
}

/** The test-only entry point (see the file): agentauth with the fetcher's test switch. */
export const CIMD_ENTRY = join(ROOT, 'test', 'support', 'cimd-server.mjs');

/**
 * Starts agentauth (MongoDB store, own database) through the test-only entry point, with `config` as its file; its
 * documents are fetched on 443 and `docsPort` (the document server's: clientIdMetadataDocuments.allowedPorts) unless
 * the config names the ports itself.
 */
export async function startCimdServer(config: Record<string, unknown>, testSwitch: CimdTestSwitch, docsPort: number): Promise<RunningServer> {
  const cimd = (config.clientIdMetadataDocuments ?? {}) as Record<string, unknown>;
  const withPorts = { ...config, clientIdMetadataDocuments: { allowedPorts: [443, docsPort], ...cimd } };
  const env = {
    AGENTAUTH_CONFIG: writeConfig(tempDir(), withPorts),
    MONGODB_URI: mongoUri(),
    MONGODB_DB: uniqueDbName('cimd'),
    AGENTAUTH_KEK: newKek(),
  };
  return startServer(env, undefined, { entry: [CIMD_ENTRY, JSON.stringify(testSwitch)] });
}

/** Every TEST_NAME resolves to 127.0.0.1 (the document server), except loopback.test: 127.0.0.2, which the switch does not permit. */
export function testSwitchFor(pki: TestPki): CimdTestSwitch {
  const hosts = Object.fromEntries(TEST_NAMES.map((n) => [n, n === 'loopback.test' ? '127.0.0.2' : '127.0.0.1']));
  return { ca: pki.caPem, hosts, allowAddresses: ['127.0.0.1'] };
}
