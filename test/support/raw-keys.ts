// Direct access to the key store's records, below agentauth's storage code: what someone who can write the database
// or the data directory, but does not hold the KEK, can do. Used by the key-store tampering tests.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { importJWK, SignJWT } from 'jose';
import type { Db } from 'mongodb';
import type { DatabaseSync } from 'node:sqlite';

import type { KeyTransition, StoredKey } from '../../adapters/types.js';
import { generateSigningKey } from '../../keys/generate.js';
import type { KeyPairJwk } from '../../keys/generate.js';

export type RawKey = StoredKey & Record<string, unknown>;
export type RawTransition = KeyTransition & Record<string, unknown>;

export interface RawKeyStore {
  keys(): Promise<RawKey[]>;
  transitions(): Promise<RawTransition[]>;
  /** Replaces every key record. */
  writeKeys(keys: readonly RawKey[]): Promise<void>;
  /** Replaces every transition record. */
  writeTransitions(transitions: readonly RawTransition[]): Promise<void>;
}

/** The embedded store's files (`keys.json`, `key-transitions.json`), edited by hand. */
export function rawFileKeys(dataDir: string): RawKeyStore {
  const read = async <T>(name: string): Promise<T[]> => JSON.parse(await readFile(join(dataDir, name), 'utf8').catch(() => '[]')) as T[];
  const write = (name: string, records: readonly unknown[]) => writeFile(join(dataDir, name), `${JSON.stringify(records, null, 2)}\n`);
  return {
    keys: () => read<RawKey>('keys.json'),
    transitions: () => read<RawTransition>('key-transitions.json'),
    writeKeys: (keys) => write('keys.json', keys),
    writeTransitions: (transitions) => write('key-transitions.json', transitions),
  };
}

/** The MongoDB collections (`signing_keys`, `key_transitions`), edited with the driver. */
export function rawMongoKeys(db: Db): RawKeyStore {
  const keys = db.collection<Record<string, unknown> & { _id: string }>('signing_keys');
  const transitions = db.collection<Record<string, unknown> & { _id: string }>('key_transitions');
  return {
    keys: async () => (await keys.find({}).sort({ seq: 1 }).toArray()).map(({ _id, ...rest }) => ({ kid: _id, ...rest }) as RawKey),
    transitions: async () => (await transitions.find({}).toArray()).map(({ _id, ...rest }) => rest as RawTransition),
    async writeKeys(records) {
      await keys.deleteMany({});
      if (records.length > 0) await keys.insertMany(records.map(({ kid, ...rest }) => ({ _id: kid, ...rest })));
    },
    async writeTransitions(records) {
      await transitions.deleteMany({});
      if (records.length > 0) await transitions.insertMany(records.map((t) => ({ _id: `${t.kid}:${t.type}`, ...t })));
    },
  };
}

/** The SQLite store's tables (`signing_keys`, `key_transitions`), edited with SQL. */
export function rawSqliteKeys(db: () => DatabaseSync): RawKeyStore {
  const withMac = <T>(record: string, mac: string | null): T => ({ ...(JSON.parse(record) as object), ...(mac === null ? {} : { mac }) }) as T;
  const split = (record: Record<string, unknown>, ...columns: string[]) => {
    const rest = { ...record };
    for (const c of columns) delete rest[c];
    return JSON.stringify(rest);
  };
  const replaceAll = (table: string, rows: Array<Array<string | number | null>>, sql: string) => {
    db().exec('BEGIN IMMEDIATE');
    db().exec(`DELETE FROM ${table}`);
    for (const row of rows) db().prepare(sql).run(...row);
    db().exec('COMMIT');
  };
  return {
    keys: async () =>
      (db().prepare('SELECT kid, record, mac FROM signing_keys ORDER BY seq').all() as Array<{ kid: string; record: string; mac: string | null }>).map(
        (r) => ({ ...withMac<RawKey>(r.record, r.mac), kid: r.kid }),
      ),
    transitions: async () =>
      (db().prepare('SELECT record, mac FROM key_transitions ORDER BY rowid').all() as Array<{ record: string; mac: string | null }>).map((r) =>
        withMac<RawTransition>(r.record, r.mac),
      ),
    async writeKeys(records) {
      replaceAll(
        'signing_keys',
        records.map((k) => [k.kid, k.seq, split(k, 'kid', 'mac'), typeof k.mac === 'string' ? k.mac : null]),
        'INSERT INTO signing_keys (kid, seq, record, mac) VALUES (?, ?, ?, ?)',
      );
    },
    async writeTransitions(records) {
      replaceAll(
        'key_transitions',
        records.map((t) => [t.kid, t.type, split(t, 'mac'), typeof t.mac === 'string' ? t.mac : null]),
        'INSERT INTO key_transitions (kid, type, record, mac) VALUES (?, ?, ?, ?)',
      );
    },
  };
}

/** A key pair the attacker made: its public JWK is what they would like agentauth to trust. */
export function attackerKey(): Promise<KeyPairJwk> {
  return generateSigningKey('ES256');
}

/** A key record for the attacker's key, with a sealed blob borrowed from a genuine record (they cannot seal one). */
export function injectedKey(attacker: KeyPairJwk, seq: number, sealed: StoredKey['sealed'], createdAt: Date): RawKey {
  return { kid: attacker.kid, seq, alg: attacker.alg, createdAt: createdAt.toISOString(), publicJwk: attacker.publicJwk as Record<string, string>, sealed };
}

/** A JWT access token with the claims agentauth's own carry, signed by `privateJwk` under `kid`. */
export async function signAccessToken(privateJwk: KeyPairJwk['privateJwk'], kid: string, claims: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: `forged-${now}-${Math.random().toString(36).slice(2)}`, ...claims })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid })
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(await importJWK(privateJwk, 'ES256'));
}
