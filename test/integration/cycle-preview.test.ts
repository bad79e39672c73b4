// The cycle preview against a real database and the Moodle double: it makes only read-only Moodle
// calls, and what it says the next cycle will do is what that cycle then does.
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import pino from 'pino';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { CyclePreviewer } from '../../src/provisioning/cycle-preview';
import { ProvisioningCycle } from '../../src/provisioning/provisioning-cycle';
import type { RequestLifecycle } from '../../src/requests/request-lifecycle';
import { RequestRepository } from '../../src/requests/request-repository';
import { assertAuthInvariant, createLifecycle, staff, submission } from '../support/builders';
import { TEST_CYCLE_SETTINGS } from '../support/cycle-settings';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';

const settings = TEST_CYCLE_SETTINGS;

for (const dialect of DIALECTS) {
  describe(`cycle preview on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let lifecycle: RequestLifecycle;
    let moodle: MoodleDouble;
    before(async () => {
      if (!skip) t = await createTestDatabase(dialect);
    });
    after(async () => t?.destroy());
    beforeEach(async () => {
      if (skip) return;
      lifecycle = createLifecycle(t.db);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
    });
    afterEach(async () => {
      if (skip) return;
      await moodle.close();
      await assertAuthInvariant(t.db);
    });

    const client = (token: string = moodle.tokens.ws) => new MoodleClient({ url: moodle.url, token, timeoutMs: 2000, retries: 0, batchSize: 100 });
    const cycle = () => new ProvisioningCycle({ db: t.db, lifecycle, moodle: client(), settings, logger: pino({ level: 'silent' }) });
    const previewer = (token?: string) => new CyclePreviewer({ db: t.db, requests: new RequestRepository(TEST_AUTH_TABLE), moodle: client(token), settings });

    async function approve(email: string, pupils: number[]) {
      const children = pupils.map((_, i) => ({ firstName: `Child${i}`, lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null }));
      const { request, children: kids } = await lifecycle.submitRequest(submission({ email, children }), { type: 'parent' });
      await lifecycle.approveRequest(request.id, { children: kids.map((c, i) => ({ childId: c.id, moodleUserId: pupils[i] ?? null })) }, staff);
      return { requestId: request.id, childIds: kids.map((c) => c.id) };
    }

    it('the preview matches what the next cycle does, and changes nothing in Moodle', { skip }, async () => {
      const leaver = moodle.state.addUser({ username: 'pupil.away', firstname: 'Amy', lastname: 'Away', department: '8A' });
      // A provisioned parent with one link revoked since: its role is to be removed.
      const removing = await approve('removing@example.org', [3, 4]);
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      await cycle().run('manual', 'office');
      await lifecycle.revokeChild(removing.requestId, removing.childIds[1]!, {}, staff);
      // Parents in Moodle with pupils active, deleted and suspended; and one Moodle has not created yet.
      const linking = await approve('linking@example.org', [3, 4]);
      const failing = await approve('failing@example.org', [9]);
      const away = await approve('away@example.org', [leaver.id]);
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      const notYet = await approve('not.yet@example.org', [3]);
      moodle.state.deleteUser(9);
      moodle.state.setSuspended(leaver.id, true);

      moodle.resetCounts();
      const preview = await previewer().preview();
      assert.equal(preview.problem, null);
      assert.deepEqual(Object.keys(moodle.counts).sort(), ['core_user_get_users_by_field', 'core_webservice_get_site_info'], 'read-only calls only');
      assert.deepEqual(preview.parentsToCreate.map((p) => p.username), ['not.yet@example.org']);
      assert.deepEqual(preview.linksToAdd.map((l) => [l.requestId, l.pupilId, l.afterSync]), [[linking.requestId, 3, false], [linking.requestId, 4, false]]);
      assert.deepEqual(preview.linksToRemove.map((l) => [l.childId, l.inMoodle]), [[removing.childIds[1], true]]);
      assert.deepEqual(preview.childrenFailing.map((c) => c.childId), [failing.childIds[0]]);
      assert.deepEqual(preview.requestsWaiting.map((w) => w.requestId).sort(), [away.requestId, notYet.requestId].sort());
      assert.deepEqual(preview.requestsConflicting, []);

      const ran = cycle();
      const summary = await ran.run('manual', 'office');
      const report = await ran.repository.outcomes(summary.cycleId);
      const linked = report.flatMap((r) => r.children.filter((c) => c.outcome === 'linked').map((c) => c.childId));
      const failed = report.flatMap((r) => r.children.filter((c) => c.outcome === 'failed').map((c) => c.childId));
      assert.deepEqual(linked.sort(), preview.linksToAdd.map((l) => l.childId).sort(), 'the links the preview named, and no other');
      assert.deepEqual(failed, preview.childrenFailing.map((c) => c.childId));
      assert.equal(summary.counts.unassigned, preview.linksToRemove.length);
      assert.deepEqual(report.filter((r) => r.outcome === 'waiting').map((r) => r.requestId).sort(), preview.requestsWaiting.map((w) => w.requestId).sort());
      assert.match(await moodle.sync(t.db, TEST_AUTH_TABLE), /Inserted user not\.yet@example\.org/);
      assert.doesNotMatch(await moodle.sync(t.db, TEST_AUTH_TABLE), /Inserted user/, 'the sync created exactly the parents the preview named');
    });

    it('with a sync command, the links of parents the sync creates are previewed as added after it', { skip }, async () => {
      const pending = await approve('after.sync@example.org', [4]);
      const withSync = new CyclePreviewer({ db: t.db, requests: new RequestRepository(TEST_AUTH_TABLE), moodle: client(), settings: { ...settings, syncCommand: 'true' } });
      const preview = await withSync.preview();
      const mine = preview.linksToAdd.filter((l) => l.requestId === pending.requestId);
      assert.deepEqual(mine.map((l) => [l.pupilId, l.afterSync]), [[4, true]]);
      assert.ok(preview.parentsToCreate.some((p) => p.requestId === pending.requestId));
      await lifecycle.revokeRequest(pending.requestId, {}, staff);
    });

    it('a token that sees nobody: the preview says so instead of listing every parent as new', { skip }, async () => {
      const pending = await approve('blind.preview@example.org', [3]);
      const preview = await previewer(moodle.tokens.readonly).preview();
      assert.match(preview.problem?.message ?? '', /moodle\/user:viewdetails/);
      assert.deepEqual(preview.parentsToCreate, []);
      await lifecycle.revokeRequest(pending.requestId, {}, staff);
    });
  });
}
