import { rmSync } from 'node:fs';

export default async function globalTeardown() {
  await globalThis.__agentauthFerretdb?.stop();
  // The run's temporary directory (global-setup.js); every server the tests started has stopped by now.
  if (globalThis.__agentauthRunDir) rmSync(globalThis.__agentauthRunDir, { recursive: true, force: true });
}
