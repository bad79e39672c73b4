// The service side of the intake benchmark, in its own process: the real app, built and started
// as src/server.ts does it (createServices + startServer), with the configuration the parent
// passes in BENCH_SERVICE_ENV. It also counts the database statements it sends, and profiles its
// own CPU between 'startProfile' and 'stopProfile' (node:inspector), for the report's causes.
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import { startServer } from '../../../src/server';
import { createServices } from '../../../src/services';
import type { CpuProfile } from '../support/cpu-causes';
import { runWorker, serveHttpWorker } from '../support/worker';

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  // data/ (the mail outbox directory) resolves under a scratch directory, not the repository.
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const services = createServices(config);
  let statements = 0;
  services.db.on('query', () => {
    statements += 1;
  });
  const server = await startServer(services);
  const inspector = new Session();
  inspector.connect();
  serveHttpWorker(
    server,
    {
      /** Database statements sent so far (knex query events: BEGIN and COMMIT included). */
      statements: () => ({ statements }),
      startProfile: async () => {
        await inspector.post('Profiler.enable');
        await inspector.post('Profiler.start');
        return {};
      },
      stopProfile: async () => {
        const { profile } = (await inspector.post('Profiler.stop')) as { profile: CpuProfile };
        await inspector.post('Profiler.disable');
        return profile;
      },
    },
    async () => {
      inspector.disconnect();
      await services.close();
    },
  );
}

runWorker(main);
