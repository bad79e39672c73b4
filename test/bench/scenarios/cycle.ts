// Provisioning cycle: approved requests × 2 children against the Moodle test double answering
// each call after 25 ms, the real cycle (batched) against a naive one-call-per-item cycle.
// The double runs in this process and counts the calls; each cycle runs in its own process.
import os from 'node:os';
import { parseConfig } from '../../../src/config';
import type { CycleStep } from '../../../src/provisioning/cycle-repository';
import { DEFAULT_CHUNK_SIZE } from '../../../src/provisioning/provisioning-cycle';
import type { BenchDatabase } from '../support/bench-database';
import { BENCH_AUTH_TABLE } from '../support/bench-database';
import { callCounts, parentRoleAssignments, serviceEnvironment, watchDouble, type CallCounts } from '../support/double-runs';
import { addPupils, CHILDREN_PER_REQUEST, seedApprovedRequests } from '../cycle/seed';
import { decimal, integer, megabytes, seconds, table, timesFewer, yesNo } from '../support/format';
import { check, type BenchContext, type BenchScenario, type ReportSection, type TargetResult } from '../support/scenario';
import { medianByPeakRss, peakRssRange, START_NODE_FLAGS, startWorker } from '../support/worker';
import type { NaiveCycleRun } from '../workers/cycle-naive';
import type { ServiceCycleRun } from '../workers/cycle-service';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../../support/moodle-double';

const LATENCY_MS = 25;
const SETTINGS = {
  full: { sizes: [1000, 10_000], naiveSample: 1000, runs: 3 },
  quick: { sizes: [100, 400], naiveSample: 100, runs: 1 },
} as const;
const CALLS_TARGET = 20;
const SPEED_TARGET = 10;
/** The service's own time (all but waiting for Moodle) at most this share of the cycle's wall time, at the largest size. */
const OWN_TIME_TARGET = 0.1;
/** Peak RSS at the largest size at most this much above the smallest's. */
const FLAT_MEMORY_TARGET = 0.1;

interface Figures {
  wallMs: number;
  /** The service only: wall time per cycle step. */
  stepMs?: ServiceCycleRun['stepMs'];
  /** The service only: wall time with a Moodle call in flight, the process's CPU time, memory at its peak, the cycle's counts. */
  moodleWaitMs?: number;
  cpuMs?: number;
  memoryAtPeak?: ServiceCycleRun['memoryAtPeak'];
  counts?: ServiceCycleRun['counts'];
  calls: CallCounts;
  queries: number;
  doubleCpuMs: number;
  peakRssBytes: number;
}

async function countWhere(bench: BenchDatabase, tableName: string, where: Record<string, unknown>): Promise<number> {
  const row = (await bench.db(tableName).where(where).count({ n: '*' }).first()) as { n: number | string } | undefined;
  return Number(row?.n ?? 0);
}

/** A fresh database with `size` approved requests whose parents Moodle's sync has created. */
async function prepare(context: BenchContext, moodle: MoodleDouble, size: number, label: string): Promise<BenchDatabase> {
  const bench = await context.databases.create(`cycle_${label}_${size}`);
  context.log(`cycle ${integer(size)}/${label}: seeding ${integer(size)} approved requests × ${CHILDREN_PER_REQUEST} children`);
  await seedApprovedRequests(bench.db, size);
  context.log(`cycle ${integer(size)}/${label}: Moodle's user sync (test double) creates the parents; adding the pupils`);
  moodle.setFaults({ latencyMs: 0 });
  await moodle.sync(bench.db, BENCH_AUTH_TABLE);
  addPupils(moodle.state, size);
  const parents = [...moodle.state.users.values()].filter((u) => u.auth === 'db' && !u.suspended && u.username.endsWith('@bench.example.org'));
  check(parents.length === size, `the sync created ${parents.length} parents, expected ${size}`);
  // Each cycle starts from a Moodle where no Parent role is assigned yet.
  moodle.state.assignments = [];
  moodle.resetCounts();
  moodle.setFaults({ latencyMs: LATENCY_MS });
  return bench;
}

async function runService(context: BenchContext, moodle: MoodleDouble, size: number, nodeFlags: readonly string[] = START_NODE_FLAGS): Promise<Figures> {
  const bench = await prepare(context, moodle, size, nodeFlags === START_NODE_FLAGS ? 'service' : 'defaults');
  const worker = await startWorker('cycle-service.ts', {
    env: { NODE_ENV: 'production', BENCH_SERVICE_ENV: JSON.stringify(serviceEnvironment(bench, moodle)) },
    nodeFlags,
    verbose: context.verbose,
  });
  try {
    context.log(`cycle ${integer(size)}/service: running the provisioning cycle`);
    const { value: run, doubleCpuMs } = await watchDouble(context, `cycle ${integer(size)}/service`, moodle, () => worker.call<ServiceCycleRun>('run'));
    const calls = callCounts(moodle);
    check(run.state === 'succeeded', `the cycle ended ${run.state}: ${run.error ?? ''}`);
    check(run.counts.provisioned === size, `the cycle provisioned ${run.counts.provisioned} of ${size} requests`);
    check(run.counts.childrenLinked === CHILDREN_PER_REQUEST * size, `the cycle linked ${run.counts.childrenLinked} children`);
    check(run.counts.moodleCalls === calls.total, `the cycle counted ${run.counts.moodleCalls} Moodle calls, the double ${calls.total}`);
    check((await countWhere(bench, 'requests', { status: 'provisioned' })) === size, 'not every request is provisioned in the database');
    check((await countWhere(bench, 'request_children', { link_state: 'linked' })) === CHILDREN_PER_REQUEST * size, 'not every child is linked in the database');
    check(parentRoleAssignments(moodle) === CHILDREN_PER_REQUEST * size, `Moodle holds ${parentRoleAssignments(moodle)} Parent role assignments`);
    const figures = {
      wallMs: run.wallMs,
      stepMs: run.stepMs,
      moodleWaitMs: run.moodleWaitMs,
      cpuMs: run.cpuMs,
      memoryAtPeak: run.memoryAtPeak,
      counts: run.counts,
      calls,
      queries: run.queries,
      doubleCpuMs,
      peakRssBytes: run.peakRssBytes,
    };
    context.log(`cycle ${integer(size)}/service: ${seconds(run.wallMs)}, ${calls.total} Moodle calls, ${integer(run.queries)} queries, peak RSS ${megabytes(run.peakRssBytes)}`);
    return figures;
  } finally {
    await worker.stop();
    await bench.drop();
  }
}

interface NaiveFigures {
  measured: Figures & { processed: number; loadMs: number; loopMs: number };
  /** Equal to measured when every request was processed. */
  estimated: Figures;
  extrapolated: boolean;
}

async function runNaive(context: BenchContext, moodle: MoodleDouble, size: number, sample: number): Promise<NaiveFigures> {
  const bench = await prepare(context, moodle, size, 'naive');
  const worker = await startWorker('cycle-naive.ts', {
    env: { NODE_ENV: 'production', BENCH_SERVICE_ENV: JSON.stringify(serviceEnvironment(bench, moodle)) },
    verbose: context.verbose,
  });
  const limit = Math.min(size, sample);
  try {
    context.log(
      `cycle ${integer(size)}/naive: running the naive cycle over ${limit === size ? 'every request' : `the first ${integer(limit)} requests`} ` +
        `(at least ${integer((limit * 3 * LATENCY_MS) / 1000)} s: three ${LATENCY_MS} ms calls per request)`,
    );
    const { value: run, doubleCpuMs } = await watchDouble(context, `cycle ${integer(size)}/naive`, moodle, () =>
      worker.call<NaiveCycleRun>('run', limit === size ? {} : { limit }),
    );
    const calls = callCounts(moodle);
    check(run.due === size, `the naive cycle found ${run.due} due requests, expected ${size}`);
    check(run.processed === limit && run.provisioned === limit, `the naive cycle provisioned ${run.provisioned} of ${limit}`);
    check((await countWhere(bench, 'requests', { status: 'provisioned' })) === limit, 'the naive cycle did not record every request');
    check((await countWhere(bench, 'request_children', { link_state: 'linked' })) === CHILDREN_PER_REQUEST * limit, 'the naive cycle did not record every child');
    check(parentRoleAssignments(moodle) === CHILDREN_PER_REQUEST * limit, `Moodle holds ${parentRoleAssignments(moodle)} Parent role assignments`);
    check(calls.lookUp === limit && calls.assign === CHILDREN_PER_REQUEST * limit, 'the naive cycle did not make one call per item');

    const measured = {
      wallMs: run.loadMs + run.loopMs,
      calls,
      queries: run.loadQueries + run.loopQueries,
      doubleCpuMs,
      peakRssBytes: run.peakRssBytes,
      processed: run.processed,
      loadMs: run.loadMs,
      loopMs: run.loopMs,
    };
    // Per-request work scales linearly; reading the due work is done once, for all of it, either way.
    const factor = size / limit;
    const estimated: Figures = {
      wallMs: run.loadMs + run.loopMs * factor,
      calls: { check: calls.check, lookUp: calls.lookUp * factor, assign: calls.assign * factor, total: calls.total * factor },
      queries: run.loadQueries + run.loopQueries * factor,
      doubleCpuMs: doubleCpuMs * factor,
      peakRssBytes: run.peakRssBytes,
    };
    context.log(
      `cycle ${integer(size)}/naive: ${seconds(measured.wallMs)} for ${integer(limit)} requests, ${integer(calls.total)} Moodle calls` +
        (factor > 1 ? `; ${seconds(estimated.wallMs)} and ${integer(estimated.calls.total)} calls extrapolated to ${integer(size)}` : ''),
    );
    return { measured, estimated, extrapolated: factor > 1 };
  } finally {
    await worker.stop();
    await bench.drop();
  }
}

interface SizeResult {
  size: number;
  /** The run of serviceRuns with the median peak RSS. */
  service: Figures;
  serviceRuns: Figures[];
  naive: NaiveFigures;
  /** The largest size only: the service again with Node's default flags instead of npm start's. */
  defaults?: Figures;
}

function targetsFor(r: SizeResult): TargetResult[] {
  const label = `Cycle ${integer(r.size)} × ${CHILDREN_PER_REQUEST}`;
  const note = r.naive.extrapolated ? ' (naive extrapolated from a sample)' : '';
  const callsRatio = r.naive.estimated.calls.total / r.service.calls.total;
  const speedRatio = r.naive.estimated.wallMs / r.service.wallMs;
  const calls: TargetResult = {
    name: `${label}: Moodle calls`,
    target: `≥ ${CALLS_TARGET}× fewer than the naive cycle`,
    measured: `${integer(r.service.calls.total)} vs ${integer(r.naive.estimated.calls.total)}: ${timesFewer(r.service.calls.total, r.naive.estimated.calls.total)}${note}`,
    met: callsRatio >= CALLS_TARGET,
  };
  if (!calls.met) calls.shortfall = `${decimal(callsRatio)}× instead of ${CALLS_TARGET}×`;
  const speed: TargetResult = {
    name: `${label}: wall time`,
    target: `≥ ${SPEED_TARGET}× faster than the naive cycle`,
    measured: `${seconds(r.service.wallMs)} vs ${seconds(r.naive.estimated.wallMs)}: ${decimal(speedRatio)}× faster${note}`,
    met: speedRatio >= SPEED_TARGET,
  };
  if (!speed.met) speed.shortfall = `${decimal(speedRatio)}× instead of ${SPEED_TARGET}×; the cycle would need to finish in ${seconds(r.naive.estimated.wallMs / SPEED_TARGET)}`;
  return [calls, speed];
}

function rowsFor(r: SizeResult): Array<Array<string | number>> {
  const size = `${integer(r.size)} × ${CHILDREN_PER_REQUEST}`;
  const row = (name: string, f: Figures, approx = false) => {
    const n = (v: number) => `${approx ? '≈ ' : ''}${integer(v)}`;
    return [
      size,
      name,
      `${approx ? '≈ ' : ''}${seconds(f.wallMs)}`,
      integer(f.calls.check),
      n(f.calls.lookUp),
      n(f.calls.assign),
      n(f.calls.total),
      n(f.queries),
      `${approx ? '≈ ' : ''}${seconds(f.doubleCpuMs)}`,
      megabytes(f.peakRssBytes),
    ];
  };
  const rows = [row('the service', r.service)];
  if (r.naive.extrapolated) {
    rows.push(row(`naive, measured on the first ${integer(r.naive.measured.processed)}`, r.naive.measured));
    rows.push(row(`naive, extrapolated to ${integer(r.size)}`, r.naive.estimated, true));
  } else {
    rows.push(row('naive', r.naive.estimated));
  }
  const e = r.naive.estimated;
  rows.push([
    size,
    '**service vs naive**',
    `**${decimal(e.wallMs / r.service.wallMs)}× faster**`,
    '',
    timesFewer(r.service.calls.lookUp, e.calls.lookUp),
    timesFewer(r.service.calls.assign, e.calls.assign),
    `**${timesFewer(r.service.calls.total, e.calls.total)}**`,
    r.service.queries <= e.queries ? timesFewer(r.service.queries, e.queries) : `${decimal(r.service.queries / e.queries)}× more`,
    '',
    '',
  ]);
  return rows;
}

/** The wall time the cycle cannot beat: every Moodle call's latency, `concurrency` calls at a time. */
function limitMs(r: SizeResult, concurrency: number): number {
  return (r.service.calls.total * LATENCY_MS) / concurrency;
}

function ownMs(f: Figures): number {
  return Math.max(0, f.wallMs - (f.moodleWaitMs ?? 0));
}

function limitRows(results: SizeResult[], concurrency: number): Array<Array<string | number>> {
  return results.map((r) => {
    const limit = limitMs(r, concurrency);
    const own = ownMs(r.service);
    return [
      `${integer(r.size)} × ${CHILDREN_PER_REQUEST}`,
      integer(r.service.calls.total),
      concurrency,
      seconds(limit),
      seconds(r.service.wallMs),
      `${decimal(r.service.wallMs / limit)}×`,
      seconds(r.service.moodleWaitMs ?? 0),
      seconds(own),
      percent(own / r.service.wallMs),
      seconds(r.service.cpuMs ?? 0),
    ];
  });
}

function percent(share: number): string {
  return `${(share * 100).toFixed(1)} %`;
}

/** Own time at the largest size, and memory at the largest against the smallest. */
function serviceTargets(results: SizeResult[]): TargetResult[] {
  const largest = results.at(-1);
  const smallest = results[0];
  if (!largest || !smallest) return [];
  const label = `Cycle ${integer(largest.size)} × ${CHILDREN_PER_REQUEST}`;
  const own = ownMs(largest.service);
  const share = own / largest.service.wallMs;
  const ownTarget: TargetResult = {
    name: `${label}: the service's own time`,
    target: `≤ ${percent(OWN_TIME_TARGET)} of the wall time (all but waiting for Moodle)`,
    measured: `${seconds(own)} of ${seconds(largest.service.wallMs)}: ${percent(share)}`,
    met: share <= OWN_TIME_TARGET,
  };
  if (!ownTarget.met) ownTarget.shortfall = `${seconds(own - OWN_TIME_TARGET * largest.service.wallMs)} too much`;
  const targets = [ownTarget];
  if (largest !== smallest) {
    const growth = largest.service.peakRssBytes / smallest.service.peakRssBytes - 1;
    const memory: TargetResult = {
      name: `${label}: peak memory`,
      target: `within ${percent(FLAT_MEMORY_TARGET)} of the cycle at ${integer(smallest.size)}`,
      measured: `${megabytes(largest.service.peakRssBytes)} vs ${megabytes(smallest.service.peakRssBytes)}: ${growth >= 0 ? '+' : ''}${percent(growth)}`,
      met: growth <= FLAT_MEMORY_TARGET,
    };
    if (!memory.met) memory.shortfall = `${megabytes(largest.service.peakRssBytes - (1 + FLAT_MEMORY_TARGET) * smallest.service.peakRssBytes)} over`;
    targets.push(memory);
  }
  return targets;
}

const STEPS: Array<{ step: CycleStep; label: string }> = [
  { step: 'starting', label: 'starting (lock, cycle record)' },
  { step: 'checking', label: 'reading the due work, site check, first pupil look-ups' },
  { step: 'looking_up', label: 'look-ups (pupils after the first chunk, parents)' },
  { step: 'assigning', label: 'role assignments' },
  { step: 'recording', label: 'recording outcomes, reading the next chunk' },
  { step: 'done', label: 'finishing (counts, lock)' },
];

function stepRows(results: SizeResult[]): Array<Array<string | number>> {
  return results.map((r) => {
    const stepMs = r.service.stepMs ?? {};
    return [`${integer(r.size)} × ${CHILDREN_PER_REQUEST}`, ...STEPS.map(({ step }) => seconds(stepMs[step] ?? 0)), seconds(r.service.wallMs)];
  });
}

async function run(context: BenchContext): Promise<ReportSection> {
  const { naiveSample, runs } = SETTINGS[context.scale];
  const sizes = process.env.BENCH_CYCLE_SIZES ? process.env.BENCH_CYCLE_SIZES.split(',').map(Number) : SETTINGS[context.scale].sizes;
  const results: SizeResult[] = [];
  for (const size of sizes) {
    const moodle = await startMoodleDouble({ state: seedRecordedSite() });
    try {
      // The service's cycle runs `runs` times (fresh database and process each time); the run with
      // the median peak RSS gives the figures, and the report shows the range of the peaks.
      const serviceRuns: Figures[] = [];
      for (let i = 0; i < runs; i++) serviceRuns.push(await runService(context, moodle, size));
      const service = medianByPeakRss(serviceRuns);
      const defaults = size === sizes.at(-1) && sizes.length > 1 ? await runService(context, moodle, size, []) : undefined;
      const naive = await runNaive(context, moodle, size, naiveSample);
      results.push({ size, service, serviceRuns, naive, ...(defaults ? { defaults } : {}) });
    } finally {
      await moodle.close();
    }
  }

  const targets = [...results.flatMap(targetsFor), ...serviceTargets(results)];
  const { batchSize, concurrency } = parseConfig({}, { cwd: os.tmpdir() }).moodle;
  const extrapolated = results.filter((r) => r.naive.extrapolated);
  const body = [
    table(
      ['requests × children', 'cycle', 'wall time', 'site info', 'look-ups (pupils, parents)', 'role assignment calls', 'Moodle calls', 'DB queries', 'Moodle double CPU', 'peak RSS'],
      results.flatMap(rowsFor),
    ),
    '',
    ...targets.map((t) => `- ${t.name}, ${t.target}: ${t.measured} — ${yesNo(t.met)}${t.shortfall ? ` (${t.shortfall})` : ''}.`),
    '',
    `The service's wall time against its limit: every Moodle call waits ${LATENCY_MS} ms, and \`MOODLE_CONCURRENCY\` ` +
      `(${concurrency} by default) calls may wait at once, so no cycle can finish in less than calls × ${LATENCY_MS} ms ÷ ${concurrency}. ` +
      '*Waiting for Moodle* is the wall time during which at least one call was in flight (measured around the Moodle client\'s ' +
      'HTTP round trip, up to the last byte of the answer; it includes the double\'s own work on a call); the *service\'s own time* is ' +
      'the rest: reading the work, deciding, recording outcomes, audit events and mail, the report.',
    '',
    table(
      ['requests × children', 'Moodle calls', 'concurrency', 'limit', 'wall time', 'wall / limit', 'waiting for Moodle', "service's own time", 'own share', 'service CPU'],
      limitRows(results, concurrency),
    ),
    '',
    ...(runs > 1
      ? [
          `**Runs.** The service's cycle ran ${runs} times at each size, each time on a freshly seeded database in a fresh ` +
            'process; its figures above are those of the run with the median peak RSS. The peaks of the runs: ' +
            `${results.map((r) => `${integer(r.size)} × ${CHILDREN_PER_REQUEST}: ${peakRssRange(r.serviceRuns)}`).join('; ')}.\n`,
        ]
      : []),
    ...results
      .filter((r) => r.defaults)
      .map(
        (r) =>
          `**Memory.** The service runs with the Node flags of \`npm start\` (${START_NODE_FLAGS.map((f) => `\`${f}\``).join(' ') || 'none'}; see ` +
          '"Memory" in docs/operations.md). ' +
          `At ${integer(r.size)} requests it peaked at ${megabytes(r.service.peakRssBytes)}, with ` +
          `${megabytes(r.service.memoryAtPeak?.heapUsed ?? 0)} of V8 heap in use (live or not yet collected) and ` +
          `${megabytes(r.service.memoryAtPeak?.heapTotal ?? 0)} reserved at that moment (step "${r.service.memoryAtPeak?.step ?? '?'}"), ` +
          `using ${seconds(r.service.cpuMs ?? 0)} of CPU. Run again with Node's default flags, the same cycle peaked at ` +
          `${megabytes(r.defaults!.peakRssBytes)} (${megabytes(r.defaults!.memoryAtPeak?.heapUsed ?? 0)} of heap in use, ` +
          `${megabytes(r.defaults!.memoryAtPeak?.heapTotal ?? 0)} reserved) and used ${seconds(r.defaults!.cpuMs ?? 0)} of CPU. What the ` +
          'cycle holds does not grow with the work (it reads and does it a chunk at a time, and each chunk\'s report entries go to the ' +
          'cycle_outcomes table as they are recorded); with the defaults, V8 lets the garbage of a long run pile up in the old space ' +
          'before a full collection (it lets the old space grow to about four times what a full collection leaves), and the peak ' +
          'grows with the length of the run. `--optimize-for-size` makes V8 grow its heap far less, at the price of more frequent ' +
          'collections: the CPU figures above. What reaches the old space is about 15 KiB per request (V8\'s sampling heap profiler, ' +
          'objects freed by young-generation collections left out), down from about 29 KiB: the "account ready" mails are rendered ' +
          '100 at a time as they are queued, outcomes no longer read the chunk\'s children again, and mail rendering no longer merges ' +
          'object spreads (on Node 20 each such literal made new hidden classes in the old space). Tried with the defaults and ' +
          'measured without gain (3 runs per size each): chunks of 500 instead of 1,000 (155 MiB against 188 MiB), glibc with two ' +
          'malloc arenas (`MALLOC_ARENA_MAX=2`: 155 MiB against 193 MiB) and `--heap-growing-percent=50` (158 MiB against 181 MiB).\n',
      ),
    'Where the service\'s cycle spends its time, step by step (the cycle\'s own progress, sampled every 5 ms in its process):',
    '',
    table(['requests × children', ...STEPS.map((s) => s.label), 'total'], stepRows(results)),
    '',
    ...(extrapolated.length > 0
      ? [
          `**Extrapolated figures.** At ${extrapolated.map((r) => integer(r.size)).join(', ')} requests the naive cycle was not run to ` +
            `the end (it would take about ${extrapolated.map((r) => seconds(r.naive.estimated.wallMs)).join(', ')}): it read all the due ` +
            `work, processed the first ${integer(naiveSample)} requests, and its per-request time, calls, queries and double CPU were ` +
            'multiplied by the number of requests over the sample size; reading the due work is counted once. Every request costs it ' +
            'the same three calls, so its call counts are exact; its time assumes the later requests cost what the first ones did.',
          '',
        ]
      : []),
    '**Method.** A fresh MariaDB database per cycle holds the approved requests, each with two children matched to Moodle pupil ' +
      'accounts, and the parents\' auth rows (written in batches with the request repository\'s row mapping; the auth-table ' +
      'invariant is checked). The Moodle test double (`test/support/moodle-double.ts`) holds the recorded site plus the pupils, ' +
      'and its `sync` (auth_db\'s user sync) creates the parents from the auth table before each cycle. One double serves both ' +
      'cycles of a size, with its role assignments and counters cleared before each. Every call to the double then waits ' +
      `${LATENCY_MS} ms before it answers; the call columns are the double's own counters.`,
    '',
    '- *The service*: `createServices(config).cycle.run(\'manual\')` in its own process, with the default configuration ' +
      `(\`MOODLE_BATCH_SIZE\` ${batchSize}, \`MOODLE_CONCURRENCY\` ${concurrency}, no sync command): the due work read and done ` +
      `${integer(DEFAULT_CHUNK_SIZE)} requests at a time, one site check, pupil look-ups by id and parent look-ups by username ` +
      `${batchSize} per call, role assignments ${batchSize} per call, ${concurrency} calls at once, every outcome recorded through ` +
      'the request lifecycle (audit events, the "account ready" email queued, the cycle report).',
    '- *Naive* (`test/bench/cycle/naive-cycle.ts`): reads the due work with the same two queries, then per request one look-up ' +
      'call, one assignment call per child and one `UPDATE` per outcome (each child, then the request), through the same Moodle ' +
      'client sending one item per call. No lock, audit, email or report.',
    '- *Checks* (no figures without them): every request provisioned and every child linked in the database, the double holding ' +
      'exactly one Parent role assignment per child, and the service\'s own call count equal to the double\'s.',
    '- *DB queries* are knex `query` events in the cycle\'s process (transaction `BEGIN`/`COMMIT` included). *Moodle double CPU* ' +
      'is the bench process\'s CPU time during the cycle, nearly all of it the double answering; it is part of both wall times ' +
      'and runs on the other core. It grows with the size of the site: the double finds the context of each assignment by a ' +
      `linear search over every user's context, so with many users a call of ${batchSize} assignments takes it well over the ` +
      `${LATENCY_MS} ms, and both cycles pay that for every assignment.`,
  ].join('\n');

  return {
    title: 'Provisioning cycle against the Moodle test double',
    body,
    targets,
    peakMemory: results.flatMap((r) => [
      { label: `cycle ${integer(r.size)} × ${CHILDREN_PER_REQUEST}: the service`, rssBytes: r.service.peakRssBytes },
      ...(r.defaults ? [{ label: `cycle ${integer(r.size)} × ${CHILDREN_PER_REQUEST}: the service with Node's default flags`, rssBytes: r.defaults.peakRssBytes }] : []),
      {
        label: `cycle ${integer(r.size)} × ${CHILDREN_PER_REQUEST}: naive baseline${r.naive.extrapolated ? ` (first ${integer(r.naive.measured.processed)})` : ''}`,
        rssBytes: r.naive.measured.peakRssBytes,
      },
    ]),
  };
}

export const cycleScenario: BenchScenario = { id: 'cycle', run };
