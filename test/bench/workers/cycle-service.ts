// The process under test in the cycle benchmark: the real provisioning cycle, from createServices
// with the configuration in BENCH_SERVICE_ENV, run once as the CLI's "cycle" command runs it.
// Database queries are counted through knex's 'query' event.
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import type { CycleCounts, CycleState, CycleStep } from '../../../src/provisioning/cycle-repository';
import { createServices } from '../../../src/services';
import { peakRssBytes, runWorker, serveWorker } from '../support/worker';

export interface ServiceCycleRun {
  wallMs: number;
  queries: number;
  state: CycleState;
  counts: CycleCounts;
  error: string | null;
  peakRssBytes: number;
  /** Wall time per step, from the cycle's own progress sampled every few milliseconds. */
  stepMs: Partial<Record<CycleStep, number>>;
}

const STEP_SAMPLE_MS = 5;

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const services = createServices(config);
  let queries = 0;
  services.db.on('query', () => {
    queries += 1;
  });
  serveWorker(
    {
      run: async (): Promise<ServiceCycleRun> => {
        queries = 0;
        const stepMs: Partial<Record<CycleStep, number>> = {};
        let last = performance.now();
        const sample = setInterval(() => {
          const now = performance.now();
          // Before the cycle has an id it is starting; after it lets go of its progress, finishing.
          const step = services.cycle.current()?.step ?? (Object.keys(stepMs).length > 1 ? 'done' : 'starting');
          stepMs[step] = (stepMs[step] ?? 0) + (now - last);
          last = now;
        }, STEP_SAMPLE_MS);
        const started = performance.now();
        const summary = await services.cycle.run('manual', 'bench');
        const wallMs = performance.now() - started;
        clearInterval(sample);
        return { wallMs, queries, state: summary.state, counts: summary.counts, error: summary.error, peakRssBytes: peakRssBytes(), stepMs };
      },
    },
    () => services.close(),
  );
}

runWorker(main);
