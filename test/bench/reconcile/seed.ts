// Provisioned parents for the reconcile benchmark: the cycle benchmark's approved requests, their
// parents created by the double's auth_db sync, then every request marked provisioned, every child
// linked and every Parent role assigned in the double, as a finished cycle leaves them (written in
// set updates and straight into the double's state: a real cycle over 20,000 links takes minutes).
// Then some drift: a few pupils deleted in Moodle, a few roles removed by hand.
import type { Database } from '../../../src/db/database';
import { CHILDREN_TABLE, REQUESTS_TABLE } from '../../../src/requests/request-repository';
import { CONTEXT_LEVELS, type MoodleDouble } from '../../support/moodle-double';
import { BENCH_AUTH_TABLE } from '../support/bench-database';
import { PARENT_ROLE_ID } from '../support/double-runs';
import { addPupils, CHILDREN_PER_REQUEST, parentEmail, pupilId, seedApprovedRequests } from '../cycle/seed';

/** Every this-many-th parent's second child was deleted in Moodle (the link must end). */
export const DELETED_EVERY = 200;
/** Every this-many-th parent's first child lost its Parent role by hand (it must come back). */
export const REMOVED_EVERY = 100;

export interface Drift {
  deletedPupils: number[];
  removedRoles: Array<{ parentId: number; pupilId: number }>;
}

/** `size` provisioned parents × 2 linked children, everything in Moodle, then the drift. */
export async function seedProvisionedLinks(db: Database, moodle: MoodleDouble, size: number): Promise<Drift> {
  await seedApprovedRequests(db, size);
  await moodle.sync(db, BENCH_AUTH_TABLE);
  addPupils(moodle.state, size);
  await db(REQUESTS_TABLE).where({ status: 'approved' }).update({ status: 'provisioned', provisioned_at: Date.now(), version: 4 });
  await db(CHILDREN_TABLE).where({ link_state: 'matched' }).update({ link_state: 'linked', linked_at: Date.now() });

  // The double looks contexts up by a linear search; one map here keeps seeding 20,000 roles quick.
  const contextOf = new Map<number, number>();
  for (const c of moodle.state.contexts.values()) if (c.contextlevel === CONTEXT_LEVELS.user) contextOf.set(c.instanceid, c.id);
  const parentIds = new Map<string, number>();
  for (const u of moodle.state.users.values()) if (u.auth === 'db') parentIds.set(u.username, u.id);
  moodle.state.assignments = [];
  const drift: Drift = { deletedPupils: [], removedRoles: [] };
  for (let i = 0; i < size; i++) {
    const parentId = parentIds.get(parentEmail(i));
    if (parentId === undefined) throw new Error(`the sync did not create ${parentEmail(i)}`);
    for (let c = 0; c < CHILDREN_PER_REQUEST; c++) {
      const pupil = pupilId(i, c);
      if (i % REMOVED_EVERY === 0 && c === 0) {
        drift.removedRoles.push({ parentId, pupilId: pupil });
        continue;
      }
      moodle.state.assignments.push({ roleid: PARENT_ROLE_ID, userid: parentId, contextid: contextOf.get(pupil) as number });
    }
    if (i % DELETED_EVERY === DELETED_EVERY - 1) drift.deletedPupils.push(pupilId(i, 1));
  }
  for (const pupil of drift.deletedPupils) moodle.state.deleteUser(pupil);
  return drift;
}
