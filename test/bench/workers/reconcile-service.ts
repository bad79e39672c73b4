// The process under test in the reconcile benchmark: the real reconcile run, from createServices
// with the configuration in BENCH_SERVICE_ENV, run once as the CLI's "reconcile" command runs it.
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import type { ReconcileSummary } from '../../../src/reconcile/reconciliation';
import { createServices } from '../../../src/services';
import { peakRssBytes, runWorker, serveWorker } from '../support/worker';

export interface ServiceReconcileRun {
  wallMs: number;
  queries: number;
  summary: Omit<ReconcileSummary, 'findings'> & { findings: number };
  peakRssBytes: number;
}

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  const services = createServices(parseConfig(env, { cwd: os.tmpdir() }));
  let queries = 0;
  services.db.on('query', () => {
    queries += 1;
  });
  serveWorker(
    {
      run: async (): Promise<ServiceReconcileRun> => {
        queries = 0;
        const started = performance.now();
        const summary = await services.reconcile.run('cli', 'bench');
        const wallMs = performance.now() - started;
        return { wallMs, queries, summary: { ...summary, findings: summary.findings.length }, peakRssBytes: peakRssBytes() };
      },
    },
    () => services.close(),
  );
}

runWorker(main);
