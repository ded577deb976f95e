import { ferretdbV1Version } from '../../adapters/mongodb.js';

describe('ferretdbV1Version (the start-up warning for FerretDB v1, docs/operations.md "FerretDB v1 is for tests")', () => {
  test('a FerretDB 1.x buildInfo answer gives its version', () => {
    expect(ferretdbV1Version({ version: '7.0.42', ferretdbVersion: 'v1.24.2', ok: 1 })).toBe('v1.24.2');
    expect(ferretdbV1Version({ version: '7.0.42', ferretdbVersion: '1.10.0' })).toBe('1.10.0');
  });

  test('MongoDB, FerretDB 2.x, and a build that does not know its version give nothing', () => {
    expect(ferretdbV1Version({ version: '7.0.14', gitVersion: 'ce59cfc6a3c5e5c067dca0d30697edd68d4f5188', ok: 1 })).toBeUndefined();
    expect(ferretdbV1Version({ version: '7.0.77', ferretdbVersion: 'v2.1.0' })).toBeUndefined();
    expect(ferretdbV1Version({ version: '7.0.42', ferretdbVersion: 'unknown' })).toBeUndefined(); // this project's test build
    expect(ferretdbV1Version({ ferretdbVersion: 'v10.0.0' })).toBeUndefined();
    expect(ferretdbV1Version({ ferretdbVersion: 1 })).toBeUndefined();
  });
});
