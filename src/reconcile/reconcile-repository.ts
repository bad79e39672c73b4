// The reconcile_runs and pupil_suspensions tables, and the set queries a reconcile run reads its
// work from: every active link, every provisioned parent, and the auth table against the requests.
import { booleanColumn, nullableNumber, parseJsonColumn } from '../db/columns';
import type { Database } from '../db/database';
import { CHILDREN_TABLE, REQUESTS_TABLE } from '../requests/request-repository';
import type { RequestStatus } from '../requests/request-states';

export const RECONCILE_RUNS_TABLE = 'reconcile_runs';
export const PUPIL_SUSPENSIONS_TABLE = 'pupil_suspensions';

export type ReconcileTrigger = 'schedule' | 'manual' | 'cli';
/** succeeded: nothing needs anyone; attention: something was found for staff or IT; failed: stopped early. */
export type ReconcileState = 'running' | 'succeeded' | 'attention' | 'failed';

export const FINDING_KINDS = [
  'pupil_deleted',
  'pupil_left',
  'pupil_suspended',
  'parent_missing',
  'parent_suspended',
  'parent_not_auth_db',
  'reassert_failed',
  'auth_row_not_entitled',
  'auth_row_missing',
  'changed_meanwhile',
] as const;
export type FindingKind = (typeof FINDING_KINDS)[number];

/** One thing a run found: `ended` when it ended the link itself, `reported` when it only tells. */
export interface ReconcileFinding {
  kind: FindingKind;
  action: 'ended' | 'reported';
  requestId: number | null;
  childId: number | null;
  /** The Moodle account concerned (pupil or parent). */
  moodleUserId: number | null;
  message: string;
}

export interface ReconcileCounts {
  linksChecked: number;
  parentsChecked: number;
  linksEnded: number;
  /** Requests revoked because their last link ended (their auth row removed). */
  parentsRevoked: number;
  pupilsDeleted: number;
  pupilsSuspended: number;
  parentsMissing: number;
  parentsSuspended: number;
  parentsNotAuthDb: number;
  rolesReasserted: number;
  reassertFailed: number;
  authTableProblems: number;
  changedMeanwhile: number;
  moodleCalls: number;
}

export interface ReconcileRunRecord {
  id: number;
  trigger: ReconcileTrigger;
  triggeredBy: string | null;
  state: ReconcileState;
  startedAt: number;
  finishedAt: number | null;
  counts: ReconcileCounts | null;
  error: string | null;
  findings: ReconcileFinding[];
}

/** A linked child of an approved or provisioned request, with what the run needs of its request. */
export interface ActiveLink {
  childId: number;
  childName: string;
  pupilId: number;
  requestId: number;
  requestVersion: number;
  requestStatus: RequestStatus;
  parentUsername: string | null;
  parentMoodleUserId: number | null;
  linkExistingAccount: boolean;
}

export interface ProvisionedParent {
  requestId: number;
  username: string | null;
  moodleUserId: number | null;
  linkExistingAccount: boolean;
  hasAuthRow: boolean;
}

export interface AuthTableProblem {
  kind: 'auth_row_not_entitled' | 'auth_row_missing';
  requestId: number | null;
  username: string | null;
  requestStatus: RequestStatus | null;
}

type Row = Record<string, unknown>;

function runFromRow(r: Row): ReconcileRunRecord {
  return {
    id: Number(r.id),
    trigger: r.trigger as ReconcileTrigger,
    triggeredBy: (r.triggered_by as string | null) ?? null,
    state: r.state as ReconcileState,
    startedAt: Number(r.started_at),
    finishedAt: nullableNumber(r.finished_at),
    counts: parseJsonColumn<ReconcileCounts | null>(r.counts, null),
    error: (r.error as string | null) ?? null,
    findings: parseJsonColumn<ReconcileFinding[]>(r.findings, []),
  };
}

const ENTITLED_STATUSES: readonly RequestStatus[] = ['approved', 'provisioned'];
/** Ids per statement: well inside SQLite's limit on bound values. */
const CHUNK = 500;

export class ReconcileRepository {
  constructor(
    private readonly db: Database,
    private readonly authTable: string,
  ) {}

  async create(trigger: ReconcileTrigger, triggeredBy: string | null, now: number): Promise<number> {
    const [id] = await this.db(RECONCILE_RUNS_TABLE).insert({ trigger, triggered_by: triggeredBy, state: 'running', started_at: now });
    return Number(id);
  }

  async finish(id: number, fields: { state: ReconcileState; counts: ReconcileCounts; error: string | null; findings: ReconcileFinding[]; now: number }): Promise<void> {
    await this.db(RECONCILE_RUNS_TABLE).where({ id }).update({
      state: fields.state,
      finished_at: fields.now,
      counts: JSON.stringify(fields.counts),
      error: fields.error,
      findings: JSON.stringify(fields.findings),
    });
  }

  /** Runs left 'running' by a process that died: marked failed when a new run starts. */
  async markAbandoned(exceptId: number, now: number): Promise<void> {
    await this.db(RECONCILE_RUNS_TABLE)
      .where({ state: 'running' })
      .whereNot({ id: exceptId })
      .update({ state: 'failed', finished_at: now, error: 'The Moodle check stopped before it finished (the service was stopped or crashed).' });
  }

  async get(id: number): Promise<ReconcileRunRecord | undefined> {
    const row = (await this.db(RECONCILE_RUNS_TABLE).where({ id }).first()) as Row | undefined;
    return row ? runFromRow(row) : undefined;
  }

  /** The newest runs, without their findings. */
  async recent(limit: number): Promise<ReconcileRunRecord[]> {
    const rows = (await this.db(RECONCILE_RUNS_TABLE)
      .select('id', 'trigger', 'triggered_by', 'state', 'started_at', 'finished_at', 'counts', 'error')
      .orderBy('id', 'desc')
      .limit(limit)) as Row[];
    return rows.map(runFromRow);
  }

  /** Every linked child of an approved or provisioned request: one query. */
  async activeLinks(): Promise<ActiveLink[]> {
    const rows = (await this.db(`${CHILDREN_TABLE} as c`)
      .join(`${REQUESTS_TABLE} as r`, 'r.id', 'c.request_id')
      .where('c.link_state', 'linked')
      .whereNotNull('c.moodle_user_id')
      .whereIn('r.status', ENTITLED_STATUSES)
      .select(
        'c.id as child_id',
        'c.first_name',
        'c.last_name',
        'c.moodle_user_id as pupil_id',
        'r.id as request_id',
        'r.version',
        'r.status',
        'r.moodle_username',
        'r.moodle_user_id as parent_moodle_user_id',
        'r.link_existing_account',
      )
      .orderBy('c.id')) as Row[];
    return rows.map((r) => ({
      childId: Number(r.child_id),
      childName: `${String(r.first_name ?? '')} ${String(r.last_name ?? '')}`.trim(),
      pupilId: Number(r.pupil_id),
      requestId: Number(r.request_id),
      requestVersion: Number(r.version),
      requestStatus: r.status as RequestStatus,
      parentUsername: (r.moodle_username as string | null) ?? null,
      parentMoodleUserId: nullableNumber(r.parent_moodle_user_id),
      linkExistingAccount: booleanColumn(r.link_existing_account),
    }));
  }

  /** Every provisioned request's parent, with whether the auth table has its row. */
  async provisionedParents(): Promise<ProvisionedParent[]> {
    const rows = (await this.db(`${REQUESTS_TABLE} as r`)
      .leftJoin(`${this.authTable} as a`, 'a.request_id', 'r.id')
      .where('r.status', 'provisioned')
      .select('r.id', 'r.moodle_username', 'r.moodle_user_id', 'r.link_existing_account', 'a.id as auth_id')
      .orderBy('r.id')) as Row[];
    return rows.map((r) => ({
      requestId: Number(r.id),
      username: (r.moodle_username as string | null) ?? null,
      moodleUserId: nullableNumber(r.moodle_user_id),
      linkExistingAccount: booleanColumn(r.link_existing_account),
      hasAuthRow: r.auth_id !== null && r.auth_id !== undefined,
    }));
  }

  /**
   * The auth table against the requests: rows no approved or provisioned request (of an auth_db
   * parent, under that username) stands behind, and such requests without their row. Neither
   * should ever exist; the run reports them and changes nothing.
   */
  async authTableProblems(): Promise<AuthTableProblem[]> {
    const unentitled = (await this.db(`${this.authTable} as a`)
      .leftJoin(`${REQUESTS_TABLE} as r`, 'r.id', 'a.request_id')
      .where((q) =>
        q
          .whereNull('r.id')
          .orWhereNotIn('r.status', ENTITLED_STATUSES)
          .orWhere('r.link_existing_account', true)
          .orWhereRaw('?? <> ??', ['r.moodle_username', 'a.username']),
      )
      .select('a.username', 'a.request_id', 'r.id as found_id', 'r.status')
      .orderBy('a.id')) as Row[];
    const missing = (await this.db(`${REQUESTS_TABLE} as r`)
      .leftJoin(`${this.authTable} as a`, 'a.request_id', 'r.id')
      .whereIn('r.status', ENTITLED_STATUSES)
      .where('r.link_existing_account', false)
      .whereNull('a.id')
      .select('r.id', 'r.moodle_username', 'r.status')
      .orderBy('r.id')) as Row[];
    return [
      ...unentitled.map((r) => ({
        kind: 'auth_row_not_entitled' as const,
        requestId: r.found_id === null || r.found_id === undefined ? nullableNumber(r.request_id) : Number(r.found_id),
        username: String(r.username),
        requestStatus: (r.status as RequestStatus | null) ?? null,
      })),
      ...missing.map((r) => ({
        kind: 'auth_row_missing' as const,
        requestId: Number(r.id),
        username: (r.moodle_username as string | null) ?? null,
        requestStatus: r.status as RequestStatus,
      })),
    ];
  }

  /** When each of these pupils was first seen suspended (only those with a row). */
  async suspensionsOf(pupilIds: readonly number[]): Promise<Map<number, number>> {
    const found = new Map<number, number>();
    for (let i = 0; i < pupilIds.length; i += CHUNK) {
      const rows = (await this.db(PUPIL_SUSPENSIONS_TABLE).whereIn('moodle_user_id', pupilIds.slice(i, i + CHUNK))) as Row[];
      for (const r of rows) found.set(Number(r.moodle_user_id), Number(r.first_seen_at));
    }
    return found;
  }

  async recordSuspended(pupilIds: readonly number[], now: number): Promise<void> {
    for (let i = 0; i < pupilIds.length; i += CHUNK) {
      const rows = pupilIds.slice(i, i + CHUNK).map((id) => ({ moodle_user_id: id, first_seen_at: now }));
      if (rows.length > 0) await this.db(PUPIL_SUSPENSIONS_TABLE).insert(rows).onConflict('moodle_user_id').ignore();
    }
  }

  /** Pupils active again (or gone for good): their grace period starts afresh next time. */
  async clearSuspensions(pupilIds: readonly number[]): Promise<void> {
    for (let i = 0; i < pupilIds.length; i += CHUNK) {
      const ids = pupilIds.slice(i, i + CHUNK);
      if (ids.length > 0) await this.db(PUPIL_SUSPENSIONS_TABLE).whereIn('moodle_user_id', ids).delete();
    }
  }
}

