export interface FerretdbProcess {
  port: number;
  dir: string;
  pid: number | undefined;
  uri: string;
  /** SIGTERM (after SIGCONT if paused); resolves once exited. */
  stop(): Promise<void>;
  /** SIGSTOP: the database hangs; connections are still accepted by the kernel but nothing is answered. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** SIGKILL (a crash); resolves once exited. Restart with startFerretdb({ port, dir }). */
  kill(): Promise<void>;
}
export function ferretdbBinary(): string;
export function freePort(): Promise<number>;
export function startFerretdb(options?: { bin?: string; port?: number; dir?: string }): Promise<FerretdbProcess>;
