// Requests imported from the WordPress plugin in the dashboard, over HTTP against both databases
// and the Moodle double: their origin on the request page, the overview's banner while a pupil
// still has to be picked, and picking it, after which the next cycle links the child.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import type { Express } from 'express';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { ValidationError } from '../../src/errors';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { createServices, type Services } from '../../src/services';
import { assertAuthInvariant, importedRequestInput, snapshot } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { htmlText } from '../support/http';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'tvs-dashboard-test-secret-tvs-dashboard-test-secret';
const importer = { type: 'cli' as const, id: 'it' };

for (const dialect of DIALECTS) {
  describe(`requests imported from the WordPress plugin in the dashboard on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: Express;
    let staff: StaffSession;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      const site = seedRecordedSite();
      site.addUser({ id: 31, username: 'cara.s1', firstname: 'Cara', lastname: 'Smith', department: '8A', idnumber: 'ADM3101' });
      site.addUser({ id: 32, username: 'cara.s2', firstname: 'Cara', lastname: 'Smith', department: '8A', idnumber: 'ADM3102' });
      moodle = await startMoodleDouble({ state: site });
      const client = new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 2000, retries: 0, retryDelayMs: 1, batchSize: 50 });
      const config = parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET, LOG_LEVEL: 'silent', MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_PARENT_ROLE_ID: '9' });
      services = createServices(config, { db: t.db, moodle: client });
      app = createApp(services);
      staff = await StaffSession.signIn(app, await createStaffUser(services, { role: 'staff', displayName: 'Sam Office' }));
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await moodle.close();
      await t.destroy();
    });
    afterEach(async () => {
      if (!skip) await assertAuthInvariant(t.db);
    });

    it('the lifecycle refuses an import whose access and auth row disagree, and writes nothing', { skip }, async () => {
      const before = await snapshot(t.db);
      await assert.rejects(services.lifecycle.importExistingRequests([importedRequestInput({ authRow: null })], importer), ValidationError);
      await assert.rejects(services.lifecycle.importExistingRequests([importedRequestInput({ status: 'denied' })], importer), ValidationError);
      await assert.rejects(
        services.lifecycle.importExistingRequests([importedRequestInput({ status: 'approved' })], importer),
        /cannot be linked on a request that is approved/,
      );
      assert.deepEqual(await snapshot(t.db), before);
    });

    it('shows the origin, a banner on the overview, and lets staff pick the pupil; the cycle then links it', { skip }, async () => {
      const [result] = await services.lifecycle.importExistingRequests([importedRequestInput()], importer);
      assert.equal(result?.outcome, 'imported');
      const id = result?.requestId as number;

      const overview = await staff.open('/admin');
      assert.ok(overview.text.includes('1 request imported from the WordPress plugin needs a pupil picked'), 'the overview has the banner');
      assert.match(overview.text, new RegExp(`<a href="/admin/requests/${id}#children">Request ${id} – Pat One</a>`));

      const list = await staff.open('/admin/requests?status=provisioned');
      assert.ok(list.text.includes(`Request ${id}</a><br><span class="muted">from the WordPress plugin</span>`), 'the list shows the origin');

      const page = await staff.open(`/admin/requests/${id}`);
      const text = htmlText(page.text);
      assert.ok(text.includes('<dt>Sent through</dt><dd>Imported from the WordPress plugin (the plugin’s request 42)</dd>'), 'the page shows the origin');
      assert.ok(text.includes('<h3>Pick the pupil for Cara Smith</h3>'), 'the page flags the child');
      assert.ok(text.includes('Imported from the WordPress plugin (its request 42, “provisioned” there).'), 'the history has the import');
      assert.ok(/id="pick_\d+_31"/.test(page.text) && /id="pick_\d+_32"/.test(page.text), 'both candidates are offered');
      const cara = (await services.lifecycle.get(id)).children.find((c) => c.firstName === 'Cara');
      assert.ok(cara);
      const version = /name="version" value="(\d+)"/.exec(page.text)?.[1] as string;

      // Nothing chosen: refused in words, nothing changed.
      const empty = await staff.post(`/admin/requests/${id}/pick-pupil`, { version, childId: String(cara.id) });
      assert.equal(empty.status, 303);
      assert.equal((await services.lifecycle.get(id)).request.version, Number(version));

      const picked = await staff.post(`/admin/requests/${id}/pick-pupil`, { version, childId: String(cara.id), moodleUserId: '32' });
      assert.equal(picked.status, 303);
      const afterPick = await services.lifecycle.get(id);
      assert.equal(afterPick.request.status, 'approved');
      assert.deepEqual(afterPick.children.map((c) => [c.firstName, c.linkState, c.moodleUserId]), [['Ann', 'linked', 3], ['Cara', 'matched', 32]]);
      assert.equal((await t.db(TEST_AUTH_TABLE).where({ username: 'parent.one' })).length, 1, 'the parent keeps their access');
      assert.ok(!(await staff.open('/admin')).text.includes('needs a pupil picked'), 'the banner is gone');

      const summary = await services.cycle.run('cli', 'it');
      assert.equal(summary.state, 'succeeded', summary.error ?? '');
      const afterCycle = await services.lifecycle.get(id);
      assert.equal(afterCycle.request.status, 'provisioned');
      assert.equal(afterCycle.children[1]?.linkState, 'linked');
      assert.ok(moodle.state.hasUserContextRole(9, 6, 32), 'parent.one has the Parent role for the picked pupil');
      // The parent has had the account all along: the mail says the child is linked, not that a password is coming.
      const mails = (await t.db('mail_outbox').where({ request_id: id, kind: 'provisioned' })) as Array<{ payload: string }>;
      assert.equal(mails.length, 1);
      const mail = JSON.parse(mails[0]!.payload) as { text: string };
      assert.match(mail.text, /We linked your children to the Moodle account you already had/);
      assert.match(mail.text, /Cara /);
      assert.doesNotMatch(mail.text, /sends your password/);
    });
  });
}
