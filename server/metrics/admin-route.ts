import type { Context } from 'koa';

/**
 * A route served by the admin listener (server/admin/routes.ts defines the same interface; the two are unified when
 * the admin listener and the metrics land together). `auth: 'admin'` routes need the admin credential.
 */
export interface AdminRoute {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  auth: 'admin' | 'none';
  handle(ctx: Context): Promise<void> | void;
}
