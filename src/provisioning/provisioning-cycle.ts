// The provisioning cycle: turns approved requests into Moodle parent accounts linked to their
// children, and carries out queued revocations. Moodle work is batched (calls grow with
// N / batch size), every outcome is recorded through the request lifecycle at the version the
// cycle read, and only one cycle runs at a time across all instances (a database lock).
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Database } from '../db/database';
import { AppError, ConflictError } from '../errors';
import type { Logger } from '../logger';
import { CANNOT_SEE_USERS_HELP, CANNOT_SEE_USERS_MESSAGE, seesOtherUsers } from '../moodle/moodle-checks';
import { isDeletedAccount, type MoodleClient, type MoodleUser, type RoleAssignment } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import { describeSyncRefusal, runScheduledTask, type ScheduledTaskReport } from '../moodle/sync-command';
import type { Actor, ProvisioningOutcome, RequestLifecycle } from '../requests/request-lifecycle';
import type { ChildRecord, RequestRecord } from '../requests/request-repository';
import { CYCLE_LOCK, DatabaseLock, heldByReconcile, keepLockRenewed, type LockHolder } from './cycle-lock';
import {
  CycleRepository,
  noOutcomes,
  type CycleCounts,
  type CycleState,
  type CycleStep,
  type CycleTrigger,
  type OutcomeCounts,
  type RequestOutcomeReport,
} from './cycle-repository';

/** How many accounts Moodle's sync skipped are told one by one in the cycle's summary line. */
const MAX_REFUSALS_IN_SUMMARY = 10;

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
  /** How many due requests are read and done at a time (default DEFAULT_CHUNK_SIZE); tests set it small. */
  chunkSize?: number;
}

/** Due requests per chunk: enough for full Moodle batches, few enough that memory stays flat. */
export const DEFAULT_CHUNK_SIZE = 1000;

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
  /** How many requests had each outcome; every entry is in the cycle's report (cycle_outcomes). */
  outcomes: OutcomeCounts;
  /**
   * The Moodle check every cycle starts with, busy or quiet: ok, or what failed (not_configured,
   * parent_role_not_set, cannot_see_users, or Moodle's errorcode such as invalidtoken or
   * unreachable). Null when the cycle stopped before checking.
   */
  moodleCheck: { ok: boolean; problem: string | null } | null;
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
  constructor(
    readonly cycleId: number | null,
    message = cycleId === null ? 'A provisioning cycle is already running.' : `A provisioning cycle is already running (cycle ${cycleId}).`,
    help = 'Wait for it to finish; its progress is shown on the provisioning page.',
  ) {
    super(message, 'cycle_running', { help });
  }
}

/** Refused because a reconcile run (the Moodle check) holds the cycle lock. */
export class MoodleCheckRunningError extends CycleAlreadyRunningError {
  constructor() {
    super(
      null,
      'A Moodle check (reconciliation) is running, so no provisioning cycle is started now.',
      'It takes a few minutes at most: the next scheduled cycle runs after it, or run provisioning again then.',
    );
  }
}

/** A reason the whole cycle stops early, changing no request. */
class CycleStop extends Error {
  constructor(
    message: string,
    readonly help: string | null = null,
    /** Set when Moodle's check failed: what failed, for the summary and the metrics. */
    readonly moodleProblem: string | null = null,
  ) {
    super(message);
  }
}

/** Why a cycle stops without Moodle; the cycle report recognises it by these words. */
export const MOODLE_NOT_CONFIGURED_MESSAGE = 'Moodle is not configured (MOODLE_URL and MOODLE_TOKEN are not both set), so no accounts can be linked.';

/** Why a matched child is not linked: its pupil account was deleted in Moodle (or never was). */
export function deletedPupilMessage(moodleUserId: number): string {
  return (
    `The pupil's Moodle account was deleted (Moodle has no active account with id ${moodleUserId}), so the parent is not linked to it. ` +
    'Revoke this child on the request page; if the pupil has a new Moodle account, the parent can ask again for that child.'
  );
}

/** Why a request waits: a matched pupil's Moodle account is suspended. */
export function suspendedPupilMessage(names: string[]): string {
  return (
    `Waiting: the pupil's Moodle account is suspended: ${names.join(', ')}. ` +
    'The parent is linked to this child at the first cycle after the account is active again in Moodle.'
  );
}

/** A stop asked for from outside (the service is shutting down), taken before the next step. */
class CycleStopRequested extends CycleStop {
  constructor() {
    super(STOPPED_MESSAGE);
  }
}

/**
 * A pupil's account as a look-up by id found it: absent or renamed by delete_user() is deleted
 * (users-by-field.id-deleted-user), suspended is a pupil who left or is away. Shared with the
 * cycle preview and the reconcile run, so all three judge a pupil alike.
 */
export function pupilStanding(pupil: MoodleUser | undefined): 'deleted' | 'suspended' | 'active' {
  if (pupil === undefined || isDeletedAccount(pupil)) return 'deleted';
  return pupil.suspended ? 'suspended' : 'active';
}

/** What the cycle makes of a request's parent account: found, waiting for Moodle's sync, or a conflict. */
export type ParentResolution = { kind: 'found'; userId: number } | { kind: 'waiting'; message: string; tooLongMessage: string } | { kind: 'conflict'; message: string };

/** Shared with the cycle preview, so the preview says what the cycle then does. */
export function resolveParent(request: RequestRecord, parents: ReadonlyMap<string, MoodleUser>, syncWaitWarnMs: number): ParentResolution {
  if (request.linkExistingAccount && request.moodleUserId !== null) return { kind: 'found', userId: request.moodleUserId };
  const user = request.moodleUsername ? parents.get(request.moodleUsername) : undefined;
  const minutes = Math.round(syncWaitWarnMs / 60_000);
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
        if (opened.refusedBy !== null) {
          throw heldByReconcile(opened.refusedBy) ? new MoodleCheckRunningError() : new CycleAlreadyRunningError(opened.refusedBy.cycleId);
        }
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
    const outcomes = noOutcomes();
    let syncOutput: string | null = null;
    const renewal = keepLockRenewed(this.lock, holder, settings.lockTtlMs, {
      cycleId,
      onError: (error: unknown) => log.warn({ err: error }, 'could not renew the cycle lock'),
    });

    let currentStep: CycleStep | undefined;
    /** Set when a stop request made the cycle skip Moodle work it would otherwise have done. */
    let stoppedEarly = false;
    const stopPoint = () => {
      if (this.stopRequested) throw new CycleStopRequested();
    };
    const step = async (name: CycleStep, done = 0, total = 0) => {
      if (renewal.lost()) throw new CycleStop('The cycle lost its lock (it ran longer than CYCLE_LOCK_TTL_SECONDS without renewing) and stopped.');
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
    let moodleCheck: CycleSummary['moodleCheck'] = null;
    try {
      stopPoint();
      await step('checking');
      const moodle = this.deps.moodle;
      const parentRoleId = settings.parentRoleId;
      if (!moodle) {
        throw new CycleStop(
          MOODLE_NOT_CONFIGURED_MESSAGE,
          'Set MOODLE_URL, MOODLE_TOKEN and MOODLE_PARENT_ROLE_ID (see .env.example), then run "doctor" to check them.',
          'not_configured',
        );
      }
      if (parentRoleId === undefined) {
        throw new CycleStop(
          'MOODLE_PARENT_ROLE_ID is not set, so no parent can be given the Parent role in Moodle.',
          "Set MOODLE_PARENT_ROLE_ID to the id of the Parent role (Site administration > Users > Permissions > Define roles; the id is in the address of the role's page), then run \"doctor\".",
          'parent_role_not_set',
        );
      }
      // Every cycle asks Moodle first, even with nothing to do, so a revoked token or an outage
      // shows in the cycle history, the metrics and the staff mail on a quiet day, not only on the
      // day work arrives. It changes nothing, so it fails fast, before any change.
      const checking = <T>(run: () => Promise<T>): Promise<T> =>
        run().catch((caught: unknown) => {
          if (caught instanceof MoodleError) moodleCheck = { ok: false, problem: caught.errorcode };
          throw caught;
        });
      const site = await checking(() => moodle.getSiteInfo());
      // The due work is read and done a chunk at a time (Moodle work, then its outcomes recorded), so
      // the cycle's memory does not grow with the number of requests; unassignments go with the first.
      const unassignments = await this.cycles.dueUnassignments(this.now());
      const due = await this.cycles.countDueApprovedRequests(this.now());
      const chunkSize = Math.max(1, settings.chunkSize ?? DEFAULT_CHUNK_SIZE);
      let work: Work[] = await this.cycles.dueApprovedRequests(this.now(), { afterId: 0, limit: chunkSize });
      if (work.length === 0 && unassignments.length === 0) {
        moodleCheck = { ok: true, problem: null };
        log.info('nothing to do');
      } else {
        let sync: (ScheduledTaskReport & { command: { output: string } }) | undefined;
        /** Accounts Moodle's sync skipped, by username: what to tell staff. */
        const syncRefusals = new Map<string, string>();
        // From the first recorded outcome on, a stop skips the remaining Moodle steps but not the recording.
        const goOn = () => {
          if (this.stopRequested) stoppedEarly = true;
          return !this.stopRequested;
        };
        const actor: Actor = { type: 'cycle', id: String(cycleId) };
        /** A later chunk: its due requests and what Moodle says of their pupils and parents (read-only calls). */
        const lookUpChunk = async (afterId: number) => {
          const chunk = await this.cycles.dueApprovedRequests(this.now(), { afterId, limit: chunkSize });
          if (chunk.length === 0) return null;
          const chunkPupils = await checking(() => this.lookUpPupils(moodle, chunk, [], site.userid));
          return { work: chunk, pupils: chunkPupils, parents: await this.lookUpParents(moodle, chunk, []) };
        };
        let next: { work: Work[]; pupils: Map<number, MoodleUser>; parents: Map<string, MoodleUser> } | null = null;
        let done = 0;
        for (let first = true; ; first = false) {
          const chunkUnassignments = first ? unassignments : [];
          if (next) work = next.work;
          const total = Math.max(due, done + work.length);
          counts.requests += work.length;
          // The pupils are looked up before anything changes: that proves the token can see users
          // at all, and tells which pupils were deleted or suspended since approval.
          const pupils = next ? next.pupils : await checking(() => this.lookUpPupils(moodle, work, chunkUnassignments, site.userid));
          moodleCheck = { ok: true, problem: null };

          if (first) {
            if (settings.syncCommand) {
              stopPoint();
              await step('syncing');
              sync = await runScheduledTask(settings.syncCommand, { timeoutMs: settings.commandTimeoutMs });
              syncOutput = sync.command.output;
              if (!sync.ok) {
                state = 'problems';
                error = `Moodle's user sync did not work: ${sync.summary}`;
                help = 'Read the sync output in the cycle report. Parents already in Moodle are still linked.';
              } else if (sync.errors.length > 0) {
                // The task ran, but skipped accounts: each belongs to a request staff must act on.
                const requestIds = await this.cycles.requestIdsByMoodleUsername(sync.errors.map((e) => e.username));
                for (const refused of sync.errors) syncRefusals.set(refused.username, describeSyncRefusal(refused, requestIds.get(refused.username)));
                state = 'problems';
                // The first few in the summary (a text column); every one is listed in the cycle report.
                const named = [...syncRefusals.values()].slice(0, MAX_REFUSALS_IN_SUMMARY);
                const more = syncRefusals.size - named.length;
                error =
                  `Moodle's user sync did not create ${sync.errors.length === 1 ? "one parent's account" : `${sync.errors.length} parents' accounts`}. ${named.join(' ')}` +
                  (more > 0 ? ` And ${more} more.` : '');
                help = 'Open each request named: its page says what to do. The list is also under "Moodle\'s user sync" in the cycle report.';
              }
            }
          }

          if (!next) {
            stopPoint();
            await step('looking_up', done, total);
          }
          const parents = next ? next.parents : await this.lookUpParents(moodle, work, chunkUnassignments);

          const assignments: Array<{ assignment: RoleAssignment; requestId: number; childId: number | null }> = [];
          // One entry per request, in work order: what to record, what to report, and the attempts so far.
          const pending = new Map<number, { outcome: ProvisioningOutcome; report: RequestOutcomeReport; attempts: number }>();
          for (const { request, children } of work) {
            const matched = children.filter((c) => c.linkState === 'matched' && c.moodleUserId !== null);
            const outcome: ProvisioningOutcome = { requestId: request.id, expectedVersion: request.version, linkedChildIds: [], failedChildren: [], requestErrors: [] };
            const entry: RequestOutcomeReport = { requestId: request.id, outcome: 'unchanged', message: null, children: [] };
            const parent = resolveParent(request, parents, settings.syncWaitWarnMs);
            const refusedBySync = parent.kind === 'waiting' && request.moodleUsername ? syncRefusals.get(request.moodleUsername) : undefined;
            if (refusedBySync !== undefined) {
              // Not "waiting": Moodle will skip this account at every sync until staff act.
              outcome.requestErrors = [refusedBySync];
              outcome.nextAttemptAt = this.backoff(request.attempts);
              entry.outcome = 'failed';
              entry.message = refusedBySync;
            } else if (parent.kind === 'waiting') {
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
              // Moodle accepts a role in a deleted pupil's context (assign.deleted-user-context), so
              // each pupil is checked here, never left to the assignment to refuse.
              const suspended: string[] = [];
              for (const child of matched) {
                const pupilId = child.moodleUserId as number;
                const standing = pupilStanding(pupils.get(pupilId));
                if (standing === 'deleted') {
                  const failure = deletedPupilMessage(pupilId);
                  outcome.failedChildren!.push({ childId: child.id, error: failure });
                  entry.children.push({ childId: child.id, outcome: 'failed', error: failure });
                } else if (standing === 'suspended') {
                  suspended.push(`${child.firstName} ${child.lastName}`.trim());
                  entry.children.push({ childId: child.id, outcome: 'waiting', error: "The pupil's Moodle account is suspended." });
                } else {
                  assignments.push({
                    assignment: { roleid: parentRoleId, userid: parent.userId, contextlevel: 'user', instanceid: pupilId },
                    requestId: request.id,
                    childId: child.id,
                  });
                }
              }
              if (suspended.length > 0) {
                // The request stays approved and is looked at again next cycle.
                outcome.waiting = { message: suspendedPupilMessage(suspended) };
                outcome.nextAttemptAt = null;
                counts.waiting += 1;
              }
              for (const contextid of settings.extraContextIds) {
                assignments.push({ assignment: { roleid: parentRoleId, userid: parent.userId, contextid }, requestId: request.id, childId: null });
              }
            }
            pending.set(request.id, { outcome, report: entry, attempts: request.attempts });
          }

          stopPoint();
          await step('assigning', done, total);
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
          }
          // Also for requests with nothing sent to Moodle (every pupil deleted or suspended).
          for (const { outcome, report: entry, attempts } of pending.values()) {
            if (entry.outcome !== 'unchanged') continue;
            const problems = [...outcome.requestErrors!, ...outcome.failedChildren!.map((f) => f.error)];
            if (problems.length > 0) {
              outcome.nextAttemptAt = this.backoff(attempts);
              entry.outcome = outcome.linkedChildIds!.length > 0 ? 'linked_some' : 'failed';
              entry.message = [outcome.waiting?.message, ...problems].filter(Boolean).join(' ');
            } else if (outcome.waiting) {
              entry.outcome = 'waiting';
              entry.message = outcome.waiting.message;
            } else if (assignments.length > 0) {
              entry.outcome = 'provisioned';
            }
          }

          // Moodle has work of this chunk that must be recorded.
          if (chunkUnassignments.length > 0 && goOn()) {
            await step('unassigning', 0, chunkUnassignments.length);
            await this.carryOutUnassignments(moodle, chunkUnassignments, parents, counts);
          }

          // The next chunk's look-ups wait for Moodle while this chunk's outcomes are written: only
          // read-only calls, so a crash or a stop meanwhile loses nothing.
          const lastId = work.at(-1)?.request.id;
          const lookingUp =
            lastId !== undefined && work.length === chunkSize && !this.stopRequested
              ? lookUpChunk(lastId).then(
                  (chunk) => ({ chunk }),
                  (caught: unknown) => ({ caught }),
                )
              : undefined;
          await step('recording', done, total);
          const results = await this.deps.lifecycle.recordProvisioningOutcomes([...pending.values()].map((p) => p.outcome), actor);
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
          const entries: RequestOutcomeReport[] = [];
          for (const { outcome, report: entry } of pending.values()) {
            counts.childrenLinked += outcome.linkedChildIds!.length;
            counts.childrenFailed += outcome.failedChildren!.length;
            outcomes[entry.outcome] += 1;
            entries.push(entry);
          }
          // The report grows a chunk at a time, so it is never held whole (and its page shows a running cycle's progress).
          await this.cycles.addOutcomes(cycleId, entries);
          done += work.length;
          await step('recording', done, total);

          if (!lookingUp) break;
          if (!goOn()) {
            await lookingUp;
            break;
          }
          await step('looking_up', done, Math.max(due, done));
          const looked = await lookingUp;
          if ('caught' in looked) throw looked.caught;
          if (looked.chunk === null) break;
          next = looked.chunk;
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

        if (stoppedEarly) {
          state = 'interrupted';
          error = [STOPPED_MESSAGE, error].filter(Boolean).join(' ');
        } else if (state === 'succeeded' && (counts.childrenFailed > 0 || counts.waitedTooLong > 0 || counts.unassignFailed > 0 || outcomes.failed > 0)) {
          state = 'problems';
        }
      }
    } catch (caught) {
      state = caught instanceof CycleStopRequested ? 'interrupted' : 'failed';
      if (caught instanceof CycleStop) {
        error = caught.message;
        help = caught.help;
        if (caught.moodleProblem !== null) moodleCheck = { ok: false, problem: caught.moodleProblem };
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
      renewal.stop();
    }

    counts.moodleCalls = (this.deps.moodleCallCount?.() ?? 0) - callsAtStart;
    const summary: CycleSummary = { cycleId, state, counts, error, help, outcomes, moodleCheck };
    try {
      await this.cycles.finish(cycleId, { state, counts, error: error && help ? `${error}\n${help}` : error, syncOutput, now: this.now() });
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

  /**
   * Looks up every matched pupil (and every pupil of a link being removed) by id, batched like the
   * parents. A token whose user lacks moodle/user:viewdetails gets [] for everyone, just as if
   * nobody existed (users-by-field.readonly-token): when none of these accounts, known to exist
   * since approval, comes back, a few more known accounts are asked for before the cycle stops,
   * so that pupils deleted in Moodle are not mistaken for a blind token.
   */
  private async lookUpPupils(
    moodle: MoodleClient,
    work: Work[],
    unassignments: Array<{ child: ChildRecord }>,
    tokenUserId: number,
  ): Promise<Map<number, MoodleUser>> {
    const ids = new Set<number>();
    for (const { children } of work) for (const c of children) if (c.linkState === 'matched' && c.moodleUserId !== null) ids.add(c.moodleUserId);
    for (const { child } of unassignments) if (child.moodleUserId !== null) ids.add(child.moodleUserId);
    if (ids.size === 0) return new Map();
    const found = await moodle.getUsersByField('id', [...ids]);
    if ([...ids].some((id) => id !== tokenUserId) && !seesOtherUsers(found, tokenUserId)) {
      const others = await this.cycles.knownMoodleAccountIds(ids, moodle.batchSize);
      const seen = others.length > 0 && seesOtherUsers(await moodle.getUsersByField('id', others), tokenUserId);
      if (!seen) {
        throw new CycleStop(
          `${CANNOT_SEE_USERS_MESSAGE} The cycle stopped and changed nothing.`,
          `${CANNOT_SEE_USERS_HELP} (If that capability is given, the pupils' accounts looked for were all deleted in Moodle: match those children again.)`,
          'cannot_see_users',
        );
      }
    }
    return new Map(found.map((u) => [u.id, u]));
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
