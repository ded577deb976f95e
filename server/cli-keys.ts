import type { Command } from 'commander';

/** `agentauth keys list|rotate|retire|export`, `agentauth verify` (being written). */
export function registerKeyCommands(_program: Command): void {}
