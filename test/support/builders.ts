// Test data builders and the auth-table invariant check shared by integration tests.
import assert from 'node:assert/strict';
import type { Database } from '../../src/db/database';
import { RequestLifecycle, type Actor, type ExistingRequestInput, type SubmitInput } from '../../src/requests/request-lifecycle';
import { RequestRepository } from '../../src/requests/request-repository';
import { TEST_AUTH_TABLE } from './databases';

export const staff: Actor = { type: 'staff', id: 'office' };
export const cycleActor: Actor = { type: 'cycle', id: '1' };

let counter = 0;

export function submission(overrides: Partial<SubmitInput> = {}): SubmitInput {
  counter += 1;
  return {
    requestType: 'new_account',
    parentTitle: 'Ms',
    parentFirstName: 'Pat',
    parentLastName: `Parent${counter}`,
    email: `parent${counter}.${process.pid}@example.org`,
    comment: null,
    children: [
      { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM1001' },
      { firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: null },
    ],
    source: 'form',
    requireVerification: false,
    ...overrides,
  };
}

/**
 * A request as the WordPress plugin import hands it to the lifecycle: provisioned, its auth row
 * (username parent.one, which the recorded Moodle site has), one child linked to pupil 3 and one,
 * Cara Smith of 8A, left for staff to pick.
 */
export function importedRequestInput(overrides: Partial<ExistingRequestInput> = {}): ExistingRequestInput {
  const username = overrides.authRow?.username ?? 'parent.one';
  return {
    wpRequestId: 42,
    status: 'provisioned',
    requestType: 'new_account',
    parentTitle: 'Mrs',
    parentFirstName: 'Pat',
    parentLastName: 'One',
    email: `${username}@example.com`,
    parentComment: null,
    staffComment: null,
    decisionReason: null,
    createdAt: Date.UTC(2019, 8, 3),
    decidedAt: Date.UTC(2019, 8, 4),
    children: [
      { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null, moodleUserId: 3, linkState: 'linked', note: null },
      { firstName: 'Cara', lastName: 'Smith', tutorGroup: '8A', pupilIdentifier: null, moodleUserId: null, linkState: 'unmatched', note: 'Pick the pupil: more than one pupil in Moodle could be Cara Smith (8A).' },
    ],
    authRow: { username, firstname: 'Pat', lastname: 'One', email: `${username}@example.com` },
    details: { wpRequestId: overrides.wpRequestId ?? 42, pluginStatus: 'provisioned' },
    ...overrides,
  };
}

export function createLifecycle(db: Database, now?: () => number): RequestLifecycle {
  return new RequestLifecycle(db, new RequestRepository(TEST_AUTH_TABLE), now ? { now } : {});
}

/** Submits a request and approves it with pupil ids 3, 4, … for its children. */
export async function approvedRequest(lifecycle: RequestLifecycle, overrides: Partial<SubmitInput> = {}, firstPupilId = 3) {
  const { request, children } = await lifecycle.submitRequest(submission(overrides), { type: 'parent' });
  const approved = await lifecycle.approveRequest(
    request.id,
    { expectedVersion: request.version, children: children.map((c, i) => ({ childId: c.id, moodleUserId: firstPupilId + i })) },
    staff,
  );
  return { request: approved, children: await lifecycle.repository.children(lifecycle['db'], request.id) };
}

/**
 * Closes off every earlier test's open work directly (no lifecycle, no Moodle), so a cycle or a
 * reconcile run of the next test sees only that test's requests: approved and provisioned become
 * revoked with no role left to remove, and the auth table is emptied to match.
 */
export async function closeOffOpenWork(db: Database): Promise<void> {
  await db('request_children').update({ unassign_pending: false });
  await db(TEST_AUTH_TABLE).delete();
  await db('requests').whereIn('status', ['approved', 'provisioned']).update({ status: 'revoked' });
}

/** A snapshot of everything a transition could change, to prove a refused one changed nothing. */
export async function snapshot(db: Database) {
  return {
    requests: await db('requests').orderBy('id'),
    children: await db('request_children').orderBy('id'),
    auth: await db(TEST_AUTH_TABLE).orderBy('id'),
    audit: await db('audit_events').count({ n: '*' }).first(),
  };
}

/**
 * The auth table holds exactly the parents of approved and provisioned requests (less those
 * linked to an existing Moodle account), each row pointing at its request, username lower-case.
 */
export async function assertAuthInvariant(db: Database): Promise<void> {
  const rows = (await db(TEST_AUTH_TABLE).select('username', 'email', 'request_id')) as Array<{ username: string; email: string; request_id: number }>;
  const entitled = (await db('requests')
    .whereIn('status', ['approved', 'provisioned'])
    .where({ link_existing_account: false })
    .select('id', 'moodle_username', 'email')) as Array<{ id: number; moodle_username: string; email: string }>;
  const actual = rows.map((r) => `${Number(r.request_id)}:${r.username}`).sort();
  const expected = entitled.map((r) => `${Number(r.id)}:${r.moodle_username}`).sort();
  assert.deepEqual(actual, expected, 'auth table must equal the parents of approved/provisioned requests');
  for (const r of rows) assert.equal(r.username, r.username.toLowerCase(), 'auth usernames are lower-case');
}

/**
 * Bulk test data: `count` approved requests, each with `childrenEach` children matched to pupil
 * ids firstPupilId, firstPupilId + 1, … and its auth row, written with a few multi-row inserts
 * (through the lifecycle, a thousand requests take thousands of transactions).
 */
export async function insertApprovedRequests(
  db: Database,
  count: number,
  options: { childrenEach?: number; firstPupilId?: number; emailPrefix?: string } = {},
): Promise<Array<{ id: number; version: number; email: string; childIds: number[]; pupilIds: number[] }>> {
  const childrenEach = options.childrenEach ?? 2;
  const prefix = options.emailPrefix ?? `bulk${++counter}.${process.pid}`;
  const now = Date.now();
  const emails = Array.from({ length: count }, (_, i) => `${prefix}.${i}@example.org`);
  for (let i = 0; i < count; i += 200) {
    await db('requests').insert(
      emails.slice(i, i + 200).map((email, j) => ({
        public_id: `${prefix}-${i + j}`.slice(0, 32),
        status: 'approved',
        request_type: 'new_account',
        source: 'import',
        parent_first_name: 'Pat',
        parent_last_name: `Bulk${i + j}`,
        email,
        moodle_username: email,
        decided_at: now,
        decided_by: 'staff:office',
        version: 2,
        created_at: now,
        updated_at: now,
      })),
    );
  }
  const rows = (await db('requests').whereIn('email', emails).select('id', 'email').orderBy('id')) as Array<{ id: number; email: string }>;
  const firstPupil = options.firstPupilId ?? 3;
  const children = rows.flatMap((r, i) =>
    Array.from({ length: childrenEach }, (_, position) => ({
      request_id: r.id,
      position,
      first_name: `Child${position}`,
      last_name: `Bulk${i}`,
      moodle_user_id: firstPupil + i * childrenEach + position,
      link_state: 'matched',
      updated_at: now,
    })),
  );
  for (let i = 0; i < children.length; i += 200) await db('request_children').insert(children.slice(i, i + 200));
  for (let i = 0; i < rows.length; i += 200) {
    await db(TEST_AUTH_TABLE).insert(
      rows.slice(i, i + 200).map((r, j) => ({ username: r.email, firstname: 'Pat', lastname: `Bulk${i + j}`, email: r.email, request_id: r.id })),
    );
  }
  const childRows = (await db('request_children')
    .whereIn(
      'request_id',
      rows.map((r) => r.id),
    )
    .select('id', 'request_id', 'moodle_user_id')
    .orderBy(['request_id', 'position'])) as Array<{ id: number; request_id: number; moodle_user_id: number }>;
  return rows.map((r) => {
    const own = childRows.filter((c) => Number(c.request_id) === Number(r.id));
    return { id: Number(r.id), version: 2, email: r.email, childIds: own.map((c) => Number(c.id)), pupilIds: own.map((c) => Number(c.moodle_user_id)) };
  });
}
