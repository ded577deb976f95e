import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';

import { bodyReceiptClock, bodyReceivedAt, requestArrivedAt } from '../../server/http/body-received.js';

/** A request stream whose body has not arrived yet (as IncomingMessage before its last chunk), with a body declared. */
function pendingRequest(headers: IncomingMessage['headers'] = { 'content-length': '40' }): IncomingMessage {
  const req = new Readable({ read() {} }) as unknown as IncomingMessage;
  req.complete = false;
  req.headers = headers;
  return req;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readToEnd = async (req: IncomingMessage) => {
  for await (const chunk of req) void chunk;
};

describe('bodyReceivedAt (server/http/body-received.ts)', () => {
  test('is the moment the body ended, however much later the request is handled', async () => {
    const req = pendingRequest();
    await bodyReceiptClock({ req } as never, () => Promise.resolve());
    (req as unknown as Readable).push('grant_type=refresh_token');
    (req as unknown as Readable).push(null);
    const before = Date.now();
    await readToEnd(req);
    const after = Date.now();
    await sleep(120);
    const at = bodyReceivedAt(req);
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(after);
    expect(Date.now() - at).toBeGreaterThanOrEqual(100);
  });

  test('is the end of the body, not the start of the request: a body that arrives late is dated late', async () => {
    const req = pendingRequest();
    const started = Date.now();
    await bodyReceiptClock({ req } as never, () => Promise.resolve());
    (req as unknown as Readable).push('grant_type=refresh_token&');
    await sleep(120);
    (req as unknown as Readable).push('refresh_token=x');
    (req as unknown as Readable).push(null);
    await readToEnd(req);
    expect(bodyReceivedAt(req) - started).toBeGreaterThanOrEqual(100);
  });

  test('arrival is when the layer ran, whenever the body ends: what the request read before its body is that old', async () => {
    const req = pendingRequest();
    const before = Date.now();
    await bodyReceiptClock({ req } as never, () => Promise.resolve());
    const after = Date.now();
    (req as unknown as Readable).push('grant_type=');
    await sleep(120);
    (req as unknown as Readable).push(null);
    await readToEnd(req);
    expect(requestArrivedAt(req)).toBeGreaterThanOrEqual(before);
    expect(requestArrivedAt(req)).toBeLessThanOrEqual(after);
    expect(bodyReceivedAt(req) - requestArrivedAt(req)).toBeGreaterThanOrEqual(100);
    // A request the layer never saw: now.
    const other = pendingRequest();
    await sleep(20);
    expect(requestArrivedAt(other)).toBeGreaterThanOrEqual(Date.now() - 5);
  });

  test('without a recorded receipt (no layer, or a body never read) it is now', async () => {
    const unread = pendingRequest();
    await bodyReceiptClock({ req: unread } as never, () => Promise.resolve());
    await sleep(50);
    const before = Date.now();
    expect(bodyReceivedAt(unread)).toBeGreaterThanOrEqual(before);
    const other = pendingRequest();
    await sleep(20);
    const now = Date.now();
    expect(bodyReceivedAt(other)).toBeGreaterThanOrEqual(now);
  });

  test('a request already complete when the layer runs gets no listener, and is dated then', async () => {
    const req = pendingRequest();
    req.complete = true;
    const before = Date.now();
    await bodyReceiptClock({ req } as never, () => Promise.resolve());
    expect((req as unknown as Readable).listenerCount('end')).toBe(0);
    await sleep(120);
    expect(bodyReceivedAt(req)).toBeLessThanOrEqual(before + 50);
  });

  test.each([
    ['a GET (no Content-Length, no Transfer-Encoding)', {}],
    ['an empty form post (Content-Length: 0)', { 'content-length': '0' }],
  ])('%s is dated when the layer runs, though its stream never ends (nothing reads it)', async (_name, headers) => {
    const req = pendingRequest(headers);
    const before = Date.now();
    await bodyReceiptClock({ req } as never, () => Promise.resolve());
    const after = Date.now();
    expect((req as unknown as Readable).listenerCount('end')).toBe(0);
    await sleep(120);
    const at = bodyReceivedAt(req);
    expect(at).toBeGreaterThanOrEqual(before);
    expect(at).toBeLessThanOrEqual(after);
  });

  test('a chunked body (Transfer-Encoding, no Content-Length) is dated at its end', async () => {
    const req = pendingRequest({ 'transfer-encoding': 'chunked' });
    await bodyReceiptClock({ req } as never, () => Promise.resolve());
    expect((req as unknown as Readable).listenerCount('end')).toBe(1);
    await sleep(120);
    const before = Date.now();
    (req as unknown as Readable).push(null);
    await readToEnd(req);
    expect(bodyReceivedAt(req)).toBeGreaterThanOrEqual(before);
  });
});
