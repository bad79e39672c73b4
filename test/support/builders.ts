// Test data builders and the auth-table invariant check shared by integration tests.
import assert from 'node:assert/strict';
import type { Database } from '../../src/db/database';
import { RequestLifecycle, type Actor, type SubmitInput } from '../../src/requests/request-lifecycle';
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
