// Prometheus metrics for /metrics: requests by status (counted at scrape time), provisioning
// cycles, Moodle calls and mail. One registry per app, so several apps in one process never clash.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Database } from './db/database';
import type { Logger } from './logger';
import type { MailOutbox } from './mail/mail-outbox';
import type { MoodleCallOutcome } from './moodle/moodle-client';
import type { CycleSummary } from './provisioning/provisioning-cycle';
import { FINDING_KINDS } from './reconcile/reconcile-repository';
import type { ReconcileSummary } from './reconcile/reconciliation';
import { REQUEST_STATUSES } from './requests/request-states';

export const METRIC_PREFIX = 'mpp_';

/** Cycles of a small school take seconds; a first run over a whole year group, many minutes. */
const CYCLE_DURATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600];

// An errorcode becomes a label value; anything that does not look like one must not add series.
const ERRORCODE_LABEL = /^[a-z0-9_]{1,64}$/i;

export interface MetricsSources {
  db: Database;
  mailOutbox: Pick<MailOutbox, 'counters' | 'status'>;
  logger?: Pick<Logger, 'warn'>;
}

export class ServiceMetrics {
  readonly registry = new Registry();
  private readonly moodleCalls: Counter<'wsfunction' | 'outcome'>;
  private readonly moodleErrors: Counter<'wsfunction' | 'errorcode'>;
  private readonly cycles: Counter<'state'>;
  private readonly cycleDuration: Histogram<'state'>;
  private readonly cycleRequestOutcomes: Counter<'outcome'>;
  private readonly moodleCheckUp: Gauge;
  private readonly moodleCheckFailures: Counter<'problem'>;
  private readonly reconcileRuns: Counter<'state'>;
  private readonly reconcileLinksEnded: Counter<'reason'>;
  private readonly reconcileRolesReasserted: Counter;
  private readonly reconcileFindings: Gauge<'kind'>;
  private readonly reconcileLastFinished: Gauge;

  constructor(private readonly sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });

    // Both gauges below need the same query; a scrape collects them side by side, so they share
    // the one in flight rather than each asking the database (or one reading the other's old value).
    let inFlight: Promise<Array<{ status: string; n: number | string }> | undefined> | undefined;
    const requestCounts = () =>
      (inFlight ??= (async () => {
        try {
          return (await sources.db('requests').select('status').count({ n: '*' }).groupBy('status')) as Array<{ status: string; n: number | string }>;
        } catch (error) {
          sources.logger?.warn({ error: (error as Error).message }, 'metrics: could not read the request counts');
          return undefined;
        }
      })().finally(() => {
        inFlight = undefined;
      }));

    new Gauge({
      name: `${METRIC_PREFIX}database_up`,
      help: '1 when the database answered this scrape, 0 when it did not (the gauges read from it are then left out).',
      registers,
      async collect() {
        this.set((await requestCounts()) === undefined ? 0 : 1);
      },
    });

    new Gauge({
      name: `${METRIC_PREFIX}requests`,
      help: 'Parent requests by status, counted when scraped.',
      labelNames: ['status'],
      registers,
      async collect() {
        this.reset();
        const rows = await requestCounts();
        if (rows === undefined) return;
        for (const status of REQUEST_STATUSES) this.set({ status }, 0);
        for (const row of rows) this.set({ status: row.status }, Number(row.n));
      },
    });

    new Gauge({
      name: `${METRIC_PREFIX}mail_outbox_messages`,
      help: 'Mail in the outbox: pending (waiting to be sent or retried) and failed (given up on).',
      labelNames: ['state'],
      registers,
      async collect() {
        this.reset();
        try {
          const status = await sources.mailOutbox.status();
          this.set({ state: 'pending' }, status.pending);
          this.set({ state: 'failed' }, status.failed);
        } catch (error) {
          sources.logger?.warn({ error: (error as Error).message }, 'metrics: could not read the mail outbox');
        }
      },
    });

    // The outbox keeps its own running totals; these mirror them at each scrape.
    new Counter({
      name: `${METRIC_PREFIX}mail_sent_total`,
      help: 'Mail messages sent by this process.',
      registers,
      collect() {
        this.reset();
        this.inc(sources.mailOutbox.counters.sent);
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}mail_send_failures_total`,
      help: 'Failed mail send attempts by this process: retrying (tried again later) or failed (given up on).',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        this.inc({ outcome: 'retrying' }, sources.mailOutbox.counters.retrying);
        this.inc({ outcome: 'failed' }, sources.mailOutbox.counters.failed);
      },
    });

    this.moodleCalls = new Counter({
      name: `${METRIC_PREFIX}moodle_calls_total`,
      help: 'Moodle web service HTTP attempts by function and outcome (ok, moodle_error, retried, failed).',
      labelNames: ['wsfunction', 'outcome'],
      registers,
    });
    this.moodleErrors = new Counter({
      name: `${METRIC_PREFIX}moodle_errors_total`,
      help: "Failed Moodle web service attempts by function and errorcode: Moodle's own, or timeout, unreachable, httperror and the like.",
      labelNames: ['wsfunction', 'errorcode'],
      registers,
    });
    this.cycles = new Counter({
      name: `${METRIC_PREFIX}cycles_total`,
      help: 'Provisioning cycles run by this process, by how they ended (succeeded, problems, failed).',
      labelNames: ['state'],
      registers,
    });
    this.cycleDuration = new Histogram({
      name: `${METRIC_PREFIX}cycle_duration_seconds`,
      help: 'How long provisioning cycles run by this process took, by how they ended.',
      labelNames: ['state'],
      buckets: CYCLE_DURATION_BUCKETS,
      registers,
    });
    this.cycleRequestOutcomes = new Counter({
      name: `${METRIC_PREFIX}cycle_request_outcomes_total`,
      help: 'What provisioning cycles did with each request they worked on (provisioned, linked_some, waiting, failed, refused, unchanged).',
      labelNames: ['outcome'],
      registers,
    });
    this.moodleCheckUp = new Gauge({
      name: `${METRIC_PREFIX}moodle_check_up`,
      help: "1 when the last provisioning cycle's Moodle check passed (address, token, seeing users), 0 when it failed. Every cycle checks, even with nothing to do.",
      registers,
    });
    this.moodleCheckFailures = new Counter({
      name: `${METRIC_PREFIX}cycle_moodle_check_failures_total`,
      help: "Provisioning cycles stopped by their Moodle check, by problem: not_configured, parent_role_not_set, cannot_see_users, or Moodle's errorcode (invalidtoken, unreachable, ...).",
      labelNames: ['problem'],
      registers,
    });
    this.reconcileRuns = new Counter({
      name: `${METRIC_PREFIX}reconcile_runs_total`,
      help: 'Reconcile runs (Moodle checks) of this process, by how they ended: succeeded, attention (something reported), failed.',
      labelNames: ['state'],
      registers,
    });
    this.reconcileLinksEnded = new Counter({
      name: `${METRIC_PREFIX}reconcile_links_ended_total`,
      help: "Links ended by reconcile runs, by reason: pupil_deleted (the pupil's Moodle account was deleted) or pupil_left (suspended past PUPIL_LEFT_GRACE_DAYS).",
      labelNames: ['reason'],
      registers,
    });
    this.reconcileRolesReasserted = new Counter({
      name: `${METRIC_PREFIX}reconcile_roles_reasserted_total`,
      help: 'Parent roles assigned again by reconcile runs (each active link, every run, unless RECONCILE_REASSERT=false).',
      registers,
    });
    this.reconcileFindings = new Gauge({
      name: `${METRIC_PREFIX}reconcile_findings`,
      help: 'What the last finished reconcile run of this process reported for staff or IT, by kind (parent_suspended, auth_row_not_entitled, ...).',
      labelNames: ['kind'],
      registers,
    });
    this.reconcileLastFinished = new Gauge({
      name: `${METRIC_PREFIX}reconcile_last_success_timestamp_seconds`,
      help: 'When the last reconcile run of this process that did not fail finished (unix time): alert when it is more than a day or two old.',
      registers,
    });
  }

  /** For the reconcile run's onFinished hook; never throws. */
  recordReconcile(summary: ReconcileSummary, finishedAt: number): void {
    this.reconcileRuns.inc({ state: summary.state });
    if (summary.state === 'failed') return;
    this.reconcileLastFinished.set(Math.floor(finishedAt / 1000));
    this.reconcileRolesReasserted.inc(summary.counts.rolesReasserted);
    for (const kind of FINDING_KINDS) this.reconcileFindings.set({ kind }, 0);
    for (const finding of summary.findings) {
      if (finding.action === 'ended') this.reconcileLinksEnded.inc({ reason: finding.kind });
      else this.reconcileFindings.inc({ kind: finding.kind });
    }
  }

  /** For the Moodle client's onCall hook. */
  recordMoodleCall(wsfunction: string, outcome: MoodleCallOutcome, errorcode?: string): void {
    this.moodleCalls.inc({ wsfunction, outcome });
    if (outcome !== 'ok' && errorcode !== undefined) {
      this.moodleErrors.inc({ wsfunction, errorcode: ERRORCODE_LABEL.test(errorcode) ? errorcode : 'other' });
    }
  }

  /**
   * For the cycle's onFinished hook. Never throws: a metrics problem must not turn a finished
   * cycle into a failed one. The duration comes from the cycle's stored start and end times.
   */
  async recordCycle(summary: CycleSummary, times: () => Promise<{ startedAt: number; finishedAt: number | null } | undefined>): Promise<void> {
    this.cycles.inc({ state: summary.state });
    if (summary.moodleCheck !== null) {
      this.moodleCheckUp.set(summary.moodleCheck.ok ? 1 : 0);
      const problem = summary.moodleCheck.problem;
      if (!summary.moodleCheck.ok) this.moodleCheckFailures.inc({ problem: problem !== null && ERRORCODE_LABEL.test(problem) ? problem : 'other' });
    }
    for (const [outcome, n] of Object.entries(summary.outcomes)) if (n > 0) this.cycleRequestOutcomes.inc({ outcome }, n);
    try {
      const record = await times();
      if (record && record.finishedAt !== null) {
        this.cycleDuration.observe({ state: summary.state }, Math.max(0, record.finishedAt - record.startedAt) / 1000);
      }
    } catch (error) {
      this.sources.logger?.warn({ cycleId: summary.cycleId, error: (error as Error).message }, 'metrics: could not read the cycle times');
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
