import type { Context } from 'koa';

import type { AdminActor, ClientAdmin } from './client-admin.js';
import type { AdminRoute } from './routes.js';

const actor = (ctx: Context): AdminActor => ({ kind: 'admin_api', remoteAddress: ctx.request.ip || ctx.req.socket.remoteAddress || 'unknown' });
const param = (ctx: Context, name: string) => (ctx.params as Record<string, string>)[name]!;

/** The client administration routes of the admin API (docs/operations.md "Client administration"). */
export function clientAdminRoutes(admin: ClientAdmin): AdminRoute[] {
  return [
    { method: 'GET', path: '/admin/clients', auth: 'admin', handle: async (ctx) => { ctx.body = { clients: await admin.list() }; } },
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
