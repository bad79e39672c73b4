// Approve, deny or mark as not genuine several requests from the list at once. Each request goes
// through the lifecycle on its own (its own transaction, refused if it changed since the list was
// shown), and each gets a plain-words line saying what happened to it.
import { AppError, ConflictError } from '../errors';
import type { Logger } from '../logger';
import { MoodleError } from '../moodle/moodle-error';
import { findPupilCandidates, type PupilLookupClient } from '../moodle/pupil-candidates';
import type { Actor, ChildMatch, RequestLifecycle } from '../requests/request-lifecycle';
import type { ChildRecord, RequestRecord } from '../requests/request-repository';
import { STATUS_LABELS, type RequestStatus } from '../requests/request-states';
import type { GuardianRecordsService } from '../guardian-records/guardian-records.service';

export const BULK_ACTIONS = ['approve', 'deny', 'bogus'] as const;
export type BulkAction = (typeof BULK_ACTIONS)[number];

/** One selected row: its id and the version the list showed. */
export interface BulkItem {
  id: number;
  expectedVersion: number;
}

export type BulkOutcome = 'done' | 'needs_matching' | 'not_changed';

export interface BulkRowResult {
  id: number;
  parentName: string | null;
  outcome: BulkOutcome;
  /** What happened, in words for the school office. */
  message: string;
  status: RequestStatus | null;
}

/** Requests worked on at the same time: Moodle look-ups overlap, the database is not flooded. */
const CONCURRENCY = 3;

const childName = (c: Pick<ChildRecord, 'firstName' | 'lastName' | 'tutorGroup'>) => `${c.firstName} ${c.lastName}${c.tutorGroup ? ` (${c.tutorGroup})` : ''}`;
const parentName = (r: RequestRecord) => [r.parentTitle, r.parentFirstName, r.parentLastName].filter((p) => p).join(' ');

async function eachWithConcurrency<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export class RequestsBulkActions {
  constructor(
    private readonly deps: {
      lifecycle: RequestLifecycle;
      /** Undefined when Moodle is not configured: nothing can be matched automatically. */
      moodle: PupilLookupClient | undefined;
      logger: Pick<Logger, 'error' | 'warn'>;
      /** The pupils the school's guardian records name for a request that matches them fully. */
      schoolRecords?: Pick<GuardianRecordsService, 'approvalMatches'>;
    },
  ) {}

  async run(action: BulkAction, items: readonly BulkItem[], options: { reason: string }, actor: Actor): Promise<BulkRowResult[]> {
    // Once Moodle has failed, the other rows are not made to wait for it to fail again.
    const moodleProblem: { message: string | null } = { message: null };
    return eachWithConcurrency(items, CONCURRENCY, (item) => this.one(action, item, options, actor, moodleProblem));
  }

  private async one(action: BulkAction, item: BulkItem, options: { reason: string }, actor: Actor, moodleProblem: { message: string | null }): Promise<BulkRowResult> {
    let request: RequestRecord | undefined;
    const result = (outcome: BulkOutcome, message: string, status: RequestStatus | null = request?.status ?? null): BulkRowResult => ({
      id: item.id,
      parentName: request ? parentName(request) : null,
      outcome,
      message,
      status,
    });
    try {
      const current = await this.deps.lifecycle.get(item.id);
      request = current.request;
      if (request.version !== item.expectedVersion) return result('not_changed', this.changedMessage(request.status));
      const input = { expectedVersion: item.expectedVersion };
      switch (action) {
        case 'deny': {
          const after = await this.deps.lifecycle.denyRequest(item.id, { ...input, reason: options.reason }, actor);
          return result('done', 'Denied. The parent is emailed the reason.', after.status);
        }
        case 'bogus': {
          const after = await this.deps.lifecycle.markBogus(item.id, { ...input, reason: options.reason || null }, actor);
          return result('done', 'Marked as not genuine. The parent is not told.', after.status);
        }
        case 'approve':
          return await this.approve(request, current.children, item, actor, moodleProblem, result);
      }
    } catch (error) {
      if (error instanceof ConflictError && error.code === 'stale') return result('not_changed', this.changedMessage(null));
      if (error instanceof AppError) return result('not_changed', `Not changed: ${error.message}`);
      this.deps.logger.error({ err: error, requestId: item.id, action }, 'bulk action failed on one request');
      return result('not_changed', 'Not changed: something went wrong on our side with this request. Try it again on its own page.');
    }
  }

  private async approve(
    request: RequestRecord,
    children: ChildRecord[],
    item: BulkItem,
    actor: Actor,
    moodleProblem: { message: string | null },
    result: (outcome: BulkOutcome, message: string, status?: RequestStatus | null) => BulkRowResult,
  ): Promise<BulkRowResult> {
    if (request.status !== 'pending') {
      return result('not_changed', `Not changed: only requests waiting for review can be approved, and this one is "${STATUS_LABELS[request.status].toLowerCase()}".`);
    }
    const active = children.filter((c) => c.linkState !== 'revoked');
    const fromRecords = await this.deps.schoolRecords?.approvalMatches(request.id, active.map((c) => c.id));
    if (fromRecords) {
      const after = await this.deps.lifecycle.approveRequest(request.id, { expectedVersion: item.expectedVersion, children: fromRecords }, actor);
      return result('done', `Approved, with the ${fromRecords.length === 1 ? 'pupil' : `${fromRecords.length} pupils`} the school records name. The account is set up at the next provisioning cycle.`, after.status);
    }
    const moodle = this.deps.moodle;
    if (!moodle) {
      return result('needs_matching', 'Needs matching on its own page: Moodle is not set up for this service, so its pupils cannot be found automatically. Left waiting for review.');
    }
    if (moodleProblem.message) return result('needs_matching', `Needs matching on its own page: ${moodleProblem.message} Left waiting for review.`);
    const matches: ChildMatch[] = [];
    const unsure: string[] = [];
    for (const child of children.filter((c) => c.linkState !== 'revoked')) {
      let match;
      try {
        match = await findPupilCandidates(moodle, child);
      } catch (error) {
        if (!(error instanceof MoodleError)) throw error;
        this.deps.logger.warn({ err: error, requestId: request.id }, 'Moodle look-up failed during a bulk approval');
        moodleProblem.message = `Moodle could not be asked about the pupils (${error.message})`;
        return result('needs_matching', `Needs matching on its own page: ${moodleProblem.message} Left waiting for review.`);
      }
      const candidate = match.candidates[0];
      if (match.kind === 'exact' && candidate) {
        matches.push({ childId: child.id, moodleUserId: candidate.id });
      } else if (match.kind === 'ambiguous') {
        unsure.push(`${childName(child)} could be any of ${match.candidates.length} pupils in Moodle${match.note ? ` (${match.note})` : ''}`);
      } else {
        unsure.push(`${childName(child)} was not found in Moodle${match.note ? ` (${match.note})` : ''}`);
      }
    }
    if (unsure.length > 0) return result('needs_matching', `Needs matching on its own page: ${unsure.join('; ')}. Left waiting for review.`);
    const after = await this.deps.lifecycle.approveRequest(request.id, { expectedVersion: item.expectedVersion, children: matches }, actor);
    const count = matches.length;
    const matched = count === 1 ? 'its child matched to a Moodle pupil account' : `all ${count} children matched to Moodle pupil accounts`;
    return result('done', `Approved, with ${matched}. The account is set up at the next provisioning cycle.`, after.status);
  }

  private changedMessage(status: RequestStatus | null): string {
    const now = status ? ` It is now "${STATUS_LABELS[status].toLowerCase()}".` : '';
    return `Not changed: someone else changed this request after the list was shown.${now} Open it to see what happened.`;
  }
}
