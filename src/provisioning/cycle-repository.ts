// The provisioning_cycles table and each cycle's report (cycle_outcomes), and the set queries a
// cycle uses to find its work.
import { nullableNumber, nullableString, parseJsonColumn } from '../db/columns';
import type { Database } from '../db/database';
import { childFromRow, requestFromRow, type ChildRecord, type RequestRecord } from '../requests/request-repository';

export const CYCLES_TABLE = 'provisioning_cycles';
export const CYCLE_OUTCOMES_TABLE = 'cycle_outcomes';

/** Report entries per INSERT: well under SQLite's limit of bound values. */
const OUTCOME_INSERT_BATCH = 200;

export type CycleTrigger = 'schedule' | 'manual' | 'cli';
export type CycleState = 'running' | 'succeeded' | 'problems' | 'failed' | 'interrupted';
export type CycleStep = 'starting' | 'checking' | 'syncing' | 'looking_up' | 'assigning' | 'unassigning' | 'password_email' | 'recording' | 'done';

export interface CycleCounts {
  requests: number;
  provisioned: number;
  childrenLinked: number;
  childrenFailed: number;
  waiting: number;
  waitedTooLong: number;
  refused: number;
  unassigned: number;
  unassignFailed: number;
  moodleCalls: number;
}

export const REQUEST_OUTCOMES = ['provisioned', 'linked_some', 'waiting', 'failed', 'refused', 'unchanged'] as const;
export type RequestOutcome = (typeof REQUEST_OUTCOMES)[number];

export interface RequestOutcomeReport {
  requestId: number;
  outcome: RequestOutcome;
  message: string | null;
  children: Array<{ childId: number; outcome: 'linked' | 'failed' | 'waiting'; error?: string }>;
}

/** Problems first, then what is still waiting, then what went well: the order of a cycle's report. */
export const OUTCOME_ORDER: Readonly<Record<RequestOutcome, number>> = {
  failed: 0,
  linked_some: 1,
  refused: 2,
  waiting: 3,
  unchanged: 4,
  provisioned: 5,
};

/** How many requests of a cycle had each outcome (every outcome present, zero when none). */
export type OutcomeCounts = Record<RequestOutcome, number>;

export const noOutcomes = (): OutcomeCounts => Object.fromEntries(REQUEST_OUTCOMES.map((o) => [o, 0])) as OutcomeCounts;

export interface CycleRecord {
  id: number;
  trigger: CycleTrigger;
  triggeredBy: string | null;
  state: CycleState;
  step: CycleStep | null;
  progressDone: number;
  progressTotal: number;
  startedAt: number;
  finishedAt: number | null;
  counts: CycleCounts | null;
  error: string | null;
  syncOutput: string | null;
}

type Row = Record<string, unknown>;

function cycleFromRow(r: Row): CycleRecord {
  return {
    id: Number(r.id),
    trigger: r.trigger as CycleTrigger,
    triggeredBy: (r.triggered_by as string | null) ?? null,
    state: r.state as CycleState,
    step: (r.step as CycleStep | null) ?? null,
    progressDone: Number(r.progress_done ?? 0),
    progressTotal: Number(r.progress_total ?? 0),
    startedAt: Number(r.started_at),
    finishedAt: nullableNumber(r.finished_at),
    counts: parseJsonColumn<CycleCounts | null>(r.counts, null),
    error: (r.error as string | null) ?? null,
    syncOutput: (r.sync_output as string | null) ?? null,
  };
}

function outcomeFromRow(r: Row): RequestOutcomeReport {
  return {
    requestId: Number(r.request_id),
    outcome: r.outcome as RequestOutcome,
    message: nullableString(r.message),
    children: parseJsonColumn<RequestOutcomeReport['children']>(r.children, []),
  };
}

const PROBLEMS_FIRST_SQL = `CASE outcome ${REQUEST_OUTCOMES.map((o) => `WHEN '${o}' THEN ${OUTCOME_ORDER[o]}`).join(' ')} ELSE ${REQUEST_OUTCOMES.length} END, request_id`;

export class CycleRepository {
  constructor(private readonly db: Database) {}

  async create(trigger: CycleTrigger, triggeredBy: string | null, now: number): Promise<number> {
    const [id] = await this.db(CYCLES_TABLE).insert({ trigger, triggered_by: triggeredBy, state: 'running', step: 'starting', started_at: now });
    return Number(id);
  }

  async progress(id: number, step: CycleStep, done: number, total: number): Promise<void> {
    await this.db(CYCLES_TABLE).where({ id }).update({ step, progress_done: done, progress_total: total });
  }

  async finish(
    id: number,
    fields: { state: CycleState; counts: CycleCounts; error: string | null; syncOutput: string | null; now: number },
  ): Promise<void> {
    await this.db(CYCLES_TABLE).where({ id }).update({
      state: fields.state,
      step: 'done',
      finished_at: fields.now,
      counts: JSON.stringify(fields.counts),
      error: fields.error,
      sync_output: fields.syncOutput,
    });
  }

  /** Adds a chunk's entries to the cycle's report, as the cycle records them. */
  async addOutcomes(cycleId: number, entries: readonly RequestOutcomeReport[]): Promise<void> {
    for (let i = 0; i < entries.length; i += OUTCOME_INSERT_BATCH) {
      const rows = [];
      for (let j = i; j < Math.min(entries.length, i + OUTCOME_INSERT_BATCH); j += 1) {
        const e = entries[j] as RequestOutcomeReport;
        rows.push({ cycle_id: cycleId, request_id: e.requestId, outcome: e.outcome, message: e.message, children: JSON.stringify(e.children) });
      }
      await this.db(CYCLE_OUTCOMES_TABLE).insert(rows);
    }
  }

  /** A page of a cycle's report, problems first, then by request (every entry when no page is given). */
  async outcomes(cycleId: number, options: { offset?: number; limit?: number; withMessage?: boolean } = {}): Promise<RequestOutcomeReport[]> {
    const query = this.db(CYCLE_OUTCOMES_TABLE).where({ cycle_id: cycleId }).orderByRaw(PROBLEMS_FIRST_SQL).select('request_id', 'outcome', 'message', 'children');
    if (options.withMessage) query.whereNotNull('message');
    if (options.limit !== undefined) query.limit(options.limit).offset(options.offset ?? 0);
    return ((await query) as Row[]).map(outcomeFromRow);
  }

  async outcomeCounts(cycleId: number): Promise<OutcomeCounts> {
    const rows = (await this.db(CYCLE_OUTCOMES_TABLE).where({ cycle_id: cycleId }).select('outcome').count({ n: '*' }).groupBy('outcome')) as Row[];
    const counts = noOutcomes();
    for (const row of rows) if (row.outcome as string in counts) counts[row.outcome as RequestOutcome] = Number(row.n);
    return counts;
  }

  /** Cycles left 'running' by a process that died: marked interrupted when a new cycle starts. */
  async markInterrupted(exceptId: number, now: number): Promise<number> {
    return Number(
      await this.db(CYCLES_TABLE)
        .where({ state: 'running' })
        .whereNot({ id: exceptId })
        .update({ state: 'interrupted', finished_at: now, error: 'The cycle stopped before it finished (the service was stopped or crashed). Its work is picked up by the next cycle.' }),
    );
  }

  async get(id: number): Promise<CycleRecord | undefined> {
    const row = (await this.db(CYCLES_TABLE).where({ id }).first()) as Row | undefined;
    return row ? cycleFromRow(row) : undefined;
  }

  async recent(limit: number, offset = 0): Promise<CycleRecord[]> {
    const rows = (await this.db(CYCLES_TABLE)
      .select('id', 'trigger', 'triggered_by', 'state', 'step', 'progress_done', 'progress_total', 'started_at', 'finished_at', 'counts', 'error')
      .orderBy('id', 'desc')
      .limit(limit)
      .offset(offset)) as Row[];
    return rows.map(cycleFromRow);
  }

  private dueApproved(now: number) {
    return this.db('requests')
      .where({ status: 'approved' })
      .andWhere((q) => q.whereNull('next_attempt_at').orWhere('next_attempt_at', '<=', now));
  }

  async countDueApprovedRequests(now: number): Promise<number> {
    const row = (await this.dueApproved(now).count({ n: '*' }).first()) as { n: number | string } | undefined;
    return Number(row?.n ?? 0);
  }

  /**
   * Approved requests whose next attempt is due, with their children: two set queries. With a page,
   * only the first `limit` after request `afterId` (the cycle reads its work a chunk at a time).
   */
  async dueApprovedRequests(now: number, page?: { afterId: number; limit: number }): Promise<Array<{ request: RequestRecord; children: ChildRecord[] }>> {
    const query = this.dueApproved(now).orderBy('id');
    if (page) query.where('id', '>', page.afterId).limit(page.limit);
    const rows = (await query) as Row[];
    const requests = rows.map(requestFromRow);
    const children = new Map<number, ChildRecord[]>(requests.map((r) => [r.id, []]));
    for (let i = 0; i < requests.length; i += 500) {
      const ids = requests.slice(i, i + 500).map((r) => r.id);
      const childRows = (await this.db('request_children').whereIn('request_id', ids).orderBy(['request_id', 'position'])) as Row[];
      for (const row of childRows) {
        const child = childFromRow(row);
        children.get(child.requestId)?.push(child);
      }
    }
    return requests.map((request) => ({ request, children: children.get(request.id) ?? [] }));
  }

  /**
   * Moodle accounts this service has seen exist, other than `except`: pupils matched or linked and
   * parents found, newest first. Used to tell a token that sees nobody from pupils that were deleted.
   */
  async knownMoodleAccountIds(except: ReadonlySet<number>, limit: number): Promise<number[]> {
    const pupils = (await this.db('request_children')
      .whereNotNull('moodle_user_id')
      .whereIn('link_state', ['matched', 'linked'])
      .orderBy('id', 'desc')
      .limit(limit + except.size)
      .select('moodle_user_id')) as Row[];
    const parents = (await this.db('requests')
      .whereNotNull('moodle_user_id')
      .orderBy('id', 'desc')
      .limit(limit + except.size)
      .select('moodle_user_id')) as Row[];
    const ids = new Set<number>();
    for (const row of [...pupils, ...parents]) {
      const id = Number(row.moodle_user_id);
      if (!except.has(id)) ids.add(id);
    }
    return [...ids].slice(0, limit);
  }

  /**
   * The request each Moodle username belongs to (the newest one, approved or provisioned first), to
   * name it when Moodle's sync did not create that account.
   */
  async requestIdsByMoodleUsername(usernames: readonly string[]): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    for (let i = 0; i < usernames.length; i += 500) {
      const rows = (await this.db('requests')
        .whereIn('moodle_username', usernames.slice(i, i + 500))
        .select('id', 'moodle_username', 'status')
        .orderBy('id')) as Row[];
      const rank = (status: unknown) => (status === 'approved' || status === 'provisioned' ? 1 : 0);
      const best = new Map<string, Row>();
      for (const row of rows) {
        const username = String(row.moodle_username);
        const kept = best.get(username);
        if (kept === undefined || rank(row.status) >= rank(kept.status)) best.set(username, row);
      }
      for (const [username, row] of best) found.set(username, Number(row.id));
    }
    return found;
  }

  /** Revoked children whose Parent role may still be assigned in Moodle, with their request's parent. */
  async dueUnassignments(now: number): Promise<Array<{ child: ChildRecord; moodleUsername: string | null; parentMoodleUserId: number | null }>> {
    const rows = (await this.db('request_children as c')
      .join('requests as r', 'r.id', 'c.request_id')
      .where('c.unassign_pending', true)
      .andWhere((q) => q.whereNull('c.next_attempt_at').orWhere('c.next_attempt_at', '<=', now))
      .select('c.*', 'r.moodle_username as parent_username', 'r.moodle_user_id as parent_moodle_user_id')
      .orderBy('c.id')) as Row[];
    return rows.map((row) => ({
      child: childFromRow(row),
      moodleUsername: (row.parent_username as string | null) ?? null,
      parentMoodleUserId: nullableNumber(row.parent_moodle_user_id),
    }));
  }
}
