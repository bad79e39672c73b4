// What the "Moodle check" page shows: whether a check is running (from the shared cycle lock, so
// one on another instance counts too), the settings, one run's counts and findings with the
// parents' and children's names, and the recent runs.
import type { Config } from '../config';
import type { Database } from '../db/database';
import { NotFoundError } from '../errors';
import type { Logger } from '../logger';
import { CYCLE_LOCK, DatabaseLock, heldByReconcile } from '../provisioning/cycle-lock';
import { describeSchedule, formatDuration, formatTime } from '../provisioning/provisioning-format';
import { ProvisioningPageRepository } from '../provisioning/provisioning-pages.repository';
import type { FindingKind, ReconcileCounts, ReconcileRunRecord, ReconcileState, ReconcileTrigger } from './reconcile-repository';
import type { Reconciliation } from './reconciliation';

/** How many findings of one kind the page lists; the count says how many there are. */
export const FINDINGS_PER_KIND = 200;
const HISTORY_SIZE = 10;

export const RUN_STATE_LABELS: Record<ReconcileState, string> = {
  running: 'Running',
  succeeded: 'Everything matches',
  attention: 'Something to look at',
  failed: 'Stopped',
};

const TRIGGER_LABELS: Record<ReconcileTrigger, string> = { schedule: 'Schedule', manual: 'Dashboard', cli: 'Command line' };

/** Each kind's heading on the page, in the order shown: what was changed first, then what needs a decision. */
export const FINDING_HEADINGS: ReadonlyArray<[FindingKind, string]> = [
  ['pupil_deleted', "Links ended: the pupil's Moodle account was deleted"],
  ['pupil_left', 'Links ended: the pupil left (account suspended past the grace period)'],
  ['pupil_suspended', "Pupils whose Moodle account is suspended (the link stays for now)"],
  ['parent_missing', 'Provisioned parents Moodle has no account for'],
  ['parent_suspended', 'Parents suspended in Moodle although they may log in'],
  ['parent_not_auth_db', 'Parents whose Moodle account no longer signs in through this service'],
  ['reassert_failed', 'Links whose Parent role could not be given again'],
  ['auth_row_not_entitled', 'Auth-table rows no approved request stands behind'],
  ['auth_row_missing', 'Approved requests missing from the auth table'],
  ['changed_meanwhile', 'Requests changed while the check ran (left for the next check)'],
];

const COUNT_WORDS: ReadonlyArray<[keyof ReconcileCounts, string]> = [
  ['linksChecked', 'Links checked'],
  ['parentsChecked', 'Provisioned parents checked'],
  ['linksEnded', 'Links ended'],
  ['parentsRevoked', 'Parents who lost access with their last link'],
  ['rolesReasserted', 'Parent roles confirmed in Moodle (given again where missing)'],
  ['pupilsSuspended', 'Pupils suspended in Moodle'],
  ['moodleCalls', 'Moodle calls'],
];

export interface FindingRow {
  requestId: number | null;
  parentName: string;
  child: string | null;
  message: string;
}

export class MoodleCheckPage {
  private readonly names = new ProvisioningPageRepository();
  private readonly lock: DatabaseLock;
  private readonly now: () => number;

  constructor(private readonly deps: { db: Database; reconcile: Reconciliation; config: Readonly<Config>; logger: Logger; now?: () => number }) {
    this.now = deps.now ?? Date.now;
    this.lock = new DatabaseLock(deps.db, CYCLE_LOCK, this.now);
  }

  /** True while a Moodle check holds the lock and renews it, on any instance. */
  async running(): Promise<boolean> {
    const holder = await this.lock.current();
    return holder !== undefined && heldByReconcile(holder) && holder.expiresAt > this.now();
  }

  async page(runId: number | undefined) {
    const { config } = this.deps;
    const history = await this.deps.reconcile.repository.recent(HISTORY_SIZE);
    const shownId = runId ?? history.find((r) => r.state !== 'running')?.id;
    const run = shownId === undefined ? undefined : await this.deps.reconcile.repository.get(shownId);
    if (runId !== undefined && run === undefined) throw new NotFoundError(`There is no Moodle check ${runId}.`, { help: 'The Moodle check page lists the recent ones.' });
    return {
      running: await this.running(),
      settings: {
        schedule: config.reconcile.schedule === undefined ? 'Off: the check runs only from this page or the command line.' : describeSchedule(config.reconcile.schedule),
        grace:
          config.reconcile.pupilLeftGraceDays === null
            ? 'Off: a suspended pupil is only reported; staff remove the link.'
            : `${config.reconcile.pupilLeftGraceDays} days: a link ends when the pupil's account has been suspended that long.`,
        reassert: config.reconcile.reassert ? 'Yes: every active link gets its Parent role again at each check.' : 'No: the check only reports (RECONCILE_REASSERT=false).',
      },
      moodleConfigured: Boolean(config.moodle.url && config.moodle.token && config.moodle.parentRoleId !== undefined),
      run: run === undefined ? undefined : await this.view(run),
      history: history.map((r) => ({
        id: r.id,
        stateLabel: RUN_STATE_LABELS[r.state],
        state: r.state,
        startedAt: formatTime(r.startedAt),
        triggerLabel: TRIGGER_LABELS[r.trigger],
        triggeredBy: r.triggeredBy ?? '',
        brief: r.counts ? `${r.counts.linksEnded} ended, ${r.counts.linksChecked} checked` : '',
      })),
    };
  }

  /** Starts a check in the background; its result is recorded by the run itself. */
  async runNow(staffUsername: string): Promise<number> {
    const { runId, finished } = await this.deps.reconcile.start('manual', staffUsername);
    this.deps.logger.info({ reconcileRunId: runId, staff: staffUsername }, 'Moodle check started from the dashboard');
    finished.catch((error: unknown) => this.deps.logger.error({ err: error, reconcileRunId: runId }, 'Moodle check started from the dashboard did not finish'));
    return runId;
  }

  private async view(run: ReconcileRunRecord) {
    const groups = FINDING_HEADINGS.map(([kind, heading]) => {
      const all = run.findings.filter((f) => f.kind === kind);
      return { kind, heading, total: all.length, items: all.slice(0, FINDINGS_PER_KIND) };
    }).filter((g) => g.total > 0);
    const shown = groups.flatMap((g) => g.items);
    const requests = await this.names.requestsByIds(this.deps.db, [...new Set(shown.flatMap((f) => (f.requestId === null ? [] : [f.requestId])))]);
    const children = await this.names.childrenByIds(this.deps.db, [...new Set(shown.flatMap((f) => (f.childId === null ? [] : [f.childId])))]);
    const [message, ...help] = (run.error ?? '').split('\n');
    return {
      id: run.id,
      state: run.state,
      stateLabel: RUN_STATE_LABELS[run.state],
      startedAt: formatTime(run.startedAt),
      took: run.finishedAt === null ? 'still running' : formatDuration(run.finishedAt - run.startedAt),
      triggerLabel: TRIGGER_LABELS[run.trigger],
      triggeredBy: run.triggeredBy ?? '',
      error: run.error === null ? null : { message: message ?? '', help: help.join(' ') || null },
      counts: run.counts === null ? [] : COUNT_WORDS.map(([key, label]) => ({ label, value: run.counts?.[key] ?? 0 })),
      groups: groups.map((g) => ({
        kind: g.kind,
        heading: g.heading,
        total: g.total,
        rows: g.items.map(
          (f): FindingRow => ({
            requestId: f.requestId,
            parentName: f.requestId === null ? '' : (requests.get(f.requestId)?.parentName ?? ''),
            child: f.childId === null ? null : (children.get(f.childId)?.name ?? null),
            message: f.message,
          }),
        ),
      })),
    };
  }
}
