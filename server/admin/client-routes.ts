import type { Context } from 'koa';

import type { AdminActor, ClientAdmin } from './client-admin.js';
import { invalidRequest } from './errors.js';
import type { AdminRoute } from './routes.js';

const actor = (ctx: Context): AdminActor => ({ kind: 'admin_api', remoteAddress: ctx.request.ip || ctx.req.socket.remoteAddress || 'unknown' });
const param = (ctx: Context, name: string) => (ctx.params as Record<string, string>)[name]!;

/** Clients per page of GET /admin/clients: by default, and at most. */
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** `?limit=` (1 to MAX_PAGE_SIZE, digits only) and `?after=` (the `next` of the page before), each at most once. */
function listQuery(ctx: Context): { after: string | undefined; limit: number } {
  const { after, limit, ...rest } = ctx.query;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw invalidRequest(`GET /admin/clients takes only limit and after (got ${JSON.stringify(unknown.slice(0, 40))})`);
  if (Array.isArray(after) || Array.isArray(limit)) throw invalidRequest('limit and after may each be given once');
  if (limit !== undefined && !new RegExp(`^[1-9][0-9]{0,${String(MAX_PAGE_SIZE).length - 1}}$`).test(limit)) throw invalidRequest(`limit must be a whole number from 1 to ${MAX_PAGE_SIZE}`);
  const n = limit === undefined ? DEFAULT_PAGE_SIZE : Number(limit);
  if (n > MAX_PAGE_SIZE) throw invalidRequest(`limit must be a whole number from 1 to ${MAX_PAGE_SIZE}`);
  return { after: after === '' ? undefined : after, limit: n };
}

/** The client administration routes of the admin API (docs/operations.md "Client administration"). */
export function clientAdminRoutes(admin: ClientAdmin): AdminRoute[] {
  return [
    {
      method: 'GET',
      path: '/admin/clients',
      auth: 'admin',
      handle: async (ctx) => {
        const { after, limit } = listQuery(ctx);
        ctx.body = await admin.listPage(after, limit);
      },
    },
    { method: 'GET', path: '/admin/clients/:id', auth: 'admin', handle: async (ctx) => { ctx.body = await admin.show(param(ctx, 'id')); } },
    { method: 'POST', path: '/admin/clients/:id/disable', auth: 'admin', handle: async (ctx) => { ctx.body = await admin.disable(param(ctx, 'id'), actor(ctx)); } },
    { method: 'POST', path: '/admin/clients/:id/enable', auth: 'admin', handle: async (ctx) => { ctx.body = await admin.enable(param(ctx, 'id'), actor(ctx)); } },
    {
      method: 'POST',
      path: '/admin/clients/:id/rotate-secret',
      auth: 'admin',
      handle: async (ctx) => {
        const { client, clientSecret } = await admin.rotateSecret(param(ctx, 'id'), actor(ctx));
        ctx.set('Cache-Control', 'no-store');
        ctx.body = { ...client, client_secret: clientSecret };
      },
    },
    {
      method: 'DELETE',
      path: '/admin/clients/:id',
      auth: 'admin',
      handle: async (ctx) => {
        await admin.delete(param(ctx, 'id'), actor(ctx));
        ctx.status = 204;
      },
    },
    { method: 'GET', path: '/admin/iats', auth: 'admin', handle: async (ctx) => { ctx.body = { initial_access_tokens: await admin.listIats() }; } },
    { method: 'DELETE', path: '/admin/iats/:id', auth: 'admin', secretParams: ['id'], handle: async (ctx) => { ctx.body = await admin.revokeIat(param(ctx, 'id'), actor(ctx)); } },
  ];
}
