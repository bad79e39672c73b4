// The baseline for the reconcile benchmark: the obvious way to write a reconcile run. It reads
// the links and parents with the same queries as the real run, then parent by parent looks the
// account up with one call, and link by link looks the pupil up with one call and either ends
// the link (through the same lifecycle) or assigns its role with one call. No lock, no report,
// no suspension bookkeeping: everything it leaves out only makes it faster.
import type { MoodleClient } from '../../../src/moodle/moodle-client';
import { pupilStanding } from '../../../src/provisioning/provisioning-cycle';
import type { ReconcileRepository } from '../../../src/reconcile/reconcile-repository';
import type { RequestLifecycle } from '../../../src/requests/request-lifecycle';

export interface NaiveReconcileResult {
  links: number;
  /** Parents processed (all of them, or the first `limit`), with their links. */
  processedParents: number;
  processedLinks: number;
  ended: number;
  reasserted: number;
  loadMs: number;
  loopMs: number;
}

export async function runNaiveReconcile(
  repository: ReconcileRepository,
  lifecycle: RequestLifecycle,
  moodle: MoodleClient,
  options: { parentRoleId: number; limit?: number },
): Promise<NaiveReconcileResult> {
  const t0 = performance.now();
  const links = await repository.activeLinks();
  const parents = await repository.provisionedParents();
  const t1 = performance.now();
  const sample = parents.slice(0, options.limit ?? parents.length);
  const byRequest = new Map<number, typeof links>();
  for (const link of links) byRequest.set(link.requestId, [...(byRequest.get(link.requestId) ?? []), link]);
  let ended = 0;
  let reasserted = 0;
  let processedLinks = 0;
  for (const parent of sample) {
    if (!parent.username) continue;
    const [account] = await moodle.getUsersByField('username', [parent.username]);
    let version: number | undefined;
    for (const link of byRequest.get(parent.requestId) ?? []) {
      processedLinks += 1;
      const [pupil] = await moodle.getUsersByField('id', [link.pupilId]);
      if (pupilStanding(pupil) === 'deleted') {
        const after = await lifecycle.revokeChild(link.requestId, link.childId, { expectedVersion: version ?? link.requestVersion, reason: "Link ended: the pupil's Moodle account was deleted." }, { type: 'reconcile', id: 'naive' });
        version = after.version;
        ended += 1;
      } else if (account) {
        await moodle.assignRoles([{ roleid: options.parentRoleId, userid: account.id, contextlevel: 'user', instanceid: link.pupilId }]);
        reasserted += 1;
      }
    }
  }
  return { links: links.length, processedParents: sample.length, processedLinks, ended, reasserted, loadMs: t1 - t0, loopMs: performance.now() - t1 };
}
