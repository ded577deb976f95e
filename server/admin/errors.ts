/** A refused administration request: the HTTP status the admin API answers and a code, as OAuth errors carry. */
export class AdminError extends Error {
  constructor(
    readonly status: 400 | 404 | 409 | 413,
    readonly code: 'invalid_request' | 'not_found' | 'conflict',
    message: string,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

export const notFound = (what: string) => new AdminError(404, 'not_found', what);
export const invalidRequest = (what: string) => new AdminError(400, 'invalid_request', what);
export const conflict = (what: string) => new AdminError(409, 'conflict', what);
/** RFC 9110 §15.5.14: a body larger than the route reads. */
export const tooLarge = (what: string) => new AdminError(413, 'invalid_request', what);
