// The process under test in the cycle benchmark: the real provisioning cycle, from createServices
// with the configuration in BENCH_SERVICE_ENV, run once as the CLI's "cycle" command runs it.
// Database queries are counted through knex's 'query' event; the time spent waiting for Moodle
// (any call in flight, answer read to its end) around the Moodle client's HTTP round trip.
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import type { CycleCounts, CycleState, CycleStep } from '../../../src/provisioning/cycle-repository';
import { nodeHttpFetch } from '../../../src/moodle/node-http-fetch';
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
  /** Wall time during which at least one Moodle call was waiting for its answer. */
  moodleWaitMs: number;
  /** CPU time of this process during the cycle. */
  cpuMs: number;
  /** process.memoryUsage() when its RSS was highest during the cycle (sampled with the steps). */
  memoryAtPeak: NodeJS.MemoryUsage & { step: CycleStep };
}

/**
 * The Moodle client's own HTTP round trip, wrapped to add up the time any call is in flight. It
 * resolves once the answer is read to its last byte, so the wait includes reading it.
 */
function measureMoodleWaits(): { fetch: typeof fetch; waitMs: () => number; reset: () => void } {
  let inFlight = 0;
  let since = 0;
  let waited = 0;
  const measured: typeof fetch = async (input, init) => {
    if (inFlight++ === 0) since = performance.now();
    try {
      return await nodeHttpFetch(input, init);
    } finally {
      if (--inFlight === 0) waited += performance.now() - since;
    }
  };
  return { fetch: measured, waitMs: () => waited, reset: () => (waited = 0) };
}

const STEP_SAMPLE_MS = 5;

async function main(): Promise<void> {
  const env = JSON.parse(process.env.BENCH_SERVICE_ENV ?? '{}') as Record<string, string>;
  const config = parseConfig(env, { cwd: os.tmpdir() });
  const waits = measureMoodleWaits();
  const services = createServices(config, { moodleFetch: waits.fetch });
  let queries = 0;
  services.db.on('query', () => {
    queries += 1;
  });
  serveWorker(
    {
      run: async (): Promise<ServiceCycleRun> => {
        queries = 0;
        waits.reset();
        const cpu = process.cpuUsage();
        const stepMs: Partial<Record<CycleStep, number>> = {};
        let last = performance.now();
        let memoryAtPeak: ServiceCycleRun['memoryAtPeak'] = { ...process.memoryUsage(), step: 'starting' };
        const sample = setInterval(() => {
          const now = performance.now();
          // Before the cycle has an id it is starting; after it lets go of its progress, finishing.
          const step = services.cycle.current()?.step ?? (Object.keys(stepMs).length > 1 ? 'done' : 'starting');
          const memory = process.memoryUsage();
          if (memory.rss > memoryAtPeak.rss) memoryAtPeak = { ...memory, step };
          stepMs[step] = (stepMs[step] ?? 0) + (now - last);
          last = now;
        }, STEP_SAMPLE_MS);
        const started = performance.now();
        const summary = await services.cycle.run('manual', 'bench');
        const wallMs = performance.now() - started;
        clearInterval(sample);
        const used = process.cpuUsage(cpu);
        return {
          wallMs,
          queries,
          state: summary.state,
          counts: summary.counts,
          error: summary.error,
          peakRssBytes: peakRssBytes(),
          stepMs,
          moodleWaitMs: waits.waitMs(),
          cpuMs: (used.user + used.system) / 1000,
          memoryAtPeak,
        };
      },
    },
    () => services.close(),
  );
}

runWorker(main);
