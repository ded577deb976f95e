import type { Command } from 'commander';

/** `agentauth audit tail|export|verify` (being written). */
export function registerAuditCommands(_program: Command): void {}
