#!/usr/bin/env node
/**
 * The `agentauth` command. This entry loads only what has to run before the rest of agentauth is even parsed: loading
 * the command's modules (oidc-provider, the stores, the CLI) takes most of a second, and ES modules are all loaded
 * before any of them runs, so anything imported statically next to them would run only after that.
 */
// First: a Node.js older than 22 stops here with one line.
import './cli-preflight.js';
// Then: for `start`, re-executes this process with Node's AsyncContextFrame when it is off (server/async-context.ts),
// before the heavy modules are loaded, so that they are loaded once.
import './async-context.js';
// Then, in the process that will serve: `start` holds SIGTERM and SIGINT from here on (server/signal-hold.ts).
import './signal-hold.js';
// Then: sets V8's heap growth for `start` before the rest of agentauth loads (server/heap-policy.ts).
import './heap-policy.js';

await import('./cli-program.js');
