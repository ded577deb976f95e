/**
 * How deeply JSON nests (a scalar is 0, `{}` or `[]` is 1), counted without recursion, stopping once `max` is passed:
 * client metadata nests 4 deep at most (jwks.keys[i].x5c), and code that walks a value recursively (JSON.stringify
 * in an error message, oidc-provider's own checks) overflows the stack on a few thousand levels, which a 10 KB body
 * can hold.
 */
export function jsonDepthExceeds(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth + 1 > max) return true;
    for (const member of Array.isArray(v) ? v : Object.values(v)) stack.push([member, depth + 1]);
  }
  return false;
}

/** The deepest nesting accepted in a registration request or a client ID metadata document. */
export const MAX_METADATA_DEPTH = 16;
