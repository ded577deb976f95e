import { request } from 'node:http';

/**
 * A client_credentials token request that is in flight when `signal()` is called: its headers and the first bytes of
 * its body are sent, then `signal()` runs (a SIGTERM or SIGINT to the server, or to npm), and the rest of the body
 * follows 300 ms later. A server that drains answers it; `onResponse` runs as the answer's headers arrive.
 */
export function tokenRequestAcrossSignal(
  url: string,
  basicCredentials: { id: string; secret: string },
  signal: () => void,
  onResponse: () => void = () => undefined,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const body = 'grant_type=client_credentials&scope=read';
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/token`,
      {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${basicCredentials.id}:${basicCredentials.secret}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        onResponse();
        let text = '';
        res.on('data', (d: Buffer) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Record<string, unknown> }));
      },
    );
    req.on('error', reject);
    req.write(body.slice(0, 10));
    setTimeout(() => {
      signal();
      setTimeout(() => req.end(body.slice(10)), 300);
    }, 200);
  });
}
