import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { MongoOperationTimeoutError } from 'mongodb';

import { driverMessage } from '../../adapters/mongodb.js';

describe('driverMessage (adapters/mongodb.ts): driver errors as logged', () => {
  test('the socket-read timeout loses its "(undefinedms)"; other messages are kept as they are', () => {
    expect(driverMessage(new MongoOperationTimeoutError('Timed out during socket read (undefinedms)'))).toBe('Timed out during socket read');
    expect(driverMessage(new MongoOperationTimeoutError('Timed out during socket read (250ms)'))).toBe('Timed out during socket read (250ms)');
    expect(driverMessage(new Error('connect ECONNREFUSED 127.0.0.1:27017'))).toBe('connect ECONNREFUSED 127.0.0.1:27017');
    expect(driverMessage('a string')).toBe('a string');
  });

  test('the installed driver still writes that message (when an upgrade stops, the replacement can go)', () => {
    const connection = createRequire(import.meta.url).resolve('mongodb/lib/cmap/connection.js');
    expect(readFileSync(connection, 'utf8')).toContain('Timed out during socket read (${readError.duration}ms)');
  });
});
