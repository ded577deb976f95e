export interface FerretdbProcess {
  port: number;
  dir: string;
  pid: number | undefined;
  uri: string;
  /** SIGTERM (after SIGCONT if paused); resolves once exited. */
  stop(): Promise<void>;
  /**
   * SIGSTOP, resolved once every thread has stopped (kill returns before that, and on a loaded machine the other
   * threads go on answering for milliseconds): the database hangs; the kernel still accepts connections, nothing is answered.
   */
  pause(): Promise<void>;
  /** SIGCONT. */
  resume(): void;
  /** SIGKILL (a crash); resolves once exited. Restart with startFerretdb({ port, dir }). */
  kill(): Promise<void>;
}
export function ferretdbBinary(): string;
/** The state letter of each thread of `pid` (R, S, D, T, ...), from /proc/<pid>/task. */
export function threadStates(pid: number): string[];
export const PORT_BASE: number;
export const PORT_SLICE: number;
export function portSlice(): { first: number; size: number };
export function freePort(): Promise<number>;
export function startFerretdb(options?: { bin?: string; port?: number; dir?: string }): Promise<FerretdbProcess>;
