// The baseline process of the reconcile benchmark: the naive run (../reconcile/naive-reconcile.ts)
// with the project's Moodle client sending one item per call, configured from BENCH_SERVICE_ENV.
import os from 'node:os';
import pino from 'pino';
import { parseConfig } from '../../../src/config';
import { createDatabase } from '../../../src/db/database';
import { MoodleClient } from '../../../src/moodle/moodle-client';
import { ReconcileRepository } from '../../../src/reconcile/reconcile-repository';
import { RequestLifecycle } from '../../../src/requests/request-lifecycle';
import { RequestRepository } from '../../../src/requests/request-repository';
import { runNaiveReconcile, type NaiveReconcileResult } from '../reconcile/naive-reconcile';
import { peakRssBytes, runWorker, serveWorker } from '../support/worker';

export interface NaiveReconcileRun extends NaiveReconcileResult {
  peakRssBytes: number;
}

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const { url, token, parentRoleId, timeoutMs, retries } = config.moodle;
  if (!url || !token || parentRoleId === undefined) throw new Error('the naive run needs MOODLE_URL, MOODLE_TOKEN and MOODLE_PARENT_ROLE_ID');
  const db = createDatabase(config.database, { logger: pino({ level: 'silent' }) });
  const lifecycle = new RequestLifecycle(db, new RequestRepository(config.authTable));
  const moodle = new MoodleClient({ url, token, timeoutMs, retries, batchSize: 1 });
  serveWorker(
    {
      run: async (params: { limit?: number }): Promise<NaiveReconcileRun> => {
        const result = await runNaiveReconcile(new ReconcileRepository(db, config.authTable), lifecycle, moodle, { parentRoleId, ...(params.limit ? { limit: params.limit } : {}) });
        return { ...result, peakRssBytes: peakRssBytes() };
      },
    },
    () => db.destroy(),
  );
}

runWorker(main);
