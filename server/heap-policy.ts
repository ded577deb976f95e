import { setFlagsFromString } from 'node:v8';

import { nodeOptionsText } from './node-options.js';

/**
 * How far V8 lets the old generation grow past what survived the last full collection before it collects again, in
 * percent: 100 lets it double.
 *
 * V8 picks the factor itself, between 1.1 and 4, and allows 4 whenever the heap limit is 2 GB or more, which at Node's
 * defaults is any machine with 8 GB of memory or more. A server's live heap is mostly its loaded code (agentauth's is
 * about 24 MB after a load run, two thirds of it bytecode, compiled code and module sources), and each request
 * promotes a few kilobytes of short-lived objects, so under sustained load the old generation fills up to about four
 * times the live heap (plus the young generation's size) before every full collection: that headroom, not data, was
 * most of the peak RSS (issue 15: 222 MB, against 200). Twice the live heap costs a few more full collections, each
 * mostly concurrent marking on V8's helper threads. See docs/operations.md, "Memory".
 */
export const DEFAULT_HEAP_GROWTH_PERCENT = 100;

/** V8 options that mean the operator has sized the heap: their choice stands. */
const OPERATOR_HEAP_FLAGS = /--(max-old-space-size|max_old_space_size|heap-growing-percent|heap_growing_percent)\b/;

export interface HeapPolicy {
  /** The growth applied, in percent; undefined when V8's own policy was left in place. */
  growthPercent?: number;
  /** Why V8's own policy was left in place. */
  left?: 'operator-flags' | 'disabled';
  /** AGENTAUTH_HEAP_GROWTH_PERCENT is not usable (nothing was applied): the start command refuses it. */
  error?: string;
}

/** Whether the operator sized the heap (`--max-old-space-size`, on the command line or in NODE_OPTIONS): V8's policy then stands. */
export function operatorSizedHeap(env: NodeJS.ProcessEnv, execArgv: readonly string[] = []): boolean {
  return OPERATOR_HEAP_FLAGS.test(nodeOptionsText(execArgv, env));
}

/** AGENTAUTH_HEAP_GROWTH_PERCENT read (default 100), or why it is refused (a string: `start` exits 2 with it). */
export function heapGrowthPercent(env: NodeJS.ProcessEnv): number | string {
  const raw = env.AGENTAUTH_HEAP_GROWTH_PERCENT;
  if (raw === undefined || raw === '') return DEFAULT_HEAP_GROWTH_PERCENT;
  if (!/^\d+$/.test(raw) || Number(raw) > 300) {
    return `AGENTAUTH_HEAP_GROWTH_PERCENT: must be a whole number from 0 to 300 (0 leaves V8's own policy), not ${JSON.stringify(raw.slice(0, 20))}`;
  }
  return Number(raw);
}

/**
 * Caps the old generation's growth for this process (`AGENTAUTH_HEAP_GROWTH_PERCENT`, default 100; 0 leaves V8's own
 * adaptive policy), unless the operator sized the heap with `--max-old-space-size` (on the command line or in
 * NODE_OPTIONS), whose limit V8 then scales its growth to.
 */
export function applyHeapPolicy(env: NodeJS.ProcessEnv = process.env, execArgv: readonly string[] = process.execArgv): HeapPolicy {
  const percent = heapGrowthPercent(env);
  if (typeof percent === 'string') return { error: percent };
  if (percent === 0) return { left: 'disabled' };
  if (operatorSizedHeap(env, execArgv)) return { left: 'operator-flags' };
  setFlagsFromString(`--heap-growing-percent=${percent}`);
  return { growthPercent: percent };
}

/**
 * Applied when this module is evaluated, for `agentauth start` (and so in every cluster worker, which runs the same
 * command): server/cli.ts imports it first, so the policy is in place before the rest of agentauth is loaded. V8 sets
 * the next limit at every full collection, and the first one runs while the modules load; a policy applied after it
 * would leave that first limit (about four times the heap of a half-loaded process) standing until the next one.
 */
export const heapPolicy: HeapPolicy | undefined = process.argv[2] === 'start' ? applyHeapPolicy() : undefined;
