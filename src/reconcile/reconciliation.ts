// The reconcile run (the "Moodle check"): re-checks every active link and provisioned parent
// against Moodle, ends links to pupils deleted in Moodle (and, after a grace period, to pupils whose
// account stays suspended) through the request lifecycle's revocation, re-asserts every active
// link's Parent role, and reports drift it must not fix by itself. It takes the cycle's lock, so a
// reconcile and a cycle never run at once, and its Moodle calls grow with N / batch size.
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Database } from '../db/database';
import { AppError, ConflictError } from '../errors';
import type { Logger } from '../logger';
import { CANNOT_SEE_USERS_HELP, CANNOT_SEE_USERS_MESSAGE } from '../moodle/moodle-checks';
import { isDeletedAccount, type MoodleClient, type MoodleUser, type RoleAssignment } from '../moodle/moodle-client';
import { MoodleError } from '../moodle/moodle-error';
import { CYCLE_LOCK, DatabaseLock, heldByReconcile, keepLockRenewed, RECONCILE_HOLDER_PREFIX } from '../provisioning/cycle-lock';
import { CycleAlreadyRunningError, CycleStoppingError, MOODLE_NOT_CONFIGURED_MESSAGE, pupilStanding } from '../provisioning/provisioning-cycle';
import type { Actor, RequestLifecycle } from '../requests/request-lifecycle';
import { STATUS_LABELS } from '../requests/request-states';
import {
  ReconcileRepository,
  type ActiveLink,
  type ReconcileCounts,
  type ReconcileFinding,
  type ReconcileState,
  type ReconcileTrigger,
} from './reconcile-repository';

const DAY_MS = 86_400_000;
/** How often a scheduled run that found the lock held tries again while it waits. */
const LOCK_POLL_MS = 1_000;

export interface ReconcileSettings {
  parentRoleId: number | undefined;
  lockTtlMs: number;
  /** Days a pupil may stay suspended before the link ends; null: report only. */
  pupilLeftGraceDays: number | null;
  /** false: report what would be re-asserted, assign nothing. */
  reassert: boolean;
  /** How long a scheduled run waits for a cycle holding the lock before it gives up. */
  scheduledLockWaitMs: number;
}

export interface ReconcileSummary {
  runId: number;
  state: ReconcileState;
  counts: ReconcileCounts;
  error: string | null;
  help: string | null;
  findings: ReconcileFinding[];
  /** Set when the run stopped on Moodle's check: what failed (cannot_see_users, invalidtoken, …). */
  moodleProblem: string | null;
}

export interface ReconcileDependencies {
  db: Database;
  authTable: string;
  lifecycle: RequestLifecycle;
  moodle: MoodleClient | undefined;
  settings: ReconcileSettings;
  logger: Logger;
  now?: () => number;
  moodleCallCount?: () => number;
  /** Called when a run finishes (staff mail, metrics). */
  onFinished?: (summary: ReconcileSummary) => Promise<void> | void;
}

export interface RunOptions {
  /** Change nothing: links that would end are reported, no role is given (the first run at a school). */
  reportOnly?: boolean;
}

/** How a report-only run words a link it would have ended. */
export const REPORT_ONLY_PREFIX = 'Report only, nothing was changed. A check would end this link: ';

/** Refused because another reconcile run holds the lock. */
export class ReconcileAlreadyRunningError extends CycleAlreadyRunningError {
  constructor() {
    super(null, 'A Moodle check is already running.', 'Wait for it to finish: its result appears on the Moodle check page.');
  }
}

/** A reason the whole run stops early, having changed nothing. */
class ReconcileStop extends Error {
  constructor(
    message: string,
    readonly help: string | null,
    readonly moodleProblem: string | null,
  ) {
    super(message);
  }
}

const EMPTY_COUNTS = (): ReconcileCounts => ({
  linksChecked: 0,
  parentsChecked: 0,
  linksEnded: 0,
  parentsRevoked: 0,
  pupilsDeleted: 0,
  pupilsSuspended: 0,
  parentsMissing: 0,
  parentsSuspended: 0,
  parentsNotAuthDb: 0,
  rolesReasserted: 0,
  reassertFailed: 0,
  authTableProblems: 0,
  changedMeanwhile: 0,
  moodleCalls: 0,
});

function day(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The words of each finding, for the audit trail, the page, the mail and the CLI. */
export const RECONCILE_MESSAGES = {
  pupilDeleted: "Link ended: the pupil's Moodle account was deleted.",
  pupilLeft: (since: number, days: number) =>
    `Link ended: the pupil's Moodle account has been suspended since ${day(since)}, more than ${days} days (the pupil left).`,
  pupilSuspended: (since: number, endsAt: number | null) =>
    endsAt === null
      ? `The pupil's Moodle account has been suspended since ${day(since)}. PUPIL_LEFT_GRACE_DAYS is off, so the link stays until staff remove it.`
      : `The pupil's Moodle account has been suspended since ${day(since)}: the link ends on ${day(endsAt)} unless the account is active again by then.`,
  parentMissing: (username: string) =>
    `The parent's Moodle account (${username}) is not in Moodle although the request is provisioned: it was deleted in Moodle, ` +
    "or Moodle's user sync has not run since. The sync creates it again from the auth table; the links are given again at the next check after that.",
  parentSuspended:
    "The parent's Moodle account is suspended although the auth table lets them in: Moodle's user sync does not seem to be running (it makes the account active again).",
  parentNotAuthDb: (auth: string) =>
    `The parent's Moodle account now signs in with "${auth}", not through this service (External database): changes here no longer reach it.`,
  reassertFailed: (reason: string) => `The Parent role could not be given again in Moodle: ${reason}`,
  changedMeanwhile: 'The request changed while the Moodle check ran, so its link was left as it is; the next check looks at it again.',
  authRowNotEntitled: (username: string, requestId: number | null, status: string | null) =>
    `The auth table has a row for ${username} that no approved or provisioned request stands behind` +
    (requestId === null ? '' : ` (request ${requestId} is ${status ? STATUS_LABELS[status as keyof typeof STATUS_LABELS].toLowerCase() : 'gone'})`) +
    ": Moodle lets this person in. Nothing was changed: find out how the row got there, then remove it.",
  authRowMissing: (username: string | null, requestId: number, status: string) =>
    `Request ${requestId} is ${STATUS_LABELS[status as keyof typeof STATUS_LABELS].toLowerCase()} but the auth table has no row for ${username ?? 'its parent'}, ` +
    "so Moodle's sync suspends the parent's account. Nothing was changed: revoke and approve the request again to restore the row.",
};

export class Reconciliation {
  readonly repository: ReconcileRepository;
  private readonly lock: DatabaseLock;
  private readonly now: () => number;
  private running: Promise<ReconcileSummary> | undefined;
  private stopRequested = false;

  constructor(private readonly deps: ReconcileDependencies) {
    this.now = deps.now ?? Date.now;
    this.lock = new DatabaseLock(deps.db, CYCLE_LOCK, this.now);
    this.repository = new ReconcileRepository(deps.db, deps.authTable);
  }

  /** Refuses new runs and waits for one of this process to finish. */
  async requestStop(): Promise<void> {
    this.stopRequested = true;
    await this.running?.catch(() => undefined);
  }

  /** Starts a run and answers at once with its id (the dashboard button); the work goes on. */
  async start(trigger: ReconcileTrigger, triggeredBy: string | null, options: RunOptions = {}): Promise<{ runId: number; finished: Promise<ReconcileSummary> }> {
    if (this.stopRequested) throw new CycleStoppingError();
    const holder = `${RECONCILE_HOLDER_PREFIX}${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    await this.takeLock(holder, trigger === 'schedule' ? this.deps.settings.scheduledLockWaitMs : 0);
    let runId: number;
    try {
      runId = await this.repository.create(trigger, triggeredBy, this.now());
      await this.repository.markAbandoned(runId, this.now());
    } catch (error) {
      await this.lock.release(holder).catch(() => undefined);
      throw error;
    }
    const finished = this.execute(runId, holder, options.reportOnly ?? false).finally(() => {
      this.running = undefined;
    });
    this.running = finished;
    return { runId, finished };
  }

  /** Runs a whole reconcile and waits for it (schedule, CLI, tests). */
  async run(trigger: ReconcileTrigger, triggeredBy: string | null, options: RunOptions = {}): Promise<ReconcileSummary> {
    const { finished } = await this.start(trigger, triggeredBy, options);
    return finished;
  }

  /**
   * The cycle's lock. The dashboard and the command line are told at once when it is held; a
   * scheduled run waits up to waitMs for a cycle to finish, so the daily check is not lost to it.
   */
  private async takeLock(holder: string, waitMs: number): Promise<void> {
    const deadline = this.now() + waitMs;
    for (;;) {
      const acquired = await this.lock.acquire(holder, this.deps.settings.lockTtlMs);
      if (acquired.acquired) {
        if (acquired.takenOverFrom) this.deps.logger.warn({ from: acquired.takenOverFrom.holder }, 'reconcile took over an expired cycle lock');
        return;
      }
      if (this.now() >= deadline || this.stopRequested) {
        throw heldByReconcile(acquired.current) ? new ReconcileAlreadyRunningError() : new CycleAlreadyRunningError(acquired.current.cycleId);
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
    }
  }

  private async execute(runId: number, holder: string, reportOnly: boolean): Promise<ReconcileSummary> {
    const { settings } = this.deps;
    const log = this.deps.logger.child({ reconcileRunId: runId });
    const callsAtStart = this.deps.moodleCallCount?.() ?? 0;
    const counts = EMPTY_COUNTS();
    const findings: ReconcileFinding[] = [];
    const renewal = keepLockRenewed(this.lock, holder, settings.lockTtlMs, { onError: (error: unknown) => log.warn({ err: error }, 'could not renew the cycle lock') });

    let state: ReconcileState = 'succeeded';
    let error: string | null = null;
    let help: string | null = null;
    let moodleProblem: string | null = null;
    try {
      await this.reconcile(runId, counts, findings, renewal.lost, reportOnly);
      if (findings.some((f) => f.action === 'reported')) state = 'attention';
    } catch (caught) {
      state = 'failed';
      if (caught instanceof ReconcileStop) {
        error = caught.message;
        help = caught.help;
        moodleProblem = caught.moodleProblem;
      } else if (caught instanceof MoodleError) {
        error = caught.message;
        help = caught.help ?? null;
        moodleProblem = caught.errorcode;
      } else if (caught instanceof AppError) {
        error = caught.message;
        help = caught.help ?? null;
      } else {
        error = `The Moodle check stopped because of an unexpected error. The service's log has the details (check ${runId}).`;
        log.error({ err: caught }, 'reconcile failed');
      }
      log.warn({ error }, 'reconcile stopped');
    } finally {
      renewal.stop();
    }
    counts.moodleCalls = (this.deps.moodleCallCount?.() ?? 0) - callsAtStart;
    const summary: ReconcileSummary = { runId, state, counts, error, help, findings, moodleProblem };
    try {
      await this.repository.finish(runId, { state, counts, error: error && help ? `${error}\n${help}` : error, findings, now: this.now() });
      await this.deps.onFinished?.(summary);
    } finally {
      await this.lock.release(holder).catch((e: unknown) => log.warn({ err: e }, 'could not release the cycle lock'));
    }
    log.info({ state, counts }, 'reconcile finished');
    return summary;
  }

  private async reconcile(runId: number, counts: ReconcileCounts, findings: ReconcileFinding[], lockLost: () => boolean, reportOnly: boolean): Promise<void> {
    const { settings } = this.deps;
    const moodle = this.deps.moodle;
    if (!moodle) {
      throw new ReconcileStop(MOODLE_NOT_CONFIGURED_MESSAGE, 'Set MOODLE_URL, MOODLE_TOKEN and MOODLE_PARENT_ROLE_ID (see .env.example), then run "doctor".', 'not_configured');
    }
    const parentRoleId = settings.parentRoleId;
    if (parentRoleId === undefined) {
      throw new ReconcileStop('MOODLE_PARENT_ROLE_ID is not set, so no link can be checked.', 'Set MOODLE_PARENT_ROLE_ID, then run "doctor".', 'parent_role_not_set');
    }
    const site = await moodle.getSiteInfo();
    const links = await this.repository.activeLinks();
    const parents = await this.repository.provisionedParents();
    counts.linksChecked = links.length;
    counts.parentsChecked = parents.length;

    // Look everyone up first: nothing changes until Moodle has answered for all of them.
    const pupilIds = [...new Set(links.map((l) => l.pupilId))];
    const parentIds = new Set<number>();
    const usernames = new Set<string>();
    for (const p of [...parents.map((p) => ({ existing: p.linkExistingAccount, id: p.moodleUserId, username: p.username })), ...links.map((l) => ({ existing: l.linkExistingAccount, id: l.parentMoodleUserId, username: l.parentUsername }))]) {
      if (p.existing && p.id !== null) parentIds.add(p.id);
      else if (!p.existing && p.username) usernames.add(p.username);
    }
    const byId = new Map((await moodle.getUsersByField('id', [...new Set([...pupilIds, ...parentIds])])).map((u) => [u.id, u]));
    const byUsername = new Map((await moodle.getUsersByField('username', [...usernames])).map((u) => [u.username, u]));
    // A token without moodle/user:viewdetails sees nobody but itself (users-by-field.readonly-token):
    // every pupil would look deleted. Everyone absent at once is that, never a reason to end every link.
    const asked = [...pupilIds, ...parentIds].filter((id) => id !== site.userid).length + usernames.size;
    const seen = [...byId.values(), ...byUsername.values()].filter((u) => u.id !== site.userid).length;
    if (asked > 0 && seen === 0) {
      throw new ReconcileStop(`${CANNOT_SEE_USERS_MESSAGE} The Moodle check stopped and changed nothing.`, CANNOT_SEE_USERS_HELP, 'cannot_see_users');
    }

    // The pupils: deleted ends the link now; suspended starts (or continues) the grace period.
    const now = this.now();
    const deleted = new Set<number>();
    const suspended: number[] = [];
    const active: number[] = [];
    for (const id of pupilIds) {
      const standing = pupilStanding(byId.get(id));
      if (standing === 'deleted') deleted.add(id);
      else if (standing === 'suspended') suspended.push(id);
      else active.push(id);
    }
    await this.repository.clearSuspensions(active);
    await this.repository.recordSuspended(suspended, now);
    const since = await this.repository.suspensionsOf(suspended);
    counts.pupilsDeleted = deleted.size;
    counts.pupilsSuspended = suspended.length;
    const graceDays = settings.pupilLeftGraceDays;
    const toEnd: Array<{ link: ActiveLink; kind: 'pupil_deleted' | 'pupil_left'; reason: string }> = [];
    for (const link of links) {
      if (deleted.has(link.pupilId)) {
        toEnd.push({ link, kind: 'pupil_deleted', reason: RECONCILE_MESSAGES.pupilDeleted });
        continue;
      }
      const firstSeen = since.get(link.pupilId);
      if (firstSeen === undefined) continue;
      const endsAt = graceDays === null ? null : firstSeen + graceDays * DAY_MS;
      if (endsAt !== null && graceDays !== null && now >= endsAt) {
        toEnd.push({ link, kind: 'pupil_left', reason: RECONCILE_MESSAGES.pupilLeft(firstSeen, graceDays) });
      } else {
        findings.push({ kind: 'pupil_suspended', action: 'reported', requestId: link.requestId, childId: link.childId, moodleUserId: link.pupilId, message: RECONCILE_MESSAGES.pupilSuspended(firstSeen, endsAt) });
      }
    }

    if (lockLost()) throw new ReconcileStop('The Moodle check lost the cycle lock (it ran longer than CYCLE_LOCK_TTL_SECONDS without renewing) and stopped.', null, null);
    const ended = reportOnly ? this.reportEndings(toEnd, findings) : await this.endLinks(runId, toEnd, counts, findings);

    // Provisioned parents still entitled after that: missing, suspended or no longer auth_db.
    for (const parent of parents) {
      if (ended.revokedRequests.has(parent.requestId)) continue;
      const user = parent.linkExistingAccount ? (parent.moodleUserId === null ? undefined : byId.get(parent.moodleUserId)) : parent.username ? byUsername.get(parent.username) : undefined;
      const report = (kind: ReconcileFinding['kind'], message: string) =>
        findings.push({ kind, action: 'reported', requestId: parent.requestId, childId: null, moodleUserId: user?.id ?? parent.moodleUserId, message });
      if (user === undefined || isDeletedAccount(user)) {
        counts.parentsMissing += 1;
        report('parent_missing', RECONCILE_MESSAGES.parentMissing(parent.username ?? `user ${parent.moodleUserId}`));
      } else if (!parent.linkExistingAccount && user.auth !== undefined && user.auth !== 'db') {
        counts.parentsNotAuthDb += 1;
        report('parent_not_auth_db', RECONCILE_MESSAGES.parentNotAuthDb(user.auth));
      } else if (user.suspended && parent.hasAuthRow) {
        counts.parentsSuspended += 1;
        report('parent_suspended', RECONCILE_MESSAGES.parentSuspended);
      }
    }

    // Every link still active, to an active pupil and a parent Moodle has: its role again.
    const reassert: Array<{ assignment: RoleAssignment; link: ActiveLink }> = [];
    for (const link of links) {
      if (ended.childIds.has(link.childId) || ended.revokedRequests.has(link.requestId) || deleted.has(link.pupilId) || since.has(link.pupilId)) continue;
      const parent = this.parentAccount(link, byId, byUsername);
      if (parent === undefined) continue;
      reassert.push({ assignment: { roleid: parentRoleId, userid: parent.id, contextlevel: 'user', instanceid: link.pupilId }, link });
    }
    if (settings.reassert && !reportOnly && reassert.length > 0) {
      if (lockLost()) throw new ReconcileStop('The Moodle check lost the cycle lock and stopped before giving roles again.', null, null);
      const result = await moodle.assignRolesIsolated(reassert.map((r) => r.assignment));
      const failed = new Map(result.failed.map((f) => [f.assignment, f.error]));
      for (const { assignment, link } of reassert) {
        const failure = failed.get(assignment);
        if (failure === undefined) continue;
        counts.reassertFailed += 1;
        findings.push({ kind: 'reassert_failed', action: 'reported', requestId: link.requestId, childId: link.childId, moodleUserId: link.pupilId, message: RECONCILE_MESSAGES.reassertFailed(failure.message) });
      }
      counts.rolesReasserted = result.done.length;
    }

    for (const problem of await this.repository.authTableProblems()) {
      counts.authTableProblems += 1;
      findings.push({
        kind: problem.kind,
        action: 'reported',
        requestId: problem.requestId,
        childId: null,
        moodleUserId: null,
        message:
          problem.kind === 'auth_row_not_entitled'
            ? RECONCILE_MESSAGES.authRowNotEntitled(problem.username ?? '', problem.requestId, problem.requestStatus)
            : RECONCILE_MESSAGES.authRowMissing(problem.username, problem.requestId as number, problem.requestStatus as string),
      });
    }
  }

  /** The parent's Moodle account for a link, or undefined when Moodle has none (nothing to give). */
  private parentAccount(link: ActiveLink, byId: Map<number, MoodleUser>, byUsername: Map<string, MoodleUser>): MoodleUser | undefined {
    const user = link.linkExistingAccount
      ? link.parentMoodleUserId === null ? undefined : byId.get(link.parentMoodleUserId)
      : link.parentUsername ? byUsername.get(link.parentUsername) : undefined;
    return user === undefined || isDeletedAccount(user) ? undefined : user;
  }

  /** A report-only run: each link that would end is listed as such, and nothing changes. */
  private reportEndings(toEnd: Array<{ link: ActiveLink; kind: 'pupil_deleted' | 'pupil_left'; reason: string }>, findings: ReconcileFinding[]): { childIds: Set<number>; revokedRequests: Set<number> } {
    for (const { link, kind, reason } of toEnd) {
      findings.push({ kind, action: 'reported', requestId: link.requestId, childId: link.childId, moodleUserId: link.pupilId, message: `${REPORT_ONLY_PREFIX}${reason}` });
    }
    return { childIds: new Set(toEnd.map((e) => e.link.childId)), revokedRequests: new Set() };
  }

  /**
   * Ends links one by one through the lifecycle's revocation (revokeChild: the link revoked, its role
   * queued for removal by the next cycle, the request revoked and its auth row removed with the last
   * link), each at the version the run read: a request staff changed meanwhile is left alone.
   */
  private async endLinks(
    runId: number,
    toEnd: Array<{ link: ActiveLink; kind: 'pupil_deleted' | 'pupil_left'; reason: string }>,
    counts: ReconcileCounts,
    findings: ReconcileFinding[],
  ): Promise<{ childIds: Set<number>; revokedRequests: Set<number> }> {
    const actor: Actor = { type: 'reconcile', id: String(runId) };
    const versions = new Map<number, number>();
    const childIds = new Set<number>();
    const revokedRequests = new Set<number>();
    const skippedRequests = new Set<number>();
    const endedPupils = new Set<number>();
    const keptPupils = new Set<number>();
    for (const { link, kind, reason } of toEnd) {
      if (skippedRequests.has(link.requestId)) {
        keptPupils.add(link.pupilId);
        continue;
      }
      try {
        const after = await this.deps.lifecycle.revokeChild(link.requestId, link.childId, { expectedVersion: versions.get(link.requestId) ?? link.requestVersion, reason }, actor);
        versions.set(link.requestId, after.version);
        childIds.add(link.childId);
        endedPupils.add(link.pupilId);
        counts.linksEnded += 1;
        if (after.status === 'revoked') {
          revokedRequests.add(link.requestId);
          counts.parentsRevoked += 1;
        }
        findings.push({ kind, action: 'ended', requestId: link.requestId, childId: link.childId, moodleUserId: link.pupilId, message: reason });
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        skippedRequests.add(link.requestId);
        keptPupils.add(link.pupilId);
        counts.changedMeanwhile += 1;
        findings.push({ kind: 'changed_meanwhile', action: 'reported', requestId: link.requestId, childId: link.childId, moodleUserId: link.pupilId, message: RECONCILE_MESSAGES.changedMeanwhile });
      }
    }
    // A pupil with no link left needs no grace period any more.
    await this.repository.clearSuspensions([...endedPupils].filter((id) => !keptPupils.has(id)));
    return { childIds, revokedRequests };
  }
}
