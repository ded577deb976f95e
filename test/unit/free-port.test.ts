import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

import { freePort, portSlice, PORT_BASE, PORT_SLICE } from '../support/ferretdb.js';

// The servers tests start listen on ports from freePort(). CI once failed with EADDRINUSE because a port found free in
// the kernel's ephemeral range was taken (by another bind(0) or an outgoing connection) before the server listened.

describe('test ports', () => {
  it('come from below the ephemeral range the kernel gives outgoing connections and bind(0)', () => {
    const [ephemeralFirst] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    const { first, size } = portSlice();
    expect(first + size - 1).toBeLessThan(ephemeralFirst!);
  });

  it('each Jest worker draws from its own slice', () => {
    const worker = Number(process.env.JEST_WORKER_ID);
    expect(worker).toBeGreaterThan(0);
    expect(portSlice()).toEqual({ first: PORT_BASE + worker * PORT_SLICE, size: PORT_SLICE });
  });

  it('are in the slice, distinct from call to call, and free to listen on', async () => {
    const { first, size } = portSlice();
    const ports: number[] = [];
    for (let i = 0; i < 40; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
    for (const p of ports) expect(p >= first && p < first + size).toBe(true);
    const srv = createServer();
    await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(ports[0], resolve));
    await new Promise((r) => srv.close(r));
  });

  it('skip a port something already listens on', async () => {
    const { first, size } = portSlice();
    // freePort walks the slice one port at a time: occupy the next 20 ports of the walk, and it must pass them all.
    const last = await freePort();
    const next = (i: number) => first + ((last - first + i) % size);
    const occupied: number[] = [];
    const servers = [];
    for (let i = 1; i <= 20; i++) {
      const srv = createServer();
      const ok = await new Promise<boolean>((resolve) => srv.once('error', () => resolve(false)).listen(next(i), () => resolve(true)));
      if (ok) servers.push(srv);
      occupied.push(next(i));
    }
    try {
      const port = await freePort();
      expect(occupied).not.toContain(port);
      expect(port).toBe(next(21)); // the first port past them (nothing else listens in the test slices)
    } finally {
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    }
  });
});
