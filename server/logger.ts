import cluster from 'node:cluster';
import { pino } from 'pino';
import type { Logger } from 'pino';

import { currentRequest } from './http/request-id.js';

export type { Logger };

/**
 * The cluster worker id of this process under `agentauth start --workers N` (1..N), else 0: a single-process
 * server, the cluster primary and the CLI. The same number ends the process's audit chain id (server/audit/writer-chain.ts).
 */
export function workerId(): number {
  return cluster.worker?.id ?? 0;
}

/** `request_id` and `ip` of the request being handled (server/http/request-id.ts), on every line written while it is. */
function requestFields(): Record<string, string> {
  const request = currentRequest();
  return request ? { request_id: request.requestId, ip: request.ip } : {};
}

/**
 * JSON logs, one object per line, each with `pid` and `worker`, and `request_id` and `ip` when written while a
 * request is handled. Anything that could carry a credential is redacted by path as a second line of defence; the
 * first is never logging request bodies, query strings or authorization headers at all.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'agentauth', pid: process.pid, worker: workerId() },
      mixin: requestFields,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: [
          '*.authorization', '*.Authorization', '*.cookie', '*.dpop', '*.DPoP', '*.client_secret', '*.access_token',
          '*.refresh_token', '*.code', '*.token', '*.password', '*.kek', '*.privateJwk', '*.d',
        ],
        censor: '[redacted]',
      },
    },
    destination ?? process.stdout,
  );
}

/**
 * A URL's scheme and slashes, then its userinfo up to the last `@` of its authority, read as the WHATWG parser reads
 * it: after a special scheme (http, https, ws, wss, ftp) any number of slashes or backslashes, none included
 * (`https:u:p@host`, `https:///u:p@host`); after any other scheme exactly two.
 */
const URL_USERINFO = /((?:\b(?:https?|wss?|ftp):[\\/]*)|(?:[A-Za-z][A-Za-z0-9+.-]*:[\\/]{2}))[^/\\?#\s]*@/gi;

/**
 * `text` with the userinfo of every URL in it replaced by `[redacted]`: for log fields that carry what a client sent
 * (a `resource`, a client ID metadata document URL, an error description quoting either), where `user:password@` is a
 * credential the sender put in the wrong place. Field-path redaction (createLogger) cannot see inside a string.
 */
export function withoutUserinfo<T extends string | undefined>(text: T): T {
  return (typeof text === 'string' && text.includes('@') ? text.replace(URL_USERINFO, '$1[redacted]@') : text) as T;
}

