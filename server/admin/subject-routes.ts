import type { Context } from 'koa';

import type { Storage } from '../../adapters/types.js';
import type { AuditEventInput } from '../audit/chain.js';
import { parseSubject, revokeSubject } from '../subject-revocation.js';
import { invalidRequest, notFound } from './errors.js';
import { PerKeyQueue } from './per-key.js';
import type { AdminRoute } from './routes.js';

/**
 * `POST /admin/subjects/:sub/revoke`: what `agentauth subjects revoke <sub>` does, on the admin listener. Requests for
 * one subject run one after another, so that of several sent at once the first revokes and records, and the others
 * find nothing (404), as a retry does; they each recorded a `subject.revoked` before.
 */
export function subjectAdminRoutes(deps: { storage: Pick<Storage, 'model' | 'revokedTokens'>; audit: (event: AuditEventInput) => Promise<unknown> }): AdminRoute[] {
  const queue = new PerKeyQueue();
  return [
    {
      method: 'POST',
      path: '/admin/subjects/:sub/revoke',
      auth: 'admin',
      handle: async (ctx: Context) => {
        const parsed = parseSubject((ctx.params as Record<string, string>).sub!);
        if ('problem' in parsed) throw invalidRequest(parsed.problem);
        const { sub } = parsed;
        const remoteAddress = ctx.request.ip || ctx.req.socket.remoteAddress || 'unknown';
        const result = await queue.run(sub, () =>
          revokeSubject(deps.storage, sub, (found) =>
            deps.audit({ type: 'subject.revoked', sub, details: { ...found, actor: 'admin_api', remote_address: remoteAddress } }),
          ),
        );
        if (!result) throw notFound(`no grant or session of ${JSON.stringify(sub)}`);
        ctx.body = { sub, ...result };
      },
    },
  ];
}
