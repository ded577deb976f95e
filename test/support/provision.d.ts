export const CHROMIUM_PATH: string;
export type ChromiumPlan =
  | { action: 'none' }
  | { action: 'install'; commands: string[][]; env: Record<string, string> }
  | { action: 'stop'; message: string };
export function chromiumAction(facts: { chromiumPresent: boolean; uid: number | undefined; aptGetPresent: boolean }): ChromiumPlan;
export function onPath(name: string, path?: string): boolean;
export function provision(options?: { chromiumPath?: string; uid?: number | undefined; path?: string | undefined; write?: (line: string) => void }): number;
