// The reconcile run (the Moodle check) against a real database and the Moodle test double over
// HTTP: pupils deleted or suspended in Moodle, roles removed by hand, parents suspended, the last
// link of a parent ending, the shared lock with the cycle, and a token that cannot see users.
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import type { Database } from '../../src/db/database';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { CycleAlreadyRunningError, MoodleCheckRunningError, ProvisioningCycle } from '../../src/provisioning/provisioning-cycle';
import { Reconciliation, RECONCILE_MESSAGES, REPORT_ONLY_PREFIX, type ReconcileSettings } from '../../src/reconcile/reconciliation';
import type { RequestLifecycle } from '../../src/requests/request-lifecycle';
import { assertAuthInvariant, closeOffOpenWork, createLifecycle, staff, submission } from '../support/builders';
import { TEST_CYCLE_SETTINGS } from '../support/cycle-settings';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

const PARENT_ROLE = 9;
const DAY = 86_400_000;
const cycleSettings = TEST_CYCLE_SETTINGS;
const reconcileSettings: ReconcileSettings = {
  parentRoleId: PARENT_ROLE,
  lockTtlMs: 60_000,
  pupilLeftGraceDays: 30,
  reassert: true,
  scheduledLockWaitMs: 10_000,
};

for (const dialect of DIALECTS) {
  describe(`reconcile on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let lifecycle: RequestLifecycle;
    let moodle: MoodleDouble;
    let clock: number;
    const now = () => clock;
    const calls = { n: 0 };

    function client(token: string = moodle.tokens.ws) {
      return new MoodleClient({ url: moodle.url, token, timeoutMs: 2000, retries: 1, retryDelayMs: 1, batchSize: 100, onCall: () => (calls.n += 1) });
    }
    function makeCycle(db: Database = t.db) {
      return new ProvisioningCycle({ db, lifecycle, moodle: client(), settings: cycleSettings, logger: pino({ level: 'silent' }), now, moodleCallCount: () => calls.n });
    }
    function makeReconcile(settings: Partial<ReconcileSettings> = {}, token?: string) {
      return new Reconciliation({
        db: t.db,
        authTable: TEST_AUTH_TABLE,
        lifecycle,
        moodle: client(token),
        settings: { ...reconcileSettings, ...settings },
        logger: pino({ level: 'silent' }),
        now,
        moodleCallCount: () => calls.n,
      });
    }

    before(async () => {
      if (!skip) t = await createTestDatabase(dialect);
    });
    after(async () => t?.destroy());
    beforeEach(async () => {
      if (skip) return;
      // Each test starts with no open work: earlier tests' requests are closed off directly.
      await closeOffOpenWork(t.db);
      await t.db('pupil_suspensions').delete();
      clock = Date.now();
      lifecycle = createLifecycle(t.db, now);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
    });
    afterEach(async () => {
      if (skip) return;
      await moodle.close();
      await assertAuthInvariant(t.db);
    });

    /** A parent approved for these pupils, synced into Moodle and provisioned by a cycle. */
    async function provisioned(email: string, pupils: number[]) {
      const children = pupils.map((_, i) => ({ firstName: `Child${i}`, lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null }));
      const { request, children: kids } = await lifecycle.submitRequest(submission({ email, children }), { type: 'parent' });
      await lifecycle.approveRequest(request.id, { children: kids.map((c, i) => ({ childId: c.id, moodleUserId: pupils[i] ?? null })) }, staff);
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      const summary = await makeCycle().run('manual', 'office');
      assert.equal(summary.counts.provisioned, 1, 'provisioned by the cycle');
      const parent = moodle.state.userByUsername(email)!;
      return { requestId: request.id, childIds: kids.map((c) => c.id), parentId: parent.id };
    }

    it('a pupil deleted in Moodle: the link ends through the lifecycle, audited, and the next cycle removes the role', { skip }, async () => {
      const p = await provisioned('deleted.pupil@example.org', [3, 4]);
      moodle.state.deleteUser(4);
      const summary = await makeReconcile().run('manual', 'office');
      assert.equal(summary.state, 'succeeded');
      assert.equal(summary.counts.linksChecked, 2);
      assert.equal(summary.counts.pupilsDeleted, 1);
      assert.equal(summary.counts.linksEnded, 1);
      assert.equal(summary.counts.parentsRevoked, 0);
      assert.deepEqual(summary.findings.map((f) => [f.kind, f.action, f.childId]), [['pupil_deleted', 'ended', p.childIds[1]]]);

      const { request, children } = await lifecycle.get(p.requestId);
      assert.equal(request.status, 'provisioned', 'the other child is still linked');
      assert.deepEqual(children.map((c) => c.linkState), ['linked', 'revoked']);
      assert.equal(children[1]?.unassignPending, true, 'queued for the revocation path');
      const audit = await lifecycle.repository.auditFor(t.db, p.requestId);
      const ended = audit.find((a) => a.action === 'child_revoked');
      assert.equal(ended?.actorType, 'reconcile');
      assert.equal(ended?.actorId, String(summary.runId));
      assert.equal(ended?.details.reason, RECONCILE_MESSAGES.pupilDeleted);
      assert.match(RECONCILE_MESSAGES.pupilDeleted, /Link ended: the pupil's Moodle account was deleted/);

      const cycle = await makeCycle().run('manual', 'office');
      assert.equal(cycle.counts.unassigned, 1);
      assert.equal((await lifecycle.get(p.requestId)).children[1]?.unassignPending, false);
      const again = await makeReconcile().run('manual', 'office');
      assert.equal(again.counts.linksChecked, 1, 'an ended link is not checked again');
      assert.equal(again.findings.length, 0);
      const stored = await makeReconcile().repository.get(summary.runId);
      assert.equal(stored?.findings[0]?.kind, 'pupil_deleted');
      assert.equal(stored?.triggeredBy, 'office');
    });

    it('a pupil suspended: reported during the grace period, the link ends after it; active again starts the count afresh', { skip }, async () => {
      const p = await provisioned('suspended.pupil@example.org', [3, 4]);
      const start = clock;
      moodle.state.setSuspended(3, true);
      const first = await makeReconcile().run('manual', 'office');
      assert.equal(first.state, 'attention');
      assert.equal(first.counts.pupilsSuspended, 1);
      assert.equal(first.counts.linksEnded, 0);
      assert.deepEqual(first.findings.map((f) => [f.kind, f.action]), [['pupil_suspended', 'reported']]);
      assert.match(first.findings[0]!.message, new RegExp(`the link ends on ${new Date(start + 30 * DAY).toISOString().slice(0, 10)}`));

      // Active again on day 10: the grace period starts over when it is next suspended (day 35).
      clock = start + 10 * DAY;
      moodle.state.setSuspended(3, false);
      assert.equal((await makeReconcile().run('manual', 'office')).counts.pupilsSuspended, 0);
      clock = start + 35 * DAY;
      moodle.state.setSuspended(3, true);
      const restarted = await makeReconcile().run('manual', 'office');
      assert.equal(restarted.counts.linksEnded, 0, 'the days before it was active again do not count');

      clock = start + 35 * DAY + 30 * DAY + 1;
      const ended = await makeReconcile().run('manual', 'office');
      assert.equal(ended.counts.linksEnded, 1);
      assert.deepEqual(ended.findings.map((f) => [f.kind, f.action, f.childId]), [['pupil_left', 'ended', p.childIds[0]]]);
      const { request, children } = await lifecycle.get(p.requestId);
      assert.equal(request.status, 'provisioned');
      assert.deepEqual(children.map((c) => c.linkState), ['revoked', 'linked']);
      assert.equal(await t.db('pupil_suspensions').count({ n: '*' }).first().then((r) => Number(r?.n)), 0, 'no grace period kept for a link that ended');
    });

    it('a report-only run lists the links a check would end and changes nothing, here or in Moodle', { skip }, async () => {
      const p = await provisioned('report.only@example.org', [3, 4]);
      moodle.state.deleteUser(4);
      moodle.state.removeUserContextRole(PARENT_ROLE, p.parentId, 3);
      const before = await t.db('request_children').whereIn('id', p.childIds).orderBy('id');
      const summary = await makeReconcile().run('cli', 'it', { reportOnly: true });
      assert.equal(summary.state, 'attention');
      assert.equal(summary.counts.linksEnded, 0);
      assert.equal(summary.counts.rolesReasserted, 0);
      assert.deepEqual(summary.findings.map((f) => [f.kind, f.action, f.childId]), [['pupil_deleted', 'reported', p.childIds[1]]]);
      assert.equal(summary.findings[0]?.message, `${REPORT_ONLY_PREFIX}${RECONCILE_MESSAGES.pupilDeleted}`);
      assert.deepEqual(await t.db('request_children').whereIn('id', p.childIds).orderBy('id'), before);
      assert.equal(moodle.state.hasUserContextRole(PARENT_ROLE, p.parentId, 3), false, 'no role given');
      assert.equal((await lifecycle.repository.auditFor(t.db, p.requestId)).filter((a) => a.actorType === 'reconcile').length, 0);
    });

    it('PUPIL_LEFT_GRACE_DAYS off: a suspended pupil is only reported, however long', { skip }, async () => {
      const p = await provisioned('grace.off@example.org', [3]);
      moodle.state.setSuspended(3, true);
      await makeReconcile({ pupilLeftGraceDays: null }).run('manual', 'office');
      clock += 400 * DAY;
      const later = await makeReconcile({ pupilLeftGraceDays: null }).run('manual', 'office');
      assert.equal(later.counts.linksEnded, 0);
      assert.match(later.findings[0]?.message ?? '', /PUPIL_LEFT_GRACE_DAYS is off/);
      assert.equal((await lifecycle.get(p.requestId)).request.status, 'provisioned');
      assert.ok(moodle.state.hasUserContextRole(PARENT_ROLE, p.parentId, 3), 'the role stays');
    });

    it('a role removed by hand in Moodle is assigned again, 100 links per call; RECONCILE_REASSERT=false only reports', { skip }, async () => {
      const p = await provisioned('hand.removed@example.org', [3, 4]);
      moodle.state.removeUserContextRole(PARENT_ROLE, p.parentId, 4);
      const reportOnly = await makeReconcile({ reassert: false }).run('manual', 'office');
      assert.equal(reportOnly.counts.rolesReasserted, 0);
      assert.equal(moodle.state.hasUserContextRole(PARENT_ROLE, p.parentId, 4), false, 'report only changes nothing in Moodle');

      moodle.resetCounts();
      const summary = await makeReconcile().run('manual', 'office');
      assert.equal(summary.counts.rolesReasserted, 2);
      assert.equal(moodle.calls('core_role_assign_roles'), 1, 'both links in one call');
      assert.ok(moodle.state.hasUserContextRole(PARENT_ROLE, p.parentId, 4), 'the role is back');
      assert.ok(moodle.state.hasUserContextRole(PARENT_ROLE, p.parentId, 3));
      assert.equal(summary.state, 'succeeded');
    });

    it('a parent suspended in Moodle while provisioned is reported, and nothing is ended', { skip }, async () => {
      const p = await provisioned('suspended.parent@example.org', [3]);
      moodle.state.setSuspended(p.parentId, true);
      const summary = await makeReconcile().run('manual', 'office');
      assert.equal(summary.state, 'attention');
      assert.equal(summary.counts.parentsSuspended, 1);
      assert.deepEqual(summary.findings.map((f) => [f.kind, f.requestId]), [['parent_suspended', p.requestId]]);
      assert.match(summary.findings[0]!.message, /user sync does not seem to be running/);
      assert.equal((await lifecycle.get(p.requestId)).request.status, 'provisioned');
    });

    it('a parent missing from Moodle, or no longer auth_db, is reported', { skip }, async () => {
      const gone = await provisioned('gone.parent@example.org', [3]);
      const manual = await provisioned('manual.parent@example.org', [4]);
      moodle.state.deleteUser(gone.parentId);
      moodle.state.users.get(manual.parentId)!.auth = 'manual';
      const summary = await makeReconcile().run('manual', 'office');
      assert.equal(summary.counts.parentsMissing, 1);
      assert.equal(summary.counts.parentsNotAuthDb, 1);
      assert.deepEqual(summary.findings.map((f) => [f.kind, f.requestId]).sort(), [['parent_missing', gone.requestId], ['parent_not_auth_db', manual.requestId]].sort());
      assert.equal(summary.counts.rolesReasserted, 1, 'no role is given to a parent Moodle does not have');
    });

    it('a parent whose last child left loses the auth row, and Moodle\'s sync suspends the account', { skip }, async () => {
      const p = await provisioned('last.child@example.org', [3]);
      moodle.state.setSuspended(3, true);
      await makeReconcile().run('manual', 'office');
      clock += 31 * DAY;
      const summary = await makeReconcile().run('manual', 'office');
      assert.equal(summary.counts.linksEnded, 1);
      assert.equal(summary.counts.parentsRevoked, 1);
      const { request } = await lifecycle.get(p.requestId);
      assert.equal(request.status, 'revoked');
      assert.equal(await t.db(TEST_AUTH_TABLE).where({ request_id: p.requestId }).first(), undefined, 'the auth row is gone');
      const audit = (await lifecycle.repository.auditFor(t.db, p.requestId)).find((a) => a.action === 'revoked');
      assert.equal(audit?.details.removedAuthRow, true);
      assert.match(await moodle.sync(t.db, TEST_AUTH_TABLE), /Suspended user last\.child@example\.org/);
      assert.equal(moodle.state.users.get(p.parentId)?.suspended, true);
    });

    it('a reconcile and a cycle started together: the later one is told, a scheduled reconcile waits', { skip }, async () => {
      await provisioned('together@example.org', [3]);
      const held = moodle.holdCalls('core_user_get_users_by_field');
      const reconcile = makeReconcile();
      const { finished } = await reconcile.start('manual', 'office');
      await held.reached;
      await assert.rejects(makeCycle().run('manual', 'office'), (e: unknown) => e instanceof MoodleCheckRunningError && /Moodle check/.test((e as Error).message));
      await assert.rejects(makeReconcile().run('cli', 'it'), (e: unknown) => e instanceof CycleAlreadyRunningError && /Moodle check is already running/.test((e as Error).message));
      held.release();
      assert.equal((await finished).state, 'succeeded');

      // The other way round: a cycle holds the lock; the dashboard is told, the schedule waits for it.
      await lifecycle.submitRequest(submission({ email: 'waiting.parent@example.org', children: [{ firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: null }] }), { type: 'parent' }).then(({ request, children }) =>
        lifecycle.approveRequest(request.id, { children: children.map((c) => ({ childId: c.id, moodleUserId: 4 })) }, staff),
      );
      const heldCycle = moodle.holdCalls('core_user_get_users_by_field');
      const cycle = makeCycle();
      const running = await cycle.start('manual', 'office');
      await heldCycle.reached;
      await assert.rejects(makeReconcile().run('manual', 'office'), (e: unknown) => e instanceof CycleAlreadyRunningError && e.cycleId === running.cycleId);
      const scheduled = makeReconcile().run('schedule', null);
      setTimeout(() => heldCycle.release(), 300);
      await running.finished;
      assert.equal((await scheduled).state, 'succeeded', 'the scheduled run went ahead once the cycle finished');
    });

    it('a token that sees nobody: every pupil looks absent, and the run stops as a permission problem, ending nothing', { skip }, async () => {
      const p = await provisioned('blind.token@example.org', [3, 4]);
      const summary = await makeReconcile({}, moodle.tokens.readonly).run('manual', 'office');
      assert.equal(summary.state, 'failed');
      assert.equal(summary.moodleProblem, 'cannot_see_users');
      assert.match(summary.error ?? '', /moodle\/user:viewdetails/);
      assert.match(summary.error ?? '', /changed nothing/);
      assert.equal(summary.counts.linksEnded, 0);
      const { request, children } = await lifecycle.get(p.requestId);
      assert.equal(request.status, 'provisioned');
      assert.deepEqual(children.map((c) => c.linkState), ['linked', 'linked']);
    });

    it('auth-table rows that break the invariant are reported and left alone', { skip }, async () => {
      const p = await provisioned('invariant@example.org', [3]);
      const closed = await lifecycle.submitRequest(submission({ email: 'closed.parent@example.org' }), { type: 'parent' });
      await lifecycle.denyRequest(closed.request.id, { reason: 'Not a parent here' }, staff);
      await t.db(TEST_AUTH_TABLE).insert({ username: 'closed.parent@example.org', firstname: 'C', lastname: 'P', email: 'closed.parent@example.org', request_id: closed.request.id });
      const summary = await makeReconcile().run('manual', 'office');
      assert.equal(summary.counts.authTableProblems, 1);
      assert.deepEqual(summary.findings.map((f) => [f.kind, f.requestId]), [['auth_row_not_entitled', closed.request.id]]);
      assert.match(summary.findings[0]!.message, /closed\.parent@example\.org/);
      assert.ok(await t.db(TEST_AUTH_TABLE).where({ username: 'closed.parent@example.org' }).first(), 'reported, not removed');
      await t.db(TEST_AUTH_TABLE).where({ username: 'closed.parent@example.org' }).delete();
      assert.equal((await lifecycle.get(p.requestId)).request.status, 'provisioned');
    });
  });
}
