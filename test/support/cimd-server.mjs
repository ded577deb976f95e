// TEST-ONLY entry point: starts agentauth in this process, like `agentauth start`, but hands the client ID metadata
// document fetcher the test switch (an extra trusted CA, a name→address map instead of DNS, and addresses it may
// connect to although they are special-use) from argv[2]. The shipped CLI (server/cli.ts) has no way to pass these:
// they exist only as an in-process argument of start()/boot(), which no configuration file or environment variable
// reaches. This file is under test/, outside the build (tsconfig.build.json), and nothing in server/ imports it.
import { loadConfig } from '../../dist/server/config.js';
import { createLogger } from '../../dist/server/logger.js';
import { start } from '../../dist/server/start.js';

const overrides = JSON.parse(process.argv[2] ?? '{}');
const config = loadConfig();
const log = createLogger(config.logLevel);
const hosts = overrides.hosts ?? {};
const running = await start(config, log, {
  clientMetadataTest: {
    ...(overrides.ca ? { ca: overrides.ca } : {}),
    resolve: async (name) => {
      const address = hosts[name];
      if (!address) throw new Error(`test resolver: unknown name ${name}`);
      return [{ address, family: address.includes(':') ? 6 : 4 }];
    },
    allowAddresses: overrides.allowAddresses ?? [],
  },
});
const stop = () => running.shutdown().then(() => process.exit(0), () => process.exit(1));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
