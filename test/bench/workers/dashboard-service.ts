// The service side of the dashboard benchmark, in its own process: the real app (createServices +
// createApp) listening on loopback, with the configuration the parent passes in BENCH_SERVICE_ENV.
// The database is already migrated and seeded; the parent adds the staff account through here so
// that it goes through the accounts service (argon2 and all) exactly as the CLI does.
import type { Server } from 'node:http';
import os from 'node:os';
import { createApp } from '../../../src/app';
import { parseConfig } from '../../../src/config';
import { createServices } from '../../../src/services';
import { runWorker, serveHttpWorker } from '../support/worker';

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  // data/ (the mail outbox directory) resolves under a scratch directory, not the repository.
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const services = createServices(config);
  const app = createApp(services);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
  serveHttpWorker(
    server,
    {
      addStaff: async (params: { username: string; password: string }) => {
        await services.staffAccounts.addStaff({ username: params.username, displayName: 'Bench Office', password: params.password });
        return { username: params.username };
      },
    },
    () => services.close(),
  );
}

runWorker(main);
