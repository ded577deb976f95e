export interface FerretdbProcess {
  port: number;
  dir: string;
  pid: number | undefined;
  uri: string;
  stop(): Promise<void>;
}
export function ferretdbBinary(): string;
export function freePort(): Promise<number>;
export function startFerretdb(options?: { bin?: string; port?: number; dir?: string }): Promise<FerretdbProcess>;
