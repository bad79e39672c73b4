// Reconcile run: provisioned parents × 2 linked children against the Moodle test double answering
// each call after 25 ms, with some drift (pupils deleted, roles removed by hand), the real run
// (batched) against a naive one-call-per-link run. The double runs in this process and counts
// the calls; each run has its own process and its own freshly seeded database.
import type { BenchDatabase } from '../support/bench-database';
import { callCounts, parentRoleAssignments, PARENT_ROLE_ID, serviceEnvironment, watchDouble, type CallCounts } from '../support/double-runs';
import { CHILDREN_PER_REQUEST } from '../cycle/seed';
import { DELETED_EVERY, REMOVED_EVERY, seedProvisionedLinks, type Drift } from '../reconcile/seed';
import { decimal, integer, megabytes, seconds, table, timesFewer, yesNo } from '../support/format';
import { check, type BenchContext, type BenchScenario, type ReportSection, type TargetResult } from '../support/scenario';
import { START_NODE_FLAGS, startWorker } from '../support/worker';
import type { NaiveReconcileRun } from '../workers/reconcile-naive';
import type { ServiceReconcileRun } from '../workers/reconcile-service';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../../support/moodle-double';

const LATENCY_MS = 25;
const SETTINGS = {
  full: { size: 10_000, naiveSample: 500 },
  quick: { size: 400, naiveSample: 100 },
} as const;
const CALLS_TARGET = 20;
const SPEED_TARGET = 10;

interface Figures {
  wallMs: number;
  calls: CallCounts;
  doubleCpuMs: number;
  peakRssBytes: number;
}

/** A fresh database and Moodle with `size` provisioned parents and the drift. */
async function prepare(context: BenchContext, size: number, label: string): Promise<{ bench: BenchDatabase; moodle: MoodleDouble; drift: Drift }> {
  const bench = await context.databases.create(`reconcile_${label}_${size}`);
  const moodle = await startMoodleDouble({ state: seedRecordedSite() });
  context.log(`reconcile ${integer(size)}/${label}: seeding ${integer(size)} provisioned parents × ${CHILDREN_PER_REQUEST} linked children`);
  const drift = await seedProvisionedLinks(bench.db, moodle, size);
  moodle.resetCounts();
  moodle.setFaults({ latencyMs: LATENCY_MS });
  return { bench, moodle, drift };
}

async function runService(context: BenchContext, size: number): Promise<Figures & { queries: number; ended: number }> {
  const { bench, moodle, drift } = await prepare(context, size, 'service');
  const worker = await startWorker('reconcile-service.ts', { env: { NODE_ENV: 'production', BENCH_SERVICE_ENV: JSON.stringify(serviceEnvironment(bench, moodle)) }, nodeFlags: START_NODE_FLAGS, verbose: context.verbose });
  try {
    context.log(`reconcile ${integer(size)}/service: running the reconcile`);
    const { value: run, doubleCpuMs } = await watchDouble(context, `reconcile ${integer(size)}/service`, moodle, () => worker.call<ServiceReconcileRun>('run'));
    const calls = callCounts(moodle);
    const links = CHILDREN_PER_REQUEST * size;
    const c = run.summary.counts;
    check(run.summary.state === 'succeeded', `the reconcile ended ${run.summary.state}: ${run.summary.error ?? ''}`);
    check(c.linksChecked === links, `the reconcile checked ${c.linksChecked} links, expected ${links}`);
    check(c.linksEnded === drift.deletedPupils.length, `the reconcile ended ${c.linksEnded} links, expected ${drift.deletedPupils.length}`);
    check(c.rolesReasserted === links - drift.deletedPupils.length, `the reconcile gave ${c.rolesReasserted} roles again`);
    check(parentRoleAssignments(moodle) === links - drift.deletedPupils.length, `Moodle holds ${parentRoleAssignments(moodle)} Parent role assignments`);
    check(drift.removedRoles.every((r) => moodle.state.hasUserContextRole(PARENT_ROLE_ID, r.parentId, r.pupilId)), 'a role removed by hand did not come back');
    check(c.moodleCalls === calls.total, `the reconcile counted ${c.moodleCalls} Moodle calls, the double ${calls.total}`);
    const revoked = Number(((await bench.db('request_children').where({ link_state: 'revoked' }).count({ n: '*' }).first()) as { n: number | string }).n);
    check(revoked === drift.deletedPupils.length, `${revoked} children revoked in the database`);
    context.log(`reconcile ${integer(size)}/service: ${seconds(run.wallMs)}, ${calls.total} Moodle calls, ${integer(run.queries)} queries`);
    return { wallMs: run.wallMs, calls, doubleCpuMs, peakRssBytes: run.peakRssBytes, queries: run.queries, ended: c.linksEnded };
  } finally {
    await worker.stop();
    await moodle.close();
    await bench.drop();
  }
}

interface NaiveFigures {
  measured: Figures & { parents: number; links: number; loadMs: number; loopMs: number };
  estimated: Figures;
  extrapolated: boolean;
}

async function runNaive(context: BenchContext, size: number, sample: number): Promise<NaiveFigures> {
  const { bench, moodle } = await prepare(context, size, 'naive');
  const worker = await startWorker('reconcile-naive.ts', { env: { NODE_ENV: 'production', BENCH_SERVICE_ENV: JSON.stringify(serviceEnvironment(bench, moodle)) }, verbose: context.verbose });
  const limit = Math.min(size, sample);
  try {
    context.log(`reconcile ${integer(size)}/naive: one call per parent and two per link over ${limit === size ? 'every parent' : `the first ${integer(limit)} parents`}`);
    const { value: run, doubleCpuMs } = await watchDouble(context, `reconcile ${integer(size)}/naive`, moodle, () => worker.call<NaiveReconcileRun>('run', limit === size ? {} : { limit }));
    const calls = callCounts(moodle);
    check(run.processedParents === limit && run.processedLinks === CHILDREN_PER_REQUEST * limit, `the naive run processed ${run.processedParents} parents, ${run.processedLinks} links`);
    check(calls.lookUp === limit + run.processedLinks && calls.assign === run.reasserted, 'the naive run did not make one call per item');
    check(run.ended === Math.floor(limit / DELETED_EVERY), `the naive run ended ${run.ended} links`);
    const measured = { wallMs: run.loadMs + run.loopMs, calls, doubleCpuMs, peakRssBytes: run.peakRssBytes, parents: run.processedParents, links: run.processedLinks, loadMs: run.loadMs, loopMs: run.loopMs };
    const factor = size / limit;
    const estimated: Figures = {
      wallMs: run.loadMs + run.loopMs * factor,
      calls: { check: calls.check, lookUp: calls.lookUp * factor, assign: calls.assign * factor, total: calls.total * factor },
      doubleCpuMs: doubleCpuMs * factor,
      peakRssBytes: run.peakRssBytes,
    };
    context.log(`reconcile ${integer(size)}/naive: ${seconds(measured.wallMs)} for ${integer(limit)} parents, ${integer(calls.total)} calls`);
    return { measured, estimated, extrapolated: factor > 1 };
  } finally {
    await worker.stop();
    await moodle.close();
    await bench.drop();
  }
}

async function run(context: BenchContext): Promise<ReportSection> {
  const { size, naiveSample } = SETTINGS[context.scale];
  const service = await runService(context, size);
  const naive = await runNaive(context, size, naiveSample);
  const label = `Reconcile ${integer(size)} × ${CHILDREN_PER_REQUEST}`;
  const note = naive.extrapolated ? ' (naive extrapolated from a sample)' : '';
  const callsRatio = naive.estimated.calls.total / service.calls.total;
  const calls: TargetResult = {
    name: `${label}: Moodle calls`,
    target: `≥ ${CALLS_TARGET}× fewer than one call per link`,
    measured: `${integer(service.calls.total)} vs ${integer(naive.estimated.calls.total)}: ${timesFewer(service.calls.total, naive.estimated.calls.total)}${note}`,
    met: callsRatio >= CALLS_TARGET,
  };
  if (!calls.met) calls.shortfall = `${decimal(callsRatio)}× instead of ${CALLS_TARGET}×`;
  const speedRatio = naive.estimated.wallMs / service.wallMs;
  const speed: TargetResult = {
    name: `${label}: wall time`,
    target: `≥ ${SPEED_TARGET}× faster than one call per link`,
    measured: `${seconds(service.wallMs)} vs ${seconds(naive.estimated.wallMs)}: ${decimal(speedRatio)}× faster${note}`,
    met: speedRatio >= SPEED_TARGET,
  };
  if (!speed.met) speed.shortfall = `${decimal(speedRatio)}× instead of ${SPEED_TARGET}×`;
  const row = (name: string, f: Figures, approx = false) => {
    const n = (v: number) => `${approx ? '≈ ' : ''}${integer(v)}`;
    return [name, `${approx ? '≈ ' : ''}${seconds(f.wallMs)}`, integer(f.calls.check), n(f.calls.lookUp), n(f.calls.assign), n(f.calls.total), `${approx ? '≈ ' : ''}${seconds(f.doubleCpuMs)}`, megabytes(f.peakRssBytes)];
  };
  const rows = [row('the service', service)];
  if (naive.extrapolated) {
    rows.push(row(`one call per link, measured on the first ${integer(naive.measured.parents)} parents`, naive.measured));
    rows.push(row(`one call per link, extrapolated to ${integer(size)}`, naive.estimated, true));
  } else {
    rows.push(row('one call per link', naive.estimated));
  }
  rows.push([
    '**service vs one call per link**',
    `**${decimal(naive.estimated.wallMs / service.wallMs)}× faster**`,
    '',
    timesFewer(service.calls.lookUp, naive.estimated.calls.lookUp),
    timesFewer(service.calls.assign, naive.estimated.calls.assign),
    `**${timesFewer(service.calls.total, naive.estimated.calls.total)}**`,
    '',
    '',
  ]);
  const body = [
    table(['run', 'wall time', 'site info', 'look-ups', 'role assignment calls', 'Moodle calls', 'Moodle double CPU', 'peak RSS'], rows),
    '',
    ...[calls, speed].map((t) => `- ${t.name}, ${t.target}: ${t.measured} — ${yesNo(t.met)}${t.shortfall ? ` (${t.shortfall})` : ''}.`),
    `- The service's run made ${integer(service.queries)} database queries and ended ${integer(service.ended)} links.`,
    '',
    `**Method.** A fresh MariaDB database holds ${integer(size)} provisioned requests, each with two children linked to Moodle pupil ` +
      "accounts, and the parents' auth rows (the cycle benchmark's seeding, then marked provisioned and linked); the Moodle test " +
      "double holds the recorded site, the parents (created by its auth_db sync), the pupils and every Parent role assignment. " +
      `Drift: every ${DELETED_EVERY}th parent's second child was deleted in Moodle (its link must end) and every ${REMOVED_EVERY}th ` +
      "parent's first child lost its role by hand (it must come back). Every call to the double then waits " +
      `${LATENCY_MS} ms; each run gets its own database and double, seeded the same way.`,
    '',
    "- *The service*: `createServices(config).reconcile.run('cli')` in its own process, with the default configuration " +
      '(`MOODLE_BATCH_SIZE` 100, `RECONCILE_REASSERT=true`): one site check, pupil look-ups by id and parent look-ups by ' +
      'username 100 per call, links ended through the lifecycle, every active link re-asserted 100 per call.',
    '- *One call per link* (`test/bench/reconcile/naive-reconcile.ts`): the same queries, then per parent one look-up, per link ' +
      'one look-up of the pupil and one assignment call (or the same lifecycle revocation), through the same Moodle client ' +
      `sending one item per call.${naive.extrapolated ? ` Run over the first ${integer(naive.measured.parents)} parents; its calls, loop time and double CPU are multiplied by ${integer(size)} / ${integer(naive.measured.parents)} (every parent costs the same calls, so the call counts are exact).` : ''}`,
    "- *Checks* (no figures without them): every link checked, exactly the deleted pupils' links ended (revoked in the " +
      "database), every role removed by hand back in the double, one Parent role per remaining link, and the service's own call " +
      "count equal to the double's.",
    `- *Moodle double CPU* is the bench process's CPU during the run, nearly all of it the double answering: it finds each ` +
      "assignment's context by a linear search over every user's context, so a call of 100 assignments on a site this size " +
      `costs it much more than the ${LATENCY_MS} ms, and both runs pay that per assignment.`,
  ].join('\n');
  return {
    title: 'Reconcile run (the Moodle check) against the Moodle test double',
    body,
    targets: [calls, speed],
    peakMemory: [
      { label: `reconcile ${integer(size)} × ${CHILDREN_PER_REQUEST}: the service`, rssBytes: service.peakRssBytes },
      { label: `reconcile ${integer(size)} × ${CHILDREN_PER_REQUEST}: one call per link${naive.extrapolated ? ` (first ${integer(naive.measured.parents)})` : ''}`, rssBytes: naive.measured.peakRssBytes },
    ],
  };
}

export const reconcileScenario: BenchScenario = { id: 'reconcile', run };
