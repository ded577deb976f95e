import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import { maxHeaderSize } from 'node:http';

import { MAX_REQUEST_BODY } from './body-limit.js';
import type { Duplex } from 'node:stream';

import { SECURITY_HEADERS } from './security-headers.js';

/** What Node's HTTP parser reports on a request it could not read (llhttp's code and reason). */
interface ParseError extends Error {
  code?: string;
  reason?: string;
}

/** RFC 9110 status lines for what a parser failure can mean. */
function answerFor(err: ParseError): { status: number; text: string; description: string } {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, text: 'Request Header Fields Too Large', description: `the request line and header fields exceed the ${maxHeaderSize} bytes this server reads: send long parameters in a POST body (for an authorization request, which /auth takes by GET only: in a pushed authorization request, RFC 9126)` };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, text: 'Request Timeout', description: 'the request was not received in time' };
    default: {
      // llhttp's reasons are fixed texts ("Invalid method encountered", "Invalid header value char", ...).
      const reason = typeof err.reason === 'string' && /^[\x20-\x7e]{1,100}$/.test(err.reason) ? ` (${err.reason})` : '';
      return { status: 400, text: 'Bad Request', description: `the request is not valid HTTP/1.1${reason}` };
    }
  }
}

/**
 * Answers a request Node's HTTP parser refused (too long a request line or headers, malformed syntax, too slow) with
 * an RFC 6749-shaped JSON error and the security headers, where Node wrote a bare status line with no body: a client
 * developer then learns what to change. The connection is closed after the answer, as Node does, since what follows
 * on it cannot be framed. A socket that can no longer be written to is destroyed.
 */
export function answerParseErrors(server: Server): void {
  server.on('clientError', (err: ParseError, socket: Duplex) => {
    // A response already begun on this connection (Node's own handler checks the same) cannot be followed by another.
    const inProgress = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (!socket.writable || err.code === 'ECONNRESET' || inProgress?.headersSent) {
      socket.destroy();
      return;
    }
    const { status, text, description } = answerFor(err);
    const body = JSON.stringify({ error: 'invalid_request', error_description: description });
    const headers = {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(body)),
      'Cache-Control': 'no-store',
      ...SECURITY_HEADERS,
      Connection: 'close',
    };
    socket.end(`HTTP/1.1 ${status} ${text}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`);
  });
}

const EXPECTATION_FAILED = JSON.stringify({
  error: 'invalid_request',
  error_description: 'the Expect header names an expectation this server does not meet: only 100-continue is supported (RFC 9110 section 10.1.1)',
});

/**
 * RFC 9110 §10.1.1, `Expect`. Node answers an expectation other than 100-continue with a bare 417, and sends
 * `100 Continue` to any 100-continue request before the application sees it: a client declaring a body larger than
 * any endpoint takes was told to send it, only to be refused 413 once it had. Now the 417 is an RFC 6749-shaped JSON
 * error with the security headers, and a declared body over MAX_REQUEST_BODY gets no 100 (its 413 comes at once, and
 * the connection closes, since the body was never sent).
 */
export function answerExpectations(server: Server, handler: RequestListener): void {
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (Number(req.headers['content-length'] ?? 0) > MAX_REQUEST_BODY) res.setHeader('Connection', 'close');
    else res.writeContinue();
    handler(req, res);
  });
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(417, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(EXPECTATION_FAILED)),
      'Cache-Control': 'no-store',
      ...SECURITY_HEADERS,
      Connection: 'close',
    });
    res.end(EXPECTATION_FAILED);
  });
}
