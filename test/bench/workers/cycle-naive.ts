// The baseline process of the cycle benchmark: the naive cycle (../cycle/naive-cycle.ts) with the
// project's Moodle client sending one item per call, configured from BENCH_SERVICE_ENV like the
// service. Database queries are counted through knex's 'query' event.
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import { createDatabase } from '../../../src/db/database';
import { MoodleClient } from '../../../src/moodle/moodle-client';
import { runNaiveCycle, type NaiveCycleResult } from '../cycle/naive-cycle';
import { peakRssBytes, runWorker, serveWorker } from '../support/worker';

export interface NaiveCycleRun extends NaiveCycleResult {
  peakRssBytes: number;
}

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const { url, token, parentRoleId, timeoutMs, retries } = config.moodle;
  if (!url || !token || parentRoleId === undefined) throw new Error('the naive cycle needs MOODLE_URL, MOODLE_TOKEN and MOODLE_PARENT_ROLE_ID');
  const db = createDatabase(config.database);
  let queries = 0;
  db.on('query', () => {
    queries += 1;
  });
  const moodle = new MoodleClient({ url, token, timeoutMs, retries, batchSize: 1 });
  serveWorker(
    {
      run: async (params: { limit?: number }): Promise<NaiveCycleRun> => {
        const result = await runNaiveCycle(db, moodle, { parentRoleId, countQueries: () => queries, ...(params.limit ? { limit: params.limit } : {}) });
        return { ...result, peakRssBytes: peakRssBytes() };
      },
    },
    () => db.destroy(),
  );
}

runWorker(main);
