import { createRequire } from 'node:module';

import { ConnectionString } from 'mongodb-connection-string-url';
import type { MongoClient as MongoClientClass } from 'mongodb';

const require = createRequire(import.meta.url);

/**
 * MONGODB_URI read as the MongoDB driver reads it (its own parser, mongodb-connection-string-url), so that a string
 * the driver would refuse is refused with the configuration, naming the setting, and the hosts and database shown
 * in messages are the ones the driver connects to. A connection string may hold a password: nothing here ever
 * quotes it, and the parser's messages are not passed on (some quote the user name, which can hold part of the
 * password when an `@` or `/` in it was not percent-encoded).
 */
function parse(uri: string): ConnectionString | Error {
  try {
    return new ConnectionString(uri);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** Why the driver would refuse `uri`, in words that quote none of it; undefined when it accepts it. */
export function mongoUriProblem(uri: string): string | undefined {
  const parsed = parse(uri);
  if (!(parsed instanceof Error)) return undefined;
  // A second `@` (in a user name or password) makes the whole string unreadable to the parser, not only its userinfo.
  if (/^(Username|Password) contains unescaped characters/.test(parsed.message) || uri.split('@').length > 2) {
    return 'the user name or password has characters that must be percent-encoded (@ / : ? # [ ] % and spaces; e.g. encodeURIComponent(password))';
  }
  return 'is not a MongoDB connection string the driver accepts: mongodb://[user:password@]host[:port][,host...]/[database][?options], or mongodb+srv://';
}

/** The hosts and the database named in `uri` (percent-decoded), or undefined when the driver would refuse it. */
export function mongoUriParts(uri: string): { hosts: string[]; database: string | undefined } | undefined {
  const parsed = parse(uri);
  if (parsed instanceof Error) return undefined;
  const path = parsed.pathname.replace(/^\//, '');
  let database: string | undefined;
  try {
    database = path ? decodeURIComponent(path) : undefined;
  } catch {
    database = undefined;
  }
  return { hosts: parsed.hosts, database };
}

/**
 * Why the driver refuses `uri`'s hosts or options as its client is made (`?foo=bar`, `?tls=maybe`, a port out of
 * range), in the driver's words, or undefined. The client is only constructed (nothing connects), with the driver
 * loaded only when MONGODB_URI is set (a CommonJS require: the configuration is read synchronously). Called once
 * `mongoUriProblem` passed: the user name and password are readable, and the driver's option messages quote neither.
 */
export function mongoClientProblem(uri: string): string | undefined {
  const { MongoClient } = require('mongodb') as { MongoClient: typeof MongoClientClass };
  try {
    new MongoClient(uri);
    return undefined;
  } catch (err) {
    return err instanceof Error && err.name.startsWith('Mongo') ? err.message : 'is not a MongoDB connection string the driver accepts';
  }
}
