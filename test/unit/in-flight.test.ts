import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

import Koa from 'koa';

import { HandlersInFlight } from '../../server/http/in-flight.js';

describe('handlers in flight (shutdown waits for them, not only for connections)', () => {
  test('a handler whose client went away still counts after the listener has closed; idle() resolves when it ends', async () => {
    const inFlight = new HandlersInFlight();
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    let entered!: () => void;
    const handlerEntered = new Promise<void>((resolve) => (entered = resolve));
    const app = new Koa();
    app.use(inFlight.middleware);
    app.use(async (ctx) => {
      entered();
      await finished; // e.g. a refresh token rotation still writing its audit record
      ctx.body = 'done';
    });
    const server = createServer(app.callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const req = request({ port, host: '127.0.0.1', path: '/', method: 'GET' });
    req.on('error', () => undefined);
    req.end();
    await handlerEntered;
    expect(inFlight.count).toBe(1);
    req.destroy(); // the client disconnects
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed; // the listener is closed and has no connection left...
    let idle = false;
    const idlePromise = inFlight.idle().then(() => (idle = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(idle).toBe(false); // ...but the handler is still running
    finish();
    await idlePromise;
    expect(inFlight.count).toBe(0);
  });

  test('idle() resolves at once with nothing running, and a handler that throws is counted out too', async () => {
    const inFlight = new HandlersInFlight();
    await expect(inFlight.idle()).resolves.toBeUndefined();
    const ctx = {} as Koa.Context;
    await expect(inFlight.middleware(ctx, async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(inFlight.count).toBe(0);
    await expect(inFlight.idle()).resolves.toBeUndefined();
  });
});
