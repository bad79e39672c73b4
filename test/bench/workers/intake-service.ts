// The service side of the intake benchmark, in its own process: the real app, built and started
// as src/server.ts does it (createServices + startServer), with the configuration the parent
// passes in BENCH_SERVICE_ENV.
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import { startServer } from '../../../src/server';
import { createServices } from '../../../src/services';
import { peakRssBytes, serveWorker } from '../support/worker';

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  // data/ (the mail outbox directory) resolves under a scratch directory, not the repository.
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const services = createServices(config);
  const server = await startServer(services);
  serveWorker(
    {
      address: () => ({ port: (server.address() as AddressInfo).port }),
      memory: () => ({ peakRssBytes: peakRssBytes() }),
      cpu: () => process.cpuUsage(),
    },
    async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await services.close();
    },
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
