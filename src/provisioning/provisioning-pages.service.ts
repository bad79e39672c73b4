// What the provisioning pages show: the cycle running now (from the database lock, so a cycle on
// another instance counts too), the history, one cycle's report with every request's outcome,
// and "Run now".
import type { Config } from '../config';
import type { Database } from '../db/database';
import { NotFoundError } from '../errors';
import type { Logger } from '../logger';
import { REQUEST_OUTCOMES, type CycleCounts, type CycleRecord, type RequestOutcomeReport } from './cycle-repository';
import type { ProvisioningCycle } from './provisioning-cycle';
import { explainSyncRefusal, parseScheduledTaskOutput } from '../moodle/sync-command';
import { STATUS_LABELS, type RequestStatus } from '../requests/request-states';
import {
  CHILD_OUTCOME_LABELS,
  COUNT_LABELS,
  countsInBrief,
  describeSchedule,
  formatDuration,
  formatTime,
  isProblemOutcome,
  noRequestsWorkedOn,
  OUTCOME_LABELS,
  paginate,
  splitError,
  STATE_LABELS,
  STEP_LABELS,
  TRIGGER_LABELS,
} from './provisioning-format';
import { ProvisioningPageRepository } from './provisioning-pages.repository';
import type { CyclePreview, CyclePreviewer } from './cycle-preview';

/** How many rows each list of the preview panel shows; the counts above say how many there are. */
export const PREVIEW_ROWS = 100;

export interface PreviewSection {
  id: string;
  heading: string;
  total: number;
  rows: Array<{ requestId: number; parentName: string; child: string | null; note: string }>;
}

export interface PreviewView {
  checkedAt: string;
  problem: CyclePreview['problem'];
  sections: PreviewSection[];
}

export const HISTORY_PAGE_SIZE = 20;
export const OUTCOMES_PAGE_SIZE = 100;

/** One cycle as the pages show it. */
export interface CycleView {
  id: number;
  state: CycleRecord['state'];
  stateLabel: string;
  triggerLabel: string;
  triggeredBy: string;
  startedAt: string;
  startedAtIso: string;
  finishedAt: string;
  /** "3 min 5 s", or how long it has been running. */
  took: string;
  /** True while the cycle holds the lock and works. */
  running: boolean;
  /** Marked running but its process stopped renewing the lock (stopped or crashed). */
  stalled: boolean;
  step: string;
  done: number;
  total: number;
  brief: string;
}

export interface OutcomeView {
  requestId: number;
  parentName: string;
  email: string;
  requestStatus: string;
  outcome: RequestOutcomeReport['outcome'];
  outcomeLabel: string;
  problem: boolean;
  message: string | null;
  children: Array<{ name: string; tutorGroup: string; outcome: string; label: string; error: string | null }>;
}

export interface CycleProgressJson {
  cycleId: number;
  state: CycleRecord['state'];
  stateLabel: string;
  running: boolean;
  step: string | null;
  stepLabel: string;
  done: number;
  total: number;
  finished: boolean;
  reportUrl: string;
}

export class ProvisioningPages {
  private readonly repository = new ProvisioningPageRepository();
  private readonly now: () => number;

  constructor(
    private readonly deps: { db: Database; cycle: ProvisioningCycle; config: Readonly<Config>; logger: Logger; now?: () => number },
  ) {
    this.now = deps.now ?? Date.now;
  }

  /** The cycle holding the lock right now, on any instance. `id` is null in the instant before it is named. */
  async runningCycle(): Promise<{ id: number | null; view: CycleView | undefined } | undefined> {
    const lock = await this.repository.cycleLock(this.deps.db, this.now());
    if (!lock?.live) return undefined;
    const record = lock.cycleId === null ? undefined : await this.deps.cycle.repository.get(lock.cycleId);
    return { id: lock.cycleId, view: record ? this.view(record, lock.cycleId) : undefined };
  }

  async overview(page: number) {
    const running = await this.runningCycle();
    const pagination = paginate(await this.repository.countCycles(this.deps.db), page, HISTORY_PAGE_SIZE);
    const records = await this.deps.cycle.repository.recent(pagination.pageSize, pagination.offset);
    return {
      running,
      history: records.map((r) => this.view(r, running?.id ?? null)),
      pagination,
      schedule: describeSchedule(this.deps.config.cycle.schedule),
      moodleConfigured: Boolean(this.deps.config.moodle.url && this.deps.config.moodle.token && this.deps.config.moodle.parentRoleId !== undefined),
    };
  }

  /** Starts a cycle in the background; a failure to finish it is logged (the cycle records its own errors). */
  async runNow(staffUsername: string): Promise<number> {
    const { cycleId, finished } = await this.deps.cycle.start('manual', staffUsername);
    this.deps.logger.info({ cycleId, staff: staffUsername }, 'provisioning cycle started from the dashboard');
    finished.catch((error: unknown) => this.deps.logger.error({ err: error, cycleId }, 'provisioning cycle started from the dashboard did not finish'));
    return cycleId;
  }

  /** "What the next cycle will do", with the parents' and children's names. */
  async preview(previewer: Pick<CyclePreviewer, 'preview'>): Promise<PreviewView> {
    const p = await previewer.preview();
    type Item = { requestId: number; childId?: number; note: string };
    const lists: Array<[string, string, Item[]]> = [
      ['create', "Parents Moodle's next user sync creates", p.parentsToCreate.map((x) => ({ requestId: x.requestId, note: x.revived ? `${x.username} (reactivated)` : x.username }))],
      ['add', 'Links to add', p.linksToAdd.map((x) => ({ requestId: x.requestId, childId: x.childId, note: x.afterSync ? 'once the sync command has created the parent' : 'the Parent role is assigned' }))],
      ['remove', 'Links to remove', p.linksToRemove.map((x) => ({ requestId: x.requestId, childId: x.childId, note: x.inMoodle ? 'the Parent role is removed' : 'nothing to remove in Moodle (the parent never had an account)' }))],
      ['fail', 'Children that will fail', p.childrenFailing.map((x) => ({ requestId: x.requestId, childId: x.childId, note: "the pupil's Moodle account was deleted: revoke this child" }))],
      ['too-long', 'Requests waiting too long', p.requestsWaiting.filter((x) => x.tooLong).map((x) => ({ requestId: x.requestId, note: x.message }))],
      ['conflict', 'Requests with a Moodle account this service does not manage', p.requestsConflicting.map((x) => ({ requestId: x.requestId, note: x.message }))],
    ];
    const shown = lists.flatMap(([, , items]) => items.slice(0, PREVIEW_ROWS));
    const requests = await this.repository.requestsByIds(this.deps.db, [...new Set(shown.map((i) => i.requestId))]);
    const children = await this.repository.childrenByIds(this.deps.db, [...new Set(shown.flatMap((i) => (i.childId === undefined ? [] : [i.childId])))]);
    return {
      checkedAt: formatTime(p.checkedAt),
      problem: p.problem,
      sections: lists.map(([id, heading, items]) => ({
        id,
        heading,
        total: items.length,
        rows: items.slice(0, PREVIEW_ROWS).map((i) => ({
          requestId: i.requestId,
          parentName: requests.get(i.requestId)?.parentName ?? '',
          child: i.childId === undefined ? null : (children.get(i.childId)?.name ?? null),
          note: i.note,
        })),
      })),
    };
  }

  private async record(id: number): Promise<CycleRecord> {
    const record = await this.deps.cycle.repository.get(id);
    if (!record) throw new NotFoundError(`There is no provisioning cycle ${id}.`, { help: 'The provisioning page lists every cycle.' });
    return record;
  }

  async report(id: number, page: number) {
    const record = await this.record(id);
    const lock = await this.repository.cycleLock(this.deps.db, this.now());
    const cycle = this.view(record, lock?.live ? lock.cycleId : null);
    const outcomeCounts = await this.deps.cycle.repository.outcomeCounts(id);
    const entries = REQUEST_OUTCOMES.reduce((n, o) => n + outcomeCounts[o], 0);
    const pagination = paginate(entries, page, OUTCOMES_PAGE_SIZE);
    const shown = await this.deps.cycle.repository.outcomes(id, { offset: pagination.offset, limit: pagination.pageSize });
    const requests = await this.repository.requestsByIds(this.deps.db, shown.map((o) => o.requestId));
    const children = await this.repository.childrenByIds(
      this.deps.db,
      shown.flatMap((o) => o.children.map((c) => c.childId)),
    );
    const outcomes: OutcomeView[] = shown.map((o) => {
      const request = requests.get(o.requestId);
      return {
        requestId: o.requestId,
        parentName: request?.parentName || '(details erased)',
        email: request?.email ?? '',
        requestStatus: request ? STATUS_LABELS[request.status as RequestStatus] : '',
        outcome: o.outcome,
        outcomeLabel: OUTCOME_LABELS[o.outcome],
        problem: isProblemOutcome(o.outcome),
        message: summarise(o),
        children: o.children.map((c) => {
          const child = children.get(c.childId);
          return {
            name: child?.name || `Child ${c.childId}`,
            tutorGroup: child?.tutorGroup ?? '',
            outcome: c.outcome,
            label: CHILD_OUTCOME_LABELS[c.outcome],
            error: c.error ?? null,
          };
        }),
      };
    });
    return {
      cycle,
      syncRefusals: await this.syncRefusals(record.syncOutput),
      counts: record.counts ? countRows(record.counts) : [],
      problemCount: REQUEST_OUTCOMES.filter(isProblemOutcome).reduce((n, o) => n + outcomeCounts[o], 0),
      error: splitError(record.error),
      noRequestsText: noRequestsWorkedOn(record.state, record.error),
      syncOutput: record.syncOutput,
      syncCommandSet: this.deps.config.moodle.syncCommand !== undefined,
      outcomes,
      pagination,
    };
  }

  /** The accounts Moodle's sync skipped in this cycle, read from its output, each with its request. */
  private async syncRefusals(syncOutput: string | null): Promise<Array<{ username: string; requestId: number | null; message: string }>> {
    if (!syncOutput) return [];
    const { errors } = parseScheduledTaskOutput(syncOutput, 0);
    if (errors.length === 0) return [];
    const requestIds = await this.deps.cycle.repository.requestIdsByMoodleUsername(errors.map((e) => e.username));
    return errors.map((e) => ({ username: e.username, requestId: requestIds.get(e.username) ?? null, message: explainSyncRefusal(e) }));
  }

  async progress(id: number): Promise<CycleProgressJson> {
    const record = await this.record(id);
    const lock = await this.repository.cycleLock(this.deps.db, this.now());
    const view = this.view(record, lock?.live ? lock.cycleId : null);
    return {
      cycleId: record.id,
      state: record.state,
      stateLabel: view.stateLabel,
      running: view.running,
      step: record.step,
      stepLabel: view.step,
      done: view.done,
      total: view.total,
      finished: record.finishedAt !== null,
      reportUrl: `/admin/cycles/${record.id}`,
    };
  }

  private view(record: CycleRecord, liveCycleId: number | null): CycleView {
    const running = record.state === 'running' && liveCycleId === record.id;
    const stalled = record.state === 'running' && !running;
    const end = record.finishedAt ?? this.now();
    return {
      id: record.id,
      state: record.state,
      stateLabel: stalled ? 'Not responding' : STATE_LABELS[record.state],
      triggerLabel: TRIGGER_LABELS[record.trigger] ?? record.trigger,
      triggeredBy: record.triggeredBy ?? '',
      startedAt: formatTime(record.startedAt),
      startedAtIso: new Date(record.startedAt).toISOString(),
      finishedAt: formatTime(record.finishedAt),
      took: record.finishedAt !== null ? formatDuration(end - record.startedAt) : running ? `running for ${formatDuration(end - record.startedAt)}` : '',
      running,
      stalled,
      step: record.step ? STEP_LABELS[record.step] : STEP_LABELS.starting,
      done: record.progressDone,
      total: record.progressTotal,
      // A failed or stopped cycle did nothing worth counting: its reason says more.
      brief: (record.state === 'failed' || record.state === 'interrupted') && record.error ? (splitError(record.error)?.message ?? '') : countsInBrief(record.counts),
    };
  }
}

/** A request's message that only repeats its children's errors (shown beside each child) is put in brief. */
function summarise(o: RequestOutcomeReport): string | null {
  const childErrors = o.children.filter((c) => c.error).map((c) => c.error);
  if (o.message === null || childErrors.length === 0 || o.message !== childErrors.join(' ')) return o.message;
  const linked = o.children.filter((c) => c.outcome === 'linked').length;
  return linked === 0
    ? 'No child could be linked; they are tried again in a later cycle.'
    : `${linked} of ${o.children.length} children linked; the others are tried again in a later cycle.`;
}

/** The main counts always, the others only when something happened. */
function countRows(counts: CycleCounts): Array<{ label: string; value: number; problem: boolean }> {
  const always = new Set<keyof CycleCounts>(['requests', 'provisioned', 'childrenLinked']);
  const problems = new Set<keyof CycleCounts>(['childrenFailed', 'waitedTooLong', 'refused', 'unassignFailed']);
  return COUNT_LABELS.map(([key, label]) => ({ key, label, value: Number(counts[key] ?? 0) }))
    .filter((c) => always.has(c.key) || c.value > 0)
    .map(({ key, label, value }) => ({ label, value, problem: problems.has(key) && value > 0 }));
}

