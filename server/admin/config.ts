import { z } from 'zod';

/** The `admin` section of the configuration file: the admin listener (server/admin/listener.ts). */
export const adminSchema = z
  .strictObject({
    /** Interface the admin listener binds to. Loopback by default: the admin API is for the operator's host. */
    host: z.string().min(1).default('127.0.0.1'),
    /** Port of the admin listener; the listener is off when unset. */
    port: z.number().int().min(1).max(65535).optional(),
    /** File holding the admin bearer token (one line, at least 32 characters); or AGENTAUTH_ADMIN_TOKEN. */
    tokenFile: z.string().min(1).optional(),
  })
  .prefault({});

export interface AdminConfig {
  host: string;
  port: number | undefined;
  /** Absolute path (resolved by loadConfig). */
  tokenFile: string | undefined;
  /** AGENTAUTH_ADMIN_TOKEN. */
  token: string | undefined;
}
