import { sqliteErrorHint } from '../../adapters/sqlite-writer.js';

/**
 * SQLITE_READONLY_DIRECTORY (1544) reads "attempt to write a readonly database" though the file is writable: an
 * operator with a data directory the server's user cannot write to (mode 0500, as an operator pass found) was sent
 * looking at the file. The storage error names the directory. (The tests run as root, whom file modes do not stop,
 * so the code is given here rather than provoked.)
 */
describe('SQLite error hints', () => {
  test('SQLITE_READONLY_DIRECTORY names the directory and the files SQLite creates there', () => {
    expect(sqliteErrorHint(1544)).toBe('; the directory holding the store is not writable by this process, and SQLite creates its -wal and -shm files there');
  });

  test('other codes, plain SQLITE_READONLY (8) among them, get no hint', () => {
    for (const code of [undefined, 5, 8, 13, 778, 1032]) expect(sqliteErrorHint(code)).toBe('');
  });
});
