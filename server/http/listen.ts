import type { Server } from 'node:http';

/** What an operator can do about the usual reasons a port cannot be bound. */
const WHY: Record<string, string> = {
  EADDRINUSE: 'address already in use: another process listens there',
  EACCES: 'permission denied: ports below 1024 need privileges',
  EADDRNOTAVAIL: 'no interface of this machine has that address',
};

/** A listener that could not be started, naming the setting that chose its address. */
export class ListenError extends Error {
  constructor(
    readonly setting: string,
    address: string,
    readonly code: string | undefined,
    cause: unknown,
  ) {
    super(`${setting}: cannot listen on ${address} (${(code && WHY[code]) ?? (cause instanceof Error ? cause.message : String(cause))}${code ? `, ${code}` : ''})`, { cause });
    this.name = 'ListenError';
  }
}

/**
 * `server.listen(port, host)`, failing with a ListenError that names the setting at fault: the host's for an address
 * this machine does not have, the port's otherwise (e.g. `{ port: 'PORT', host: 'HOST' }`).
 */
export function listen(server: Server, port: number, host: string | undefined, settings: { port: string; host: string }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const setting = err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' ? settings.host : settings.port;
      reject(new ListenError(setting, `${host ?? '(all interfaces)'}:${port}`, err.code, err));
    });
    server.listen(port, host, () => resolve());
  });
}
