// The service side of the intake benchmark, in its own process: the real app, built and started
// as src/server.ts does it (createServices + startServer), with the configuration the parent
// passes in BENCH_SERVICE_ENV.
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import { startServer } from '../../../src/server';
import { createServices } from '../../../src/services';
import { runWorker, serveHttpWorker } from '../support/worker';

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  // data/ (the mail outbox directory) resolves under a scratch directory, not the repository.
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const services = createServices(config);
  const server = await startServer(services);
  serveHttpWorker(server, {}, () => services.close());
}

runWorker(main);
