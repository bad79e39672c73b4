// The only code that reads and writes the requests, request_children, auth and audit tables.
import type { Knex } from 'knex';
import { booleanColumn, nullableNumber, nullableString } from '../db/columns';
import { isMysql, mysqlInsertReturns } from '../db/database';
import { OPEN_STATUSES, type ChildLinkState, type RequestSource, type RequestStatus, type RequestType } from './request-states';

export const REQUESTS_TABLE = 'requests';
export const CHILDREN_TABLE = 'request_children';
export const AUDIT_TABLE = 'audit_events';
export const HELD_DETAILS_TABLE = 'request_held_details';

/** A knex instance or an open transaction. */
export type Queryable = Knex | Knex.Transaction;

export interface RequestRecord {
  id: number;
  publicId: string;
  status: RequestStatus;
  requestType: RequestType;
  source: RequestSource;
  parentTitle: string;
  parentFirstName: string;
  parentLastName: string;
  email: string;
  parentComment: string | null;
  staffComment: string | null;
  moodleUsername: string | null;
  moodleUserId: number | null;
  linkExistingAccount: boolean;
  verificationTokenHash: string | null;
  verificationExpiresAt: number | null;
  verifiedAt: number | null;
  decidedAt: number | null;
  decidedBy: string | null;
  decisionReason: string | null;
  provisionedAt: number | null;
  attempts: number;
  lastError: string | null;
  nextAttemptAt: number | null;
  waitingSince: number | null;
  version: number;
  submitterIp: string | null;
  submitterAgent: string | null;
  idempotencyKey: string | null;
  importBatchId: string | null;
  /** The WordPress plugin's id of the request this one was imported from (source wordpress_plugin). */
  wpRequestId?: number | null;
  erasedAt: number | null;
  createdAt: number;
  updatedAt: number;
}

export interface ChildRecord {
  id: number;
  requestId: number;
  position: number;
  firstName: string;
  lastName: string;
  tutorGroup: string;
  pupilIdentifier: string | null;
  moodleUserId: number | null;
  linkState: ChildLinkState;
  linkedAt: number | null;
  revokedAt: number | null;
  unassignPending: boolean;
  attempts: number;
  lastError: string | null;
  nextAttemptAt: number | null;
  updatedAt: number;
}

export interface AuthRow {
  id: number;
  username: string;
  firstname: string;
  lastname: string;
  email: string;
  requestId: number;
}

/** Details sent for an address with an open request, held until confirmed from the mailed link. */
export interface HeldDetailsRecord {
  id: number;
  requestId: number;
  tokenHash: string;
  expiresAt: number;
  children: NewChildRow[];
  comment: string | null;
  source: RequestSource;
  actorType: string;
  actorId: string | null;
  submitterIp: string | null;
  submitterAgent: string | null;
  idempotencyKey: string | null;
  createdAt: number;
}

export interface AuditEventInput {
  actorType: string;
  actorId: string | null;
  requestId: number | null;
  action: string;
  details?: Record<string, unknown>;
}

export interface AuditEventRecord extends AuditEventInput {
  id: number;
  createdAt: number;
  details: Record<string, unknown>;
}

type Row = Record<string, unknown>;


export function requestFromRow(r: Row): RequestRecord {
  return {
    id: Number(r.id),
    publicId: String(r.public_id),
    status: r.status as RequestStatus,
    requestType: r.request_type as RequestType,
    source: r.source as RequestSource,
    parentTitle: String(r.parent_title ?? ''),
    parentFirstName: String(r.parent_first_name),
    parentLastName: String(r.parent_last_name),
    email: String(r.email),
    parentComment: nullableString(r.parent_comment),
    staffComment: nullableString(r.staff_comment),
    moodleUsername: nullableString(r.moodle_username),
    moodleUserId: nullableNumber(r.moodle_user_id),
    linkExistingAccount: booleanColumn(r.link_existing_account),
    verificationTokenHash: nullableString(r.verification_token_hash),
    verificationExpiresAt: nullableNumber(r.verification_expires_at),
    verifiedAt: nullableNumber(r.verified_at),
    decidedAt: nullableNumber(r.decided_at),
    decidedBy: nullableString(r.decided_by),
    decisionReason: nullableString(r.decision_reason),
    provisionedAt: nullableNumber(r.provisioned_at),
    attempts: Number(r.attempts ?? 0),
    lastError: nullableString(r.last_error),
    nextAttemptAt: nullableNumber(r.next_attempt_at),
    waitingSince: nullableNumber(r.waiting_since),
    version: Number(r.version),
    submitterIp: nullableString(r.submitter_ip),
    submitterAgent: nullableString(r.submitter_agent),
    idempotencyKey: nullableString(r.idempotency_key),
    importBatchId: nullableString(r.import_batch_id),
    wpRequestId: nullableNumber(r.wp_request_id),
    erasedAt: nullableNumber(r.erased_at),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
  };
}

const REQUEST_COLUMNS: Record<keyof RequestRecord, string> = {
  id: 'id',
  publicId: 'public_id',
  status: 'status',
  requestType: 'request_type',
  source: 'source',
  parentTitle: 'parent_title',
  parentFirstName: 'parent_first_name',
  parentLastName: 'parent_last_name',
  email: 'email',
  parentComment: 'parent_comment',
  staffComment: 'staff_comment',
  moodleUsername: 'moodle_username',
  moodleUserId: 'moodle_user_id',
  linkExistingAccount: 'link_existing_account',
  verificationTokenHash: 'verification_token_hash',
  verificationExpiresAt: 'verification_expires_at',
  verifiedAt: 'verified_at',
  decidedAt: 'decided_at',
  decidedBy: 'decided_by',
  decisionReason: 'decision_reason',
  provisionedAt: 'provisioned_at',
  attempts: 'attempts',
  lastError: 'last_error',
  nextAttemptAt: 'next_attempt_at',
  waitingSince: 'waiting_since',
  version: 'version',
  submitterIp: 'submitter_ip',
  submitterAgent: 'submitter_agent',
  idempotencyKey: 'idempotency_key',
  importBatchId: 'import_batch_id',
  wpRequestId: 'wp_request_id',
  erasedAt: 'erased_at',
  createdAt: 'created_at',
  updatedAt: 'updated_at',
};

const CHILD_COLUMNS: Record<keyof ChildRecord, string> = {
  id: 'id',
  requestId: 'request_id',
  position: 'position',
  firstName: 'first_name',
  lastName: 'last_name',
  tutorGroup: 'tutor_group',
  pupilIdentifier: 'pupil_identifier',
  moodleUserId: 'moodle_user_id',
  linkState: 'link_state',
  linkedAt: 'linked_at',
  revokedAt: 'revoked_at',
  unassignPending: 'unassign_pending',
  attempts: 'attempts',
  lastError: 'last_error',
  nextAttemptAt: 'next_attempt_at',
  updatedAt: 'updated_at',
};

function toRow<T>(columns: Record<keyof T & string, string>, patch: Partial<T>): Row {
  const row: Row = {};
  for (const [key, value] of Object.entries(patch)) {
    const column = columns[key as keyof T & string];
    if (column === undefined) throw new Error(`Unknown field ${key}`);
    if (value !== undefined) row[column] = value;
  }
  return row;
}

export const requestToRow = (patch: Partial<RequestRecord>): Row => toRow(REQUEST_COLUMNS, patch);

/**
 * The row for a request write, with open_email kept in step with the status in the same
 * statement: the address while the request is open, NULL once it leaves the open statuses. A
 * status change between open statuses leaves it alone, so an older open request that lost the
 * address to a newer one (see the migration that added the column) never takes it back.
 */
function requestWriteRow(patch: Partial<RequestRecord>, inserting = false): Row {
  const row = requestToRow(patch);
  if (patch.status === undefined) return row;
  const open = OPEN_STATUSES.includes(patch.status);
  if (!open) row.open_email = null;
  else if (inserting && patch.email) row.open_email = patch.email;
  return row;
}

export const childToRow = (patch: Partial<ChildRecord>): Row => toRow(CHILD_COLUMNS, patch);

export function childFromRow(r: Row): ChildRecord {
  return {
    id: Number(r.id),
    requestId: Number(r.request_id),
    position: Number(r.position),
    firstName: String(r.first_name),
    lastName: String(r.last_name),
    tutorGroup: String(r.tutor_group ?? ''),
    pupilIdentifier: nullableString(r.pupil_identifier),
    moodleUserId: nullableNumber(r.moodle_user_id),
    linkState: r.link_state as ChildLinkState,
    linkedAt: nullableNumber(r.linked_at),
    revokedAt: nullableNumber(r.revoked_at),
    unassignPending: booleanColumn(r.unassign_pending),
    attempts: Number(r.attempts ?? 0),
    lastError: nullableString(r.last_error),
    nextAttemptAt: nullableNumber(r.next_attempt_at),
    updatedAt: Number(r.updated_at),
  };
}

export interface NewChildRow {
  firstName: string;
  lastName: string;
  tutorGroup: string;
  pupilIdentifier: string | null;
}

/** One row's own patch, for the set updates below. */
export interface RowPatch<T> {
  id: number;
  patch: Partial<T>;
}

/** Ids per statement in the set updates: well inside SQLite's limit on bound values. */
const SET_UPDATE_CHUNK = 500;

/**
 * Builds the SET clause that gives each row its own values in one statement: a column every row
 * sets to the same value is set plainly, any other becomes CASE id WHEN … THEN … ELSE column END.
 */
function perRowSet(q: Queryable, rows: Array<{ id: number; values: Row }>): Row {
  const columns = new Set(rows.flatMap((r) => Object.keys(r.values)));
  const set: Row = {};
  for (const column of columns) {
    const having = rows.filter((r) => column in r.values);
    const first = having[0]?.values[column];
    if (having.length === rows.length && having.every((r) => r.values[column] === first)) {
      set[column] = first;
      continue;
    }
    const bindings: unknown[] = ['id'];
    for (const r of having) bindings.push(r.id, r.values[column]);
    bindings.push(column);
    set[column] = q.raw(`CASE ?? ${having.map(() => 'WHEN ? THEN ?').join(' ')} ELSE ?? END`, bindings as Knex.RawBinding[]);
  }
  return set;
}

export interface ListRequestsFilter {
  status?: RequestStatus | RequestStatus[];
  email?: string;
  limit?: number;
  offset?: number;
}

export class RequestRepository {
  constructor(readonly authTable: string) {}

  async insertRequest(q: Queryable, record: Omit<RequestRecord, 'id'>): Promise<number> {
    const inserted = await q(REQUESTS_TABLE).insert(requestWriteRow(record, true));
    return Number(inserted[0]);
  }

  /**
   * Inserts requests that each carry their own idempotency key, 100 rows a statement, and answers
   * their ids by key: a multi-row INSERT reports one id at most, and the key is unique. One
   * statement instead of one per request: knex and mysql2 build each statement's SQL afresh, about
   * 30 KiB of garbage per request for an import's commit.
   */
  async insertKeyedRequests(q: Queryable, records: ReadonlyArray<Omit<RequestRecord, 'id'>>): Promise<Map<string, number>> {
    const ids = new Map<string, number>();
    for (let i = 0; i < records.length; i += 100) {
      const some = records.slice(i, i + 100);
      const keys = some.map((record) => {
        if (!record.idempotencyKey) throw new Error('insertKeyedRequests needs an idempotency key on every request');
        return record.idempotencyKey;
      });
      await q(REQUESTS_TABLE).insert(some.map((record) => requestWriteRow(record, true)));
      const rows = (await q(REQUESTS_TABLE).whereIn('idempotency_key', keys).select('id', 'idempotency_key')) as Row[];
      for (const row of rows) ids.set(String(row.idempotency_key), Number(row.id));
    }
    return ids;
  }

  async insertChildren(q: Queryable, requestId: number, children: NewChildRow[], firstPosition: number, now: number): Promise<void> {
    if (children.length === 0) return;
    await q(CHILDREN_TABLE).insert(this.newChildRows(requestId, children, firstPosition, now));
  }

  /**
   * Inserts a new request's children and answers them as stored, in position order: from the
   * insert itself where the database can say (SQLite, MariaDB 10.5 and later: RETURNING), else
   * read back. `insertReturns` overrides what the MySQL-family server is found to allow.
   */
  async insertChildrenReturning(
    q: Queryable,
    requestId: number,
    children: NewChildRow[],
    now: number,
    options: { insertReturns?: boolean } = {},
  ): Promise<ChildRecord[]> {
    if (children.length === 0) return [];
    const insert = q(CHILDREN_TABLE).insert(this.newChildRows(requestId, children, 0, now));
    let rows: Row[];
    if (!isMysql(q)) rows = (await insert.returning('*')) as Row[];
    else if (options.insertReturns ?? (await mysqlInsertReturns(q))) {
      const { sql, bindings } = insert.toSQL();
      [rows] = (await q.raw(`${sql} RETURNING *`, bindings)) as [Row[]];
    } else {
      // MySQL and MariaDB before 10.5: insert, then read them back.
      await insert;
      return this.children(q, requestId);
    }
    return rows.map(childFromRow).sort((a, b) => a.position - b.position);
  }

  private newChildRows(requestId: number, children: NewChildRow[], firstPosition: number, now: number) {
    return children.map((c, i) => ({
      request_id: requestId,
      position: firstPosition + i,
      first_name: c.firstName,
      last_name: c.lastName,
      tutor_group: c.tutorGroup,
      pupil_identifier: c.pupilIdentifier,
      link_state: 'unmatched',
      updated_at: now,
    }));
  }

  /** Reads a request; with forUpdate, locks its row until the transaction ends (MySQL). */
  async findById(q: Queryable, id: number, options: { forUpdate?: boolean } = {}): Promise<RequestRecord | undefined> {
    const query = q(REQUESTS_TABLE).where({ id }).first();
    if (options.forUpdate && isMysql(q)) query.forUpdate();
    const row = (await query) as Row | undefined;
    return row ? requestFromRow(row) : undefined;
  }

  async findManyByIds(q: Queryable, ids: number[], options: { forUpdate?: boolean } = {}): Promise<RequestRecord[]> {
    if (ids.length === 0) return [];
    const query = q(REQUESTS_TABLE).whereIn('id', ids).orderBy('id');
    if (options.forUpdate && isMysql(q)) query.forUpdate();
    return ((await query) as Row[]).map(requestFromRow);
  }

  async findByPublicId(q: Queryable, publicId: string): Promise<RequestRecord | undefined> {
    const row = (await q(REQUESTS_TABLE).where({ public_id: publicId }).first()) as Row | undefined;
    return row ? requestFromRow(row) : undefined;
  }

  async findByVerificationHash(q: Queryable, hash: string): Promise<RequestRecord | undefined> {
    const row = (await q(REQUESTS_TABLE).where({ verification_token_hash: hash }).first()) as Row | undefined;
    return row ? requestFromRow(row) : undefined;
  }

  async findByIdempotencyKey(q: Queryable, key: string): Promise<RequestRecord | undefined> {
    const row = (await q(REQUESTS_TABLE).where({ idempotency_key: key }).first()) as Row | undefined;
    return row ? requestFromRow(row) : undefined;
  }

  /** Which of these idempotency keys a request, or details held for one, already carries. */
  async idempotencyKeysTaken(q: Queryable, keys: string[]): Promise<Set<string>> {
    const taken = new Set<string>();
    for (let i = 0; i < keys.length; i += 500) {
      const some = keys.slice(i, i + 500);
      for (const table of [REQUESTS_TABLE, HELD_DETAILS_TABLE]) {
        const rows = (await q(table).whereIn('idempotency_key', some).select('idempotency_key')) as Row[];
        for (const row of rows) taken.add(String(row.idempotency_key));
      }
    }
    return taken;
  }

  /** For each of these email addresses, its oldest request in one of these statuses. */
  async requestsByEmail(q: Queryable, emails: string[], statuses: readonly RequestStatus[]): Promise<Map<string, { id: number; status: RequestStatus }>> {
    const found = new Map<string, { id: number; status: RequestStatus }>();
    // Chunked: SQLite limits the number of bound parameters in one statement.
    for (let i = 0; i < emails.length; i += 500) {
      const rows = (await q(REQUESTS_TABLE)
        .whereIn('email', emails.slice(i, i + 500))
        .whereIn('status', statuses)
        .orderBy('id')
        .select('id', 'email', 'status')) as Row[];
      for (const row of rows) {
        const email = String(row.email);
        if (!found.has(email)) found.set(email, { id: Number(row.id), status: row.status as RequestStatus });
      }
    }
    return found;
  }

  async findByEmailAndStatuses(q: Queryable, email: string, statuses: readonly string[]): Promise<RequestRecord[]> {
    const rows = (await q(REQUESTS_TABLE).where({ email }).whereIn('status', statuses).orderBy('id')) as Row[];
    return rows.map(requestFromRow);
  }

  /** The open request for this address, if any (there is at most one: see open_email). */
  async findOpenByEmail(q: Queryable, email: string, options: { forUpdate?: boolean } = {}): Promise<RequestRecord | undefined> {
    const query = q(REQUESTS_TABLE).where({ email }).whereIn('status', OPEN_STATUSES).orderBy('id', 'desc').first();
    if (options.forUpdate && isMysql(q)) query.forUpdate();
    const row = (await query) as Row | undefined;
    return row ? requestFromRow(row) : undefined;
  }

  async children(q: Queryable, requestId: number): Promise<ChildRecord[]> {
    const rows = (await q(CHILDREN_TABLE).where({ request_id: requestId }).orderBy('position')) as Row[];
    return rows.map(childFromRow);
  }

  async childrenOfMany(q: Queryable, requestIds: number[]): Promise<Map<number, ChildRecord[]>> {
    const byRequest = new Map<number, ChildRecord[]>();
    for (const id of requestIds) byRequest.set(id, []);
    if (requestIds.length === 0) return byRequest;
    // Chunked: SQLite limits the number of bound parameters in one statement.
    for (let i = 0; i < requestIds.length; i += 500) {
      const rows = (await q(CHILDREN_TABLE)
        .whereIn('request_id', requestIds.slice(i, i + 500))
        .orderBy(['request_id', 'position'])) as Row[];
      for (const row of rows) {
        const child = childFromRow(row);
        byRequest.get(child.requestId)?.push(child);
      }
    }
    return byRequest;
  }

  /** Applies a patch only if the request is still at the expected version; bumps the version. */
  async updateIfVersion(q: Queryable, id: number, expectedVersion: number, patch: Partial<RequestRecord>): Promise<boolean> {
    const row = requestWriteRow(patch);
    const changed = await q(REQUESTS_TABLE)
      .where({ id, version: expectedVersion })
      .update({ ...row, version: expectedVersion + 1 });
    return Number(changed) === 1;
  }

  /**
   * Gives each request its own patch with one statement per chunk, each only while the request is
   * still at its expected version, and bumps those versions. Returns how many rows were changed:
   * fewer than given means some were changed by someone else first.
   */
  async updateManyIfVersion(q: Queryable, updates: Array<RowPatch<RequestRecord> & { expectedVersion: number }>): Promise<number> {
    let changed = 0;
    for (let i = 0; i < updates.length; i += SET_UPDATE_CHUNK) {
      const chunk = updates.slice(i, i + SET_UPDATE_CHUNK);
      const versions: unknown[] = ['id'];
      for (const u of chunk) versions.push(u.id, u.expectedVersion);
      changed += Number(
        await q(REQUESTS_TABLE)
          .whereIn(
            'id',
            chunk.map((u) => u.id),
          )
          .where('version', q.raw(`CASE ?? ${chunk.map(() => 'WHEN ? THEN ?').join(' ')} END`, versions as Knex.RawBinding[]))
          .update({
            ...perRowSet(
              q,
              chunk.map((u) => ({ id: u.id, values: requestWriteRow(u.patch) })),
            ),
            version: q.raw('?? + 1', ['version']),
          }),
      );
    }
    return changed;
  }

  /** Gives each child its own patch, one statement per chunk. */
  async updateChildrenEach(q: Queryable, updates: Array<RowPatch<ChildRecord>>): Promise<void> {
    for (let i = 0; i < updates.length; i += SET_UPDATE_CHUNK) {
      const chunk = updates.slice(i, i + SET_UPDATE_CHUNK);
      await q(CHILDREN_TABLE)
        .whereIn(
          'id',
          chunk.map((u) => u.id),
        )
        .update(
          perRowSet(
            q,
            chunk.map((u) => ({ id: u.id, values: childToRow(u.patch) })),
          ),
        );
    }
  }

  async findChild(q: Queryable, childId: number): Promise<ChildRecord | undefined> {
    const row = (await q(CHILDREN_TABLE).where({ id: childId }).first()) as Row | undefined;
    return row ? childFromRow(row) : undefined;
  }

  /** Of these children, the ones still waiting for their Parent role to be removed in Moodle. */
  async childrenPendingUnassign(q: Queryable, childIds: number[]): Promise<ChildRecord[]> {
    const found: ChildRecord[] = [];
    for (let i = 0; i < childIds.length; i += 500) {
      const rows = (await q(CHILDREN_TABLE).whereIn('id', childIds.slice(i, i + 500)).where({ unassign_pending: true })) as Row[];
      found.push(...rows.map(childFromRow));
    }
    return found;
  }

  async updateChild(q: Queryable, childId: number, patch: Partial<ChildRecord>): Promise<void> {
    await q(CHILDREN_TABLE).where({ id: childId }).update(childToRow(patch));
  }

  async updateChildren(q: Queryable, childIds: number[], patch: Partial<ChildRecord>): Promise<void> {
    for (let i = 0; i < childIds.length; i += 500) {
      await q(CHILDREN_TABLE).whereIn('id', childIds.slice(i, i + 500)).update(childToRow(patch));
    }
  }

  async maxChildPosition(q: Queryable, requestId: number): Promise<number> {
    const row = (await q(CHILDREN_TABLE).where({ request_id: requestId }).max({ max: 'position' }).first()) as
      | { max: number | null }
      | undefined;
    return row?.max === null || row?.max === undefined ? -1 : Number(row.max);
  }

  async list(q: Queryable, filter: ListRequestsFilter = {}): Promise<RequestRecord[]> {
    const query = q(REQUESTS_TABLE).orderBy('id', 'desc');
    if (filter.status !== undefined) query.whereIn('status', Array.isArray(filter.status) ? filter.status : [filter.status]);
    if (filter.email !== undefined) query.where({ email: filter.email });
    query.limit(filter.limit ?? 100).offset(filter.offset ?? 0);
    return ((await query) as Row[]).map(requestFromRow);
  }

  // --- details held until the address confirms them ---

  async insertHeldDetails(q: Queryable, held: Omit<HeldDetailsRecord, 'id'>): Promise<number> {
    const inserted = await q(HELD_DETAILS_TABLE).insert({
      request_id: held.requestId,
      token_hash: held.tokenHash,
      expires_at: held.expiresAt,
      children_json: JSON.stringify(held.children),
      comment: held.comment,
      source: held.source,
      actor_type: held.actorType,
      actor_id: held.actorId,
      submitter_ip: held.submitterIp,
      submitter_agent: held.submitterAgent,
      idempotency_key: held.idempotencyKey,
      created_at: held.createdAt,
    });
    return Number(inserted[0]);
  }

  async findHeldDetailsByTokenHash(q: Queryable, tokenHash: string, options: { forUpdate?: boolean } = {}): Promise<HeldDetailsRecord | undefined> {
    const query = q(HELD_DETAILS_TABLE).where({ token_hash: tokenHash }).first();
    if (options.forUpdate && isMysql(q)) query.forUpdate();
    const row = (await query) as Row | undefined;
    return row ? heldDetailsFromRow(row) : undefined;
  }

  async findHeldDetailsByIdempotencyKey(q: Queryable, key: string): Promise<HeldDetailsRecord | undefined> {
    const row = (await q(HELD_DETAILS_TABLE).where({ idempotency_key: key }).first()) as Row | undefined;
    return row ? heldDetailsFromRow(row) : undefined;
  }

  async deleteHeldDetails(q: Queryable, id: number): Promise<number> {
    return Number(await q(HELD_DETAILS_TABLE).where({ id }).delete());
  }

  /** Drops what is held for a request (it closed, or its data was erased). */
  async deleteHeldDetailsForRequest(q: Queryable, requestId: number): Promise<number> {
    return Number(await q(HELD_DETAILS_TABLE).where({ request_id: requestId }).delete());
  }

  /** Drops held details whose link has run out: nobody can confirm them any more. */
  async deleteExpiredHeldDetails(q: Queryable, now: number): Promise<number> {
    return Number(await q(HELD_DETAILS_TABLE).where('expires_at', '<', now).delete());
  }

  // --- the auth table ---

  async insertAuthRow(q: Queryable, row: Omit<AuthRow, 'id'>): Promise<void> {
    await q(this.authTable).insert({
      username: row.username,
      firstname: row.firstname,
      lastname: row.lastname,
      email: row.email,
      request_id: row.requestId,
    });
  }

  async findAuthRowByUsername(q: Queryable, username: string): Promise<AuthRow | undefined> {
    const row = (await q(this.authTable).where({ username }).first()) as Row | undefined;
    return row ? authFromRow(row) : undefined;
  }

  async findAuthRowByRequest(q: Queryable, requestId: number): Promise<AuthRow | undefined> {
    const row = (await q(this.authTable).where({ request_id: requestId }).first()) as Row | undefined;
    return row ? authFromRow(row) : undefined;
  }

  /** Which of these usernames the auth table holds, and for which request (exact comparison, chunked). */
  async authRowsByUsername(q: Queryable, usernames: string[]): Promise<Map<string, AuthRow>> {
    const found = new Map<string, AuthRow>();
    for (let i = 0; i < usernames.length; i += 500) {
      const rows = (await q(this.authTable).whereIn('username', usernames.slice(i, i + 500))) as Row[];
      for (const row of rows) found.set(String(row.username), authFromRow(row));
    }
    return found;
  }

  async insertAuthRows(q: Queryable, rows: Array<Omit<AuthRow, 'id'>>): Promise<void> {
    for (let i = 0; i < rows.length; i += 200) {
      await q(this.authTable).insert(
        rows.slice(i, i + 200).map((row) => ({ username: row.username, firstname: row.firstname, lastname: row.lastname, email: row.email, request_id: row.requestId })),
      );
    }
  }

  /** Of these WordPress plugin request ids, the ones already imported, with this service's request id. */
  async requestIdsByWpRequestId(q: Queryable, wpRequestIds: number[]): Promise<Map<number, number>> {
    const found = new Map<number, number>();
    for (let i = 0; i < wpRequestIds.length; i += 500) {
      const rows = (await q(REQUESTS_TABLE).whereIn('wp_request_id', wpRequestIds.slice(i, i + 500)).select('id', 'wp_request_id')) as Row[];
      for (const row of rows) found.set(Number(row.wp_request_id), Number(row.id));
    }
    return found;
  }

  /** Inserts children whose link state is already known (an import of requests decided elsewhere). */
  async insertChildrenWithState(
    q: Queryable,
    rows: Array<{ requestId: number; position: number; child: NewChildRow; moodleUserId: number | null; linkState: ChildLinkState; linkedAt: number | null; lastError: string | null }>,
    now: number,
  ): Promise<void> {
    for (let i = 0; i < rows.length; i += 200) {
      await q(CHILDREN_TABLE).insert(
        rows.slice(i, i + 200).map((r) => ({
          request_id: r.requestId,
          position: r.position,
          first_name: r.child.firstName,
          last_name: r.child.lastName,
          tutor_group: r.child.tutorGroup,
          pupil_identifier: r.child.pupilIdentifier,
          moodle_user_id: r.moodleUserId,
          link_state: r.linkState,
          linked_at: r.linkedAt,
          last_error: r.lastError,
          updated_at: now,
        })),
      );
    }
  }

  async deleteAuthRowForRequest(q: Queryable, requestId: number): Promise<number> {
    return Number(await q(this.authTable).where({ request_id: requestId }).delete());
  }

  async allAuthRows(q: Queryable): Promise<AuthRow[]> {
    return ((await q(this.authTable).orderBy('username')) as Row[]).map(authFromRow);
  }

  // --- the audit trail ---

  async insertAudit(q: Queryable, now: number, events: AuditEventInput[]): Promise<void> {
    if (events.length === 0) return;
    // 500 rows of 6 values a statement: well within SQLite's limit on bound values.
    for (let i = 0; i < events.length; i += 500) {
      await q(AUDIT_TABLE).insert(
        events.slice(i, i + 500).map((e) => ({
          created_at: now,
          actor_type: e.actorType,
          actor_id: e.actorId,
          request_id: e.requestId,
          action: e.action,
          details: JSON.stringify(e.details ?? {}),
        })),
      );
    }
  }

  async auditFor(q: Queryable, requestId: number): Promise<AuditEventRecord[]> {
    const rows = (await q(AUDIT_TABLE).where({ request_id: requestId }).orderBy('id')) as Row[];
    return rows.map(auditFromRow);
  }

  // --- erasure ---

  /** Blanks the names and identifiers of a request's children; link states and times stay. */
  async eraseChildren(q: Queryable, requestId: number, now: number): Promise<void> {
    await q(CHILDREN_TABLE)
      .where({ request_id: requestId })
      .update(childToRow({ firstName: '', lastName: '', tutorGroup: '', pupilIdentifier: null, moodleUserId: null, lastError: null, updatedAt: now }));
  }

  /** Rewrites the details of a request's audit events; the rows themselves stay. */
  async rewriteAuditDetails(q: Queryable, requestId: number, rewrite: (details: Record<string, unknown>) => Record<string, unknown>): Promise<void> {
    const rows = (await q(AUDIT_TABLE).where({ request_id: requestId }).select('id', 'details')) as Row[];
    for (const row of rows) {
      // Compared with the stored text, so details that no longer parse are replaced too.
      const details = JSON.stringify(rewrite(auditFromRow(row).details));
      if (details !== row.details) await q(AUDIT_TABLE).where({ id: row.id }).update({ details });
    }
  }
}

function heldDetailsFromRow(r: Row): HeldDetailsRecord {
  let children: NewChildRow[] = [];
  try {
    const parsed = JSON.parse(String(r.children_json ?? '[]')) as unknown;
    if (Array.isArray(parsed)) children = parsed as NewChildRow[];
  } catch {
    children = [];
  }
  return {
    id: Number(r.id),
    requestId: Number(r.request_id),
    tokenHash: String(r.token_hash),
    expiresAt: Number(r.expires_at),
    children,
    comment: nullableString(r.comment),
    source: r.source as RequestSource,
    actorType: String(r.actor_type),
    actorId: nullableString(r.actor_id),
    submitterIp: nullableString(r.submitter_ip),
    submitterAgent: nullableString(r.submitter_agent),
    idempotencyKey: nullableString(r.idempotency_key),
    createdAt: Number(r.created_at),
  };
}

function authFromRow(r: Row): AuthRow {
  return {
    id: Number(r.id),
    username: String(r.username),
    firstname: String(r.firstname),
    lastname: String(r.lastname),
    email: String(r.email),
    requestId: Number(r.request_id),
  };
}

export function auditFromRow(r: Row): AuditEventRecord {
  let details: Record<string, unknown> = {};
  try {
    details = JSON.parse(String(r.details ?? '{}')) as Record<string, unknown>;
  } catch {
    details = {};
  }
  return {
    id: Number(r.id),
    createdAt: Number(r.created_at),
    actorType: String(r.actor_type),
    actorId: nullableString(r.actor_id),
    requestId: nullableNumber(r.request_id),
    action: String(r.action),
    details,
  };
}
