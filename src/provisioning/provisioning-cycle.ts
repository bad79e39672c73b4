// The provisioning cycle: turns approved requests into Moodle parent accounts linked to their
// children, and carries out queued revocations. Moodle work is batched (calls grow with
// N / batch size), every outcome is recorded through the request lifecycle at the version the
// cycle read, and only one cycle runs at a time across all instances (a database lock).
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Database } from '../db/database';
import { AppError, ConflictError } from '../errors';
import type { Logger } from '../logger';
import type { MoodleClient, MoodleUser, RoleAssignment } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import { runScheduledTask, type ScheduledTaskReport } from '../moodle/sync-command';
import type { Actor, ProvisioningOutcome, RequestLifecycle } from '../requests/request-lifecycle';
import type { ChildRecord, RequestRecord } from '../requests/request-repository';
import { CYCLE_LOCK, DatabaseLock, type LockHolder } from './cycle-lock';
import {
  CycleRepository,
  type CycleCounts,
  type CycleState,
  type CycleStep,
  type CycleTrigger,
  type RequestOutcomeReport,
} from './cycle-repository';

export interface CycleSettings {
  parentRoleId: number | undefined;
  extraContextIds: readonly number[];
  syncCommand: string | undefined;
  passwordEmailCommand: string | undefined;
  commandTimeoutMs: number;
  lockTtlMs: number;
  syncWaitWarnMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

export interface CycleProgress {
  cycleId: number;
  step: CycleStep;
  done: number;
  total: number;
}

export interface CycleSummary {
  cycleId: number;
  state: CycleState;
  counts: CycleCounts;
  error: string | null;
  help: string | null;
  report: RequestOutcomeReport[];
}

/** Refused because the service is shutting down. */
export class CycleStoppingError extends ConflictError {
  constructor() {
    super('The service is stopping, so no provisioning cycle is started now.', 'stopping', {
      help: 'The next cycle runs when the service is back.',
    });
  }
}

export const STOPPED_MESSAGE =
  'The service was stopped while this cycle ran. The cycle finished the step it was on, kept a record of everything it did, ' +
  'and stopped; the next cycle does the rest.';

export class CycleAlreadyRunningError extends ConflictError {
  constructor(readonly cycleId: number | null) {
    super(
      cycleId === null ? 'A provisioning cycle is already running.' : `A provisioning cycle is already running (cycle ${cycleId}).`,
      'cycle_running',
      { help: 'Wait for it to finish; its progress is shown on the provisioning page.' },
    );
  }
}

/** A reason the whole cycle stops early, changing no request. */
class CycleStop extends Error {
  constructor(
    message: string,
    readonly help: string | null = null,
  ) {
    super(message);
  }
}

/** A stop asked for from outside (the service is shutting down), taken before the next step. */
class CycleStopRequested extends CycleStop {
  constructor() {
    super(STOPPED_MESSAGE);
  }
}

const LOCK_CONTENTION_CODES = new Set(['ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT']);

export interface CycleDependencies {
  db: Database;
  lifecycle: RequestLifecycle;
  /** Undefined when MOODLE_URL/MOODLE_TOKEN are not configured. */
  moodle: MoodleClient | undefined;
  settings: CycleSettings;
  logger: Logger;
  now?: () => number;
  /** Counts Moodle calls made by this process (the client's onCall hook feeds it). */
  moodleCallCount?: () => number;
  /** Called when a cycle finishes (staff summary mail, metrics). */
  onFinished?: (summary: CycleSummary) => Promise<void> | void;
  /** For crash tests: called at each step boundary. */
  onStep?: (step: CycleStep) => Promise<void> | void;
}

interface Work {
  request: RequestRecord;
  children: ChildRecord[];
}

const EMPTY_COUNTS = (): CycleCounts => ({
  requests: 0,
  provisioned: 0,
  childrenLinked: 0,
  childrenFailed: 0,
  waiting: 0,
  waitedTooLong: 0,
  refused: 0,
  unassigned: 0,
  unassignFailed: 0,
  moodleCalls: 0,
});

export class ProvisioningCycle {
  private readonly lock: DatabaseLock;
  private readonly cycles: CycleRepository;
  private readonly now: () => number;
  private running: { cycleId: number; progress: CycleProgress; promise: Promise<CycleSummary> } | undefined;
  private stopRequested = false;

  constructor(private readonly deps: CycleDependencies) {
    this.now = deps.now ?? Date.now;
    this.lock = new DatabaseLock(deps.db, CYCLE_LOCK, this.now);
    this.cycles = new CycleRepository(deps.db);
  }

  get repository(): CycleRepository {
    return this.cycles;
  }

  /** The cycle this process is running, with its progress. */
  current(): CycleProgress | undefined {
    return this.running ? { ...this.running.progress } : undefined;
  }

  /**
   * Asks a running cycle to stop once the step it is on is done (Moodle work already done is
   * still recorded), and refuses new cycles from now on. Resolves when no cycle of this process runs.
   */
  async requestStop(): Promise<void> {
    this.stopRequested = true;
    await this.running?.promise.catch(() => undefined);
  }

  /** Starts a cycle and answers at once with its id ("Run now"); the work goes on in the background. */
  async start(trigger: CycleTrigger, triggeredBy: string | null): Promise<{ cycleId: number; finished: Promise<CycleSummary> }> {
    if (this.stopRequested) throw new CycleStoppingError();
    const holder = `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    const cycleId = await this.takeLockAndOpenCycle(holder, trigger, triggeredBy);
    const progress: CycleProgress = { cycleId, step: 'starting', done: 0, total: 0 };
    const finished = this.execute(cycleId, holder, progress).finally(() => {
      this.running = undefined;
    });
    this.running = { cycleId, progress, promise: finished };
    return { cycleId, finished };
  }

  /**
   * Takes the lock and creates the cycle's record in one transaction, so the lock always names its
   * cycle (a refused caller is told which one runs) and a crash in between leaves neither behind.
   */
  private async takeLockAndOpenCycle(holder: string, trigger: CycleTrigger, triggeredBy: string | null): Promise<number> {
    const ttl = this.deps.settings.lockTtlMs;
    for (let attempt = 1; ; attempt++) {
      try {
        const opened = await this.deps.db.transaction(async (trx): Promise<{ refusedBy: LockHolder } | { refusedBy: null; id: number; interrupted: number; takenOverFrom: LockHolder | null }> => {
          const lock = new DatabaseLock(trx, CYCLE_LOCK, this.now);
          const cycles = new CycleRepository(trx);
          const acquired = await lock.acquire(holder, ttl);
          if (!acquired.acquired) return { refusedBy: acquired.current };
          const id = await cycles.create(trigger, triggeredBy, this.now());
          await lock.renew(holder, ttl, id);
          const interrupted = await cycles.markInterrupted(id, this.now());
          return { refusedBy: null, id, interrupted, takenOverFrom: acquired.takenOverFrom };
        });
        if (opened.refusedBy !== null) throw new CycleAlreadyRunningError(opened.refusedBy.cycleId);
        if (opened.takenOverFrom) this.deps.logger.warn({ cycleId: opened.id, from: opened.takenOverFrom.holder }, 'took over an expired cycle lock');
        if (opened.interrupted > 0) this.deps.logger.warn({ cycleId: opened.id, interrupted: opened.interrupted }, 'earlier cycles had stopped before finishing');
        return opened.id;
      } catch (error) {
        // Two instances taking over one expired lock at once: MySQL rolls one back; on the retry it sees the winner.
        if (attempt < 3 && LOCK_CONTENTION_CODES.has(String((error as { code?: unknown }).code))) continue;
        throw error;
      }
    }
  }

  /** Runs a whole cycle and waits for it (schedule, CLI). */
  async run(trigger: CycleTrigger, triggeredBy: string | null): Promise<CycleSummary> {
    const { finished } = await this.start(trigger, triggeredBy);
    return finished;
  }

  private async execute(cycleId: number, holder: string, progress: CycleProgress): Promise<CycleSummary> {
    const { settings, logger } = this.deps;
    const log = logger.child({ cycleId });
    const callsAtStart = this.deps.moodleCallCount?.() ?? 0;
    const counts = EMPTY_COUNTS();
    const report: RequestOutcomeReport[] = [];
    let syncOutput: string | null = null;
    let lostLock = false;
    // Well inside the TTL, so one late timer tick never lets the lock lapse.
    const renewEvery = Math.max(100, Math.floor(settings.lockTtlMs / 3));
    const renewal = setInterval(() => {
      this.lock.renew(holder, settings.lockTtlMs, cycleId).then(
        (ok) => {
          if (!ok) lostLock = true;
        },
        (error: unknown) => log.warn({ err: error }, 'could not renew the cycle lock'),
      );
    }, renewEvery);
    renewal.unref();

    let currentStep: CycleStep | undefined;
    /** Set when a stop request made the cycle skip Moodle work it would otherwise have done. */
    let stoppedEarly = false;
    const stopPoint = () => {
      if (this.stopRequested) throw new CycleStopRequested();
    };
    const step = async (name: CycleStep, done = 0, total = 0) => {
      if (lostLock) throw new CycleStop('The cycle lost its lock (it ran longer than CYCLE_LOCK_TTL_SECONDS without renewing) and stopped.');
      Object.assign(progress, { step: name, done, total });
      await this.cycles.progress(cycleId, name, done, total);
      if (name !== currentStep) {
        currentStep = name;
        await this.deps.onStep?.(name);
      }
    };

    let state: CycleState = 'succeeded';
    let error: string | null = null;
    let help: string | null = null;
    try {
      stopPoint();
      await step('checking');
      const moodle = this.deps.moodle;
      if (!moodle || settings.parentRoleId === undefined) {
        throw new CycleStop(
          'Moodle is not configured, so no accounts can be linked.',
          'Set MOODLE_URL, MOODLE_TOKEN and MOODLE_PARENT_ROLE_ID (see .env.example), then run "doctor" to check them.',
        );
      }
      const work = await this.cycles.dueApprovedRequests(this.now());
      const unassignments = await this.cycles.dueUnassignments(this.now());
      counts.requests = work.length;
      if (work.length === 0 && unassignments.length === 0) {
        log.info('nothing to do');
      } else {
        // Fails fast, before any change, when the token is invalid or Moodle is down.
        await moodle.getSiteInfo();

        let sync: (ScheduledTaskReport & { command: { output: string } }) | undefined;
        if (settings.syncCommand) {
          stopPoint();
          await step('syncing');
          sync = await runScheduledTask(settings.syncCommand, { timeoutMs: settings.commandTimeoutMs });
          syncOutput = sync.command.output;
          if (!sync.ok) {
            state = 'problems';
            error = `Moodle's user sync did not work: ${sync.summary}`;
            help = 'Read the sync output in the cycle report. Parents already in Moodle are still linked.';
          }
        }

        stopPoint();
        await step('looking_up', 0, work.length);
        const parents = await this.lookUpParents(moodle, work, unassignments);

        const assignments: Array<{ assignment: RoleAssignment; requestId: number; childId: number | null }> = [];
        // One entry per request, in work order: what to record, what to report, and the attempts so far.
        const pending = new Map<number, { outcome: ProvisioningOutcome; report: RequestOutcomeReport; attempts: number }>();
        for (const { request, children } of work) {
          const matched = children.filter((c) => c.linkState === 'matched' && c.moodleUserId !== null);
          const outcome: ProvisioningOutcome = { requestId: request.id, expectedVersion: request.version, linkedChildIds: [], failedChildren: [], requestErrors: [] };
          const entry: RequestOutcomeReport = { requestId: request.id, outcome: 'unchanged', message: null, children: [] };
          const parent = this.resolveParent(request, parents);
          if (parent.kind === 'waiting') {
            const waitedSince = request.waitingSince ?? this.now();
            const tooLong = this.now() - waitedSince > settings.syncWaitWarnMs;
            outcome.waiting = { message: tooLong ? parent.tooLongMessage : parent.message };
            outcome.nextAttemptAt = null;
            entry.outcome = 'waiting';
            entry.message = outcome.waiting.message;
            entry.children = matched.map((c) => ({ childId: c.id, outcome: 'waiting' as const }));
            counts.waiting += 1;
            if (tooLong) counts.waitedTooLong += 1;
          } else if (parent.kind === 'conflict') {
            outcome.requestErrors = [parent.message];
            outcome.nextAttemptAt = this.backoff(request.attempts);
            entry.outcome = 'failed';
            entry.message = parent.message;
          } else {
            outcome.parentMoodleUserId = parent.userId;
            for (const child of matched) {
              assignments.push({
                assignment: { roleid: settings.parentRoleId, userid: parent.userId, contextlevel: 'user', instanceid: child.moodleUserId as number },
                requestId: request.id,
                childId: child.id,
              });
            }
            for (const contextid of settings.extraContextIds) {
              assignments.push({ assignment: { roleid: settings.parentRoleId, userid: parent.userId, contextid }, requestId: request.id, childId: null });
            }
          }
          pending.set(request.id, { outcome, report: entry, attempts: request.attempts });
        }

        stopPoint();
        await step('assigning', 0, assignments.length);
        if (assignments.length > 0) {
          const result = await moodle.assignRolesIsolated(assignments.map((a) => a.assignment));
          const failedSet = new Map(result.failed.map((f) => [f.assignment, f.error]));
          for (const a of assignments) {
            const p = pending.get(a.requestId)!;
            const failure = failedSet.get(a.assignment);
            if (a.childId === null) {
              if (failure) p.outcome.requestErrors!.push(`The Parent role could not be added in the extra Moodle context: ${failure.message}`);
              continue;
            }
            if (failure) {
              p.outcome.failedChildren!.push({ childId: a.childId, error: failure.message });
              p.report.children.push({ childId: a.childId, outcome: 'failed', error: failure.message });
            } else {
              p.outcome.linkedChildIds!.push(a.childId);
              p.report.children.push({ childId: a.childId, outcome: 'linked' });
            }
          }
          for (const { outcome, report: entry, attempts } of pending.values()) {
            const problems = outcome.failedChildren!.length + outcome.requestErrors!.length;
            if (problems > 0) outcome.nextAttemptAt = this.backoff(attempts);
            if (entry.outcome === 'unchanged') {
              entry.outcome = problems > 0 ? (outcome.linkedChildIds!.length > 0 ? 'linked_some' : 'failed') : 'provisioned';
              if (problems > 0) entry.message = [...outcome.requestErrors!, ...outcome.failedChildren!.map((f) => f.error)].join(' ');
            }
          }
          await step('assigning', assignments.length, assignments.length);
        }

        // From here on Moodle has work of this cycle that must be recorded: a stop skips the
        // remaining Moodle steps but not the recording.
        const goOn = () => {
          if (this.stopRequested) stoppedEarly = true;
          return !this.stopRequested;
        };
        if (unassignments.length > 0 && goOn()) {
          await step('unassigning', 0, unassignments.length);
          await this.carryOutUnassignments(moodle, unassignments, parents, counts);
        }

        if (settings.passwordEmailCommand && sync?.ok && sync.inserted.length > 0 && goOn()) {
          await step('password_email');
          const mail = await runScheduledTask(settings.passwordEmailCommand, { timeoutMs: settings.commandTimeoutMs });
          syncOutput = `${syncOutput ?? ''}\n\n${mail.command.output}`.trim();
          if (!mail.ok) {
            state = 'problems';
            error = [error, `Moodle's new-user password email task did not work: ${mail.summary}`].filter(Boolean).join(' ');
          }
        }

        const outcomes = [...pending.values()].map((p) => p.outcome);
        await step('recording', 0, outcomes.length);
        const actor: Actor = { type: 'cycle', id: String(cycleId) };
        for (let i = 0; i < outcomes.length; i += 500) {
          const results = await this.deps.lifecycle.recordProvisioningOutcomes(outcomes.slice(i, i + 500), actor);
          for (const r of results) {
            const entry = pending.get(r.requestId)!.report;
            if (!r.applied) {
              entry.outcome = 'refused';
              entry.message = r.refusal ?? null;
              counts.refused += 1;
            } else if (r.status === 'provisioned') {
              entry.outcome = 'provisioned';
              counts.provisioned += 1;
            }
          }
          await step('recording', Math.min(i + 500, outcomes.length), outcomes.length);
        }
        for (const { outcome } of pending.values()) {
          counts.childrenLinked += outcome.linkedChildIds!.length;
          counts.childrenFailed += outcome.failedChildren!.length;
        }
        report.push(...[...pending.values()].map((p) => p.report));
        if (stoppedEarly) {
          state = 'interrupted';
          error = [STOPPED_MESSAGE, error].filter(Boolean).join(' ');
        } else if (state === 'succeeded' && (counts.childrenFailed > 0 || counts.waitedTooLong > 0 || counts.unassignFailed > 0 || report.some((r) => r.outcome === 'failed'))) {
          state = 'problems';
        }
      }
    } catch (caught) {
      state = caught instanceof CycleStopRequested ? 'interrupted' : 'failed';
      if (caught instanceof CycleStop) {
        error = caught.message;
        help = caught.help;
      } else if (caught instanceof AppError) {
        error = caught.message;
        help = caught.help ?? null;
      } else {
        // Its own message may hold SQL or a driver's words: those stay in the log, under the cycle id.
        error = `The cycle stopped because of an unexpected error. The service's log has the details (cycle ${cycleId}).`;
        log.error({ err: caught }, 'cycle failed');
      }
      log.warn({ error }, 'cycle stopped');
    } finally {
      clearInterval(renewal);
    }

    counts.moodleCalls = (this.deps.moodleCallCount?.() ?? 0) - callsAtStart;
    const summary: CycleSummary = { cycleId, state, counts, error, help, report };
    try {
      await this.cycles.finish(cycleId, { state, counts, error: error && help ? `${error}\n${help}` : error, syncOutput, report, now: this.now() });
      Object.assign(progress, { step: 'done' });
      await this.deps.onFinished?.(summary);
    } finally {
      await this.lock.release(holder).catch((e: unknown) => log.warn({ err: e }, 'could not release the cycle lock'));
    }
    log.info({ state, counts }, 'cycle finished');
    return summary;
  }

  private backoff(attempts: number): number {
    const { retryBaseMs, retryMaxMs } = this.deps.settings;
    return this.now() + Math.min(retryMaxMs, retryBaseMs * 2 ** Math.min(attempts, 30));
  }

  private async lookUpParents(
    moodle: MoodleClient,
    work: Work[],
    unassignments: Array<{ moodleUsername: string | null; parentMoodleUserId: number | null }>,
  ): Promise<Map<string, MoodleUser>> {
    const usernames = new Set<string>();
    for (const { request } of work) if (!request.linkExistingAccount && request.moodleUsername) usernames.add(request.moodleUsername);
    for (const u of unassignments) if (u.parentMoodleUserId === null && u.moodleUsername) usernames.add(u.moodleUsername);
    const users = await moodle.getUsersByField('username', [...usernames]);
    return new Map(users.map((u) => [u.username, u]));
  }

  private resolveParent(
    request: RequestRecord,
    parents: Map<string, MoodleUser>,
  ): { kind: 'found'; userId: number } | { kind: 'waiting'; message: string; tooLongMessage: string } | { kind: 'conflict'; message: string } {
    if (request.linkExistingAccount && request.moodleUserId !== null) return { kind: 'found', userId: request.moodleUserId };
    const user = request.moodleUsername ? parents.get(request.moodleUsername) : undefined;
    const minutes = Math.round(this.deps.settings.syncWaitWarnMs / 60_000);
    if (!user) {
      return {
        kind: 'waiting',
        message: 'Waiting for Moodle to create the account (at its next user sync).',
        tooLongMessage:
          `Moodle has still not created the account after more than ${minutes} minutes. Check that Moodle's External database ` +
          'authentication reads the auth table and that its user sync task runs (or set MOODLE_SYNC_COMMAND).',
      };
    }
    if (user.auth !== undefined && user.auth !== 'db') {
      return {
        kind: 'conflict',
        message:
          `Moodle already has an account named ${user.username} that this service does not manage (it signs in with "${user.auth}"). ` +
          'If it belongs to this parent, link the request to that existing account; otherwise ask the parent for another email address.',
      };
    }
    if (user.suspended) {
      return {
        kind: 'waiting',
        message: 'Waiting for Moodle to reactivate the suspended account (at its next user sync).',
        tooLongMessage: `The parent's Moodle account is still suspended after more than ${minutes} minutes. Check that Moodle's user sync runs.`,
      };
    }
    return { kind: 'found', userId: user.id };
  }

  private async carryOutUnassignments(
    moodle: MoodleClient,
    unassignments: Array<{ child: ChildRecord; moodleUsername: string | null; parentMoodleUserId: number | null }>,
    parents: Map<string, MoodleUser>,
    counts: CycleCounts,
  ): Promise<void> {
    const { parentRoleId } = this.deps.settings;
    const actor: Actor = { type: 'cycle', id: null };
    const nothingToDo: number[] = [];
    const items: Array<{ assignment: RoleAssignment; childId: number; attempts: number }> = [];
    for (const u of unassignments) {
      const parentId = u.parentMoodleUserId ?? (u.moodleUsername ? parents.get(u.moodleUsername)?.id : undefined);
      if (parentId === undefined || u.child.moodleUserId === null) {
        // The parent never got a Moodle account, so no role can have been assigned.
        nothingToDo.push(u.child.id);
        continue;
      }
      items.push({ assignment: { roleid: parentRoleId as number, userid: parentId, contextlevel: 'user', instanceid: u.child.moodleUserId }, childId: u.child.id, attempts: u.child.attempts });
    }
    const result = items.length > 0 ? await moodle.unassignRolesIsolated(items.map((i) => i.assignment)) : { done: [], failed: [] };
    const failed = new Map(result.failed.map((f) => [f.assignment, f.error]));
    const done = [...nothingToDo];
    for (const item of items) {
      const error = failed.get(item.assignment);
      if (error) {
        counts.unassignFailed += 1;
        await this.deps.lifecycle.recordUnassignFailed(item.childId, (error as MoodleError).message, this.backoff(item.attempts), actor);
      } else {
        done.push(item.childId);
      }
    }
    await this.deps.lifecycle.recordUnassigned(done, actor);
    counts.unassigned += done.length;
  }
}
