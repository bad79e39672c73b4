// Approved requests for the cycle benchmark, written in batches: thousands of submit-and-approve
// transactions would take minutes. The rows are what the lifecycle leaves after approval (status
// approved, each child matched to a Moodle pupil, the parent's auth row), built with the
// repository's own row mapping and checked against the auth-table invariant afterwards.
import { assertAuthInvariant } from '../../support/builders';
import type { Database } from '../../../src/db/database';
import { newPublicId } from '../../../src/requests/request-lifecycle';
import { CHILDREN_TABLE, REQUESTS_TABLE, childToRow, requestToRow, type RequestRecord } from '../../../src/requests/request-repository';
import { usernameFromEmail } from '../../../src/requests/username';
import type { MoodleSiteState } from '../../support/moodle-double';
import { BENCH_AUTH_TABLE } from '../support/bench-database';

export const CHILDREN_PER_REQUEST = 2;
const BATCH = 500;
/** Far above the ids the double gives the parents its sync creates (next after the highest). */
const FIRST_PUPIL_ID = 1_000_001;

export function parentEmail(index: number): string {
  return `parent.${index}@bench.example.org`;
}

export function pupilId(index: number, child: number): number {
  return FIRST_PUPIL_ID + index * CHILDREN_PER_REQUEST + child;
}

/**
 * The pupils' Moodle accounts, unless already there. Added after the sync has created the
 * parents: the double's sync scans every user for every new one, so fewer users make it faster.
 * Explicit ids, because the double's next-id search also scans every user.
 */
export function addPupils(state: MoodleSiteState, count: number): void {
  for (let i = 0; i < count; i++) {
    for (let c = 0; c < CHILDREN_PER_REQUEST; c++) {
      if (state.users.has(pupilId(i, c))) continue;
      state.addUser({ id: pupilId(i, c), username: `pupil.${i}.${c}`, firstname: `Child${c}`, lastname: `Pupil${i}`, department: '7B' });
    }
  }
}

export function approvedRecord(index: number, now: number): Omit<RequestRecord, 'id'> {
  const email = parentEmail(index);
  const username = usernameFromEmail(email);
  if (!username.ok) throw new Error(username.reason);
  return {
    publicId: newPublicId(),
    status: 'approved',
    requestType: 'new_account',
    source: 'form',
    parentTitle: 'Ms',
    parentFirstName: 'Pat',
    parentLastName: `Parent${index}`,
    email,
    parentComment: null,
    staffComment: null,
    moodleUsername: username.username,
    moodleUserId: null,
    linkExistingAccount: false,
    verificationTokenHash: null,
    verificationExpiresAt: null,
    verifiedAt: now,
    decidedAt: now,
    decidedBy: 'staff:bench',
    decisionReason: null,
    provisionedAt: null,
    attempts: 0,
    lastError: null,
    nextAttemptAt: null,
    waitingSince: null,
    // Submitted (1), confirmed (2), approved (3).
    version: 3,
    submitterIp: null,
    submitterAgent: null,
    idempotencyKey: null,
    importBatchId: null,
    erasedAt: null,
    createdAt: now,
    updatedAt: now,
  };
}

/** Writes `count` approved requests with two matched children each, and their auth rows. */
export async function seedApprovedRequests(db: Database, count: number): Promise<void> {
  const now = Date.now();
  for (let start = 0; start < count; start += BATCH) {
    const indexes = Array.from({ length: Math.min(BATCH, count - start) }, (_, k) => start + k);
    await db.transaction(async (trx) => {
      const records = indexes.map((i) => approvedRecord(i, now));
      await trx(REQUESTS_TABLE).insert(records.map((r) => requestToRow(r)));
      const ids = (await trx(REQUESTS_TABLE)
        .whereIn(
          'email',
          records.map((r) => r.email),
        )
        .select('id', 'email')) as Array<{ id: number; email: string }>;
      const idByEmail = new Map(ids.map((r) => [r.email, Number(r.id)]));
      const children = indexes.flatMap((i) =>
        Array.from({ length: CHILDREN_PER_REQUEST }, (_, c) =>
          childToRow({
            requestId: idByEmail.get(parentEmail(i)) as number,
            position: c,
            firstName: `Child${c}`,
            lastName: `Pupil${i}`,
            tutorGroup: '7B',
            pupilIdentifier: null,
            moodleUserId: pupilId(i, c),
            linkState: 'matched',
            linkedAt: null,
            revokedAt: null,
            unassignPending: false,
            attempts: 0,
            lastError: null,
            nextAttemptAt: null,
            updatedAt: now,
          }),
        ),
      );
      await trx(CHILDREN_TABLE).insert(children);
      await trx(BENCH_AUTH_TABLE).insert(
        records.map((r) => ({
          username: r.moodleUsername,
          firstname: r.parentFirstName,
          lastname: r.parentLastName,
          email: r.email,
          request_id: idByEmail.get(r.email),
        })),
      );
    });
  }
  await assertAuthInvariant(db);
}
