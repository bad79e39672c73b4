// The baseline for the cycle benchmark: the obvious way to write a provisioning cycle. It reads
// the due work with the same two set queries as the real cycle, then, request by request, looks
// the parent up with one Moodle call, assigns each child's role with one call, and records each
// outcome with its own UPDATE. It keeps no lock, audit trail, cycle report or email: everything
// it leaves out only makes it faster.
import type { Database } from '../../../src/db/database';
import type { MoodleClient } from '../../../src/moodle/moodle-client';
import { CycleRepository } from '../../../src/provisioning/cycle-repository';
import { CHILDREN_TABLE, REQUESTS_TABLE, childToRow, requestToRow } from '../../../src/requests/request-repository';

export interface NaiveCycleResult {
  /** Due requests found. */
  due: number;
  /** Requests processed (all of them, or the first `limit`). */
  processed: number;
  provisioned: number;
  loadMs: number;
  loopMs: number;
  loadQueries: number;
  loopQueries: number;
}

export async function runNaiveCycle(
  db: Database,
  moodle: MoodleClient,
  options: { parentRoleId: number; limit?: number; countQueries: () => number },
): Promise<NaiveCycleResult> {
  const q0 = options.countQueries();
  const t0 = performance.now();
  const work = await new CycleRepository(db).dueApprovedRequests(Date.now());
  const t1 = performance.now();
  const q1 = options.countQueries();

  const sample = work.slice(0, options.limit ?? work.length);
  let provisioned = 0;
  for (const { request, children } of sample) {
    if (!request.moodleUsername) continue;
    const [parent] = await moodle.getUsersByField('username', [request.moodleUsername]);
    if (!parent) continue;
    let linked = 0;
    const matched = children.filter((c) => c.linkState === 'matched' && c.moodleUserId !== null);
    for (const child of matched) {
      await moodle.assignRoles([{ roleid: options.parentRoleId, userid: parent.id, contextlevel: 'user', instanceid: child.moodleUserId as number }]);
      const now = Date.now();
      await db(CHILDREN_TABLE)
        .where({ id: child.id })
        .update(childToRow({ linkState: 'linked', linkedAt: now, updatedAt: now }));
      linked += 1;
    }
    if (linked === matched.length) {
      const now = Date.now();
      const changed = await db(REQUESTS_TABLE)
        .where({ id: request.id, version: request.version })
        .update({ ...requestToRow({ status: 'provisioned', moodleUserId: parent.id, provisionedAt: now, updatedAt: now }), version: request.version + 1 });
      provisioned += Number(changed);
    }
  }
  const t2 = performance.now();
  return {
    due: work.length,
    processed: sample.length,
    provisioned,
    loadMs: t1 - t0,
    loopMs: t2 - t1,
    loadQueries: q1 - q0,
    loopQueries: options.countQueries() - q1,
  };
}
