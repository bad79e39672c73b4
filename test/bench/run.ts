// npm run bench: runs every benchmark scenario once against MariaDB on this machine and writes
// docs/benchmarks.md with the machine, the date and the figures of this run.
//
//   npm run bench                      the full run (about 10 minutes), writes docs/benchmarks.md
//   npm run bench -- --quick           small sizes to check the bench itself; writes a scratch file
//   npm run bench -- --only cycle      some scenarios only (comma-separated ids)
//   npm run bench -- --out FILE        write the report elsewhere
//   npm run bench -- --verbose         show the service's own log lines
//   npm run bench -- --compare OLD.md  print every figure beside the same figure in an earlier report
//                                      (read before this run writes its own, so docs/benchmarks.md works)
// BENCH_SCALE=quick is the same as --quick. BENCH_MYSQL_URL names another MariaDB server
// (default mysql://root@127.0.0.1:3306/mysql); the bench creates and drops mpp_bench_* databases there.
// BENCH_CPU_PROF_DIR=dir writes a V8 CPU profile of every process under test into dir.
// BENCH_CYCLE_SIZES=1000,5000 overrides the cycle sizes (investigations; the report says which ran).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cycleScenario } from './scenarios/cycle';
import { exportImportScenario } from './scenarios/export-import';
import { dashboardScenario } from './scenarios/dashboard';
import { intakeScenario } from './scenarios/intake';
import { reconcileScenario } from './scenarios/reconcile';
import { guardianRecordsScenario } from './scenarios/guardian-records';
import { tvsMigrateScenario } from './scenarios/tvs-migrate';
import { BenchDatabases } from './support/bench-database';
import { compareReports, renderComparison } from './support/compare';
import { megabytes, table, yesNo } from './support/format';
import { describeMachine, type MachineInfo } from './support/machine';
import type { BenchContext, BenchScale, BenchScenario, ReportSection } from './support/scenario';
import { START_NODE_FLAGS, startWorker } from './support/worker';

/** In report order. A new scenario module goes here. */
const SCENARIOS: BenchScenario[] = [intakeScenario, cycleScenario, reconcileScenario, dashboardScenario, exportImportScenario, guardianRecordsScenario, tvsMigrateScenario];

const REPOSITORY = path.resolve(__dirname, '..', '..');

/** Peak RSS of a worker process that loads nothing: Node plus tsx. */
async function idleWorkerRss(): Promise<number> {
  const worker = await startWorker('idle.ts');
  try {
    return (await worker.call<{ peakRssBytes: number }>('memory')).peakRssBytes;
  } finally {
    await worker.stop();
  }
}

function renderReport(
  machine: MachineInfo,
  scale: BenchScale,
  started: Date,
  elapsedMs: number,
  sections: ReportSection[],
  idleRssBytes: number,
): string {
  const gib = (machine.ramBytes / 1024 ** 3).toFixed(1);
  const targets = sections.flatMap((s) => s.targets);
  const memory = sections.flatMap((s) => s.peakMemory);
  const lines = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench\` (code in \`test/bench/\`) on ${started.toISOString().slice(0, 10)} at ` +
      `${started.toISOString().slice(11, 16)} UTC. Every figure below comes from that one run` +
      `${scale === 'quick' ? ' — a **quick** run with small sizes, to check the bench itself, not to quote' : ''}; ` +
      'each is set against a baseline measured in the same run. The run took ' +
      `${Math.round(elapsedMs / 1000)} s. The machine is shared (see the load averages), so repeated runs vary.`,
    '',
    'To run it again: MariaDB on 127.0.0.1:3306 (user root, no password), then `npm run bench`. ' +
      '`npm run bench -- --quick` checks the bench itself in about a minute and writes a scratch file instead of this one; ' +
      '`npm run bench -- --compare docs/benchmarks.md` prints every figure of the new run beside the same figure of this report.',
    '',
    '## Machine',
    '',
    table(
      ['', ''],
      [
        ['CPU', machine.cpuModel],
        ['cores', machine.cores],
        ['RAM', `${gib} GiB`],
        ['Node.js', machine.node],
        ['MariaDB', machine.mariadb],
        ['OS', machine.os],
        ['load average at the start (1, 5, 15 min)', machine.loadAverage.map((n) => n.toFixed(2)).join(', ')],
        ['load average at the end', os.loadavg().map((n) => n.toFixed(2)).join(', ')],
      ],
    ),
    '',
    '## Targets',
    '',
    table(
      ['', 'target', 'measured', 'result'],
      targets.map((t) => [t.name, t.target, t.measured, t.shortfall ? `${yesNo(t.met)}: ${t.shortfall}` : yesNo(t.met)]),
    ),
    '',
  ];
  for (const section of sections) lines.push(`## ${section.title}`, '', section.body, '');
  lines.push(
    '## Peak memory (RSS)',
    '',
    'The largest resident set size of each process under test, from the kernel (`process.resourceUsage().maxRSS`), over its ' +
      'whole life: start-up, warm-up and the measured work. Every process runs the TypeScript sources through tsx, as ' +
      `\`npm run dev\` does, and the service's processes with the Node flags of \`npm start\` (${START_NODE_FLAGS.map((f) => `\`${f}\``).join(' ') || 'none'}; ` +
      'the baselines with Node\'s defaults); a worker process that loads nothing peaks at ' +
      `${megabytes(idleRssBytes)}, so that much of each figure is Node and the loader, not the code under test.`,
    '',
    table(['process', 'peak RSS'], [...memory.map((m) => [m.label, megabytes(m.rssBytes)]), ['(a worker that loads nothing)', megabytes(idleRssBytes)]]),
    '',
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      out: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      compare: { type: 'string' },
    },
  });
  // Read now: the run may write over the very file it is compared with.
  const previousReport = values.compare === undefined ? undefined : fs.readFileSync(path.resolve(values.compare), 'utf8');
  const scale: BenchScale = values.quick || process.env.BENCH_SCALE === 'quick' ? 'quick' : 'full';
  const only = values.only?.split(',').map((s) => s.trim());
  const unknown = only?.filter((id) => !SCENARIOS.some((s) => s.id === id)) ?? [];
  if (unknown.length > 0) throw new Error(`unknown scenario ${unknown.join(', ')}; there are ${SCENARIOS.map((s) => s.id).join(', ')}`);
  const scenarios = only ? SCENARIOS.filter((s) => only.includes(s.id)) : SCENARIOS;
  // A quick run must not replace the report of a full one.
  const out = path.resolve(values.out ?? (scale === 'full' ? path.join(REPOSITORY, 'docs', 'benchmarks.md') : path.join(os.tmpdir(), 'mpp-benchmarks-quick.md')));

  const started = new Date();
  const t0 = performance.now();
  const log = (message: string) => {
    const elapsed = ((performance.now() - t0) / 1000).toFixed(0).padStart(4);
    process.stdout.write(`[bench ${elapsed} s] ${message}\n`);
  };

  const databases = new BenchDatabases(process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/mysql');
  let mariadb: string;
  try {
    mariadb = await databases.serverVersion();
  } catch (error) {
    throw new Error(`The bench needs MariaDB at ${databases.serverUrl} (root, no password): ${(error as Error).message}`);
  }
  const machine = describeMachine(mariadb);
  log(`${scale} run of ${scenarios.map((s) => s.id).join(', ')} on ${machine.cpuModel}, ${machine.cores} cores, Node ${machine.node}, MariaDB ${mariadb}`);

  // Ctrl-C must not leave mpp_bench_* databases behind.
  const interrupted = (signal: string) => {
    log(`${signal}: dropping the bench databases`);
    void databases.dropAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', () => interrupted('SIGINT'));
  process.once('SIGTERM', () => interrupted('SIGTERM'));

  const context: BenchContext = { scale, databases, log, verbose: values.verbose ?? false };
  const sections: ReportSection[] = [];
  const idleRssBytes = await idleWorkerRss();
  try {
    for (const scenario of scenarios) {
      log(`scenario ${scenario.id}: start`);
      sections.push(await scenario.run(context));
      log(`scenario ${scenario.id}: done`);
    }
  } finally {
    await databases.dropAll();
  }

  fs.mkdirSync(path.dirname(out), { recursive: true });
  const report = renderReport(machine, scale, started, performance.now() - t0, sections, idleRssBytes);
  fs.writeFileSync(out, report);
  log(`report written to ${path.relative(process.cwd(), out) || out}`);
  if (previousReport !== undefined) process.stdout.write(`\n${renderComparison(values.compare as string, compareReports(previousReport, report))}\n\n`);
  for (const t of sections.flatMap((s) => s.targets)) log(`${t.name}: ${t.met ? 'met' : 'MISSED'} — ${t.measured}${t.shortfall ? ` (${t.shortfall})` : ''}`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`\nbench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\nNo report was written.\n`);
    process.exit(1);
  },
);
