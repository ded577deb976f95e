import { pino } from 'pino';
import type { Logger } from 'pino';

export type { Logger };

/**
 * JSON logs, one object per line. Anything that could carry a credential is redacted by path as a second line of
 * defence; the first is never logging request bodies, query strings or authorization headers at all.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'agentauth' },
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
