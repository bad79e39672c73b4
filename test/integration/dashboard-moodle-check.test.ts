// The dashboard's Moodle check page and the provisioning page's "What the next cycle will do"
// panel, over HTTP against real databases and the Moodle double: a check run from the button, its
// findings listed with links to the requests, a refusal while a cycle holds the lock, and the preview.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { staff, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { waitFor } from '../support/cycle-process';
import { htmlText } from '../support/http';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const textOf = (html: string) => htmlText(html.replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ');

for (const dialect of DIALECTS) {
  describe(`the Moodle check page and the cycle preview panel on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let services: Services;
    let app: Express;
    let username: string;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      services = createServices(
        parseConfig({
          NODE_ENV: 'test',
          AUTH_TABLE: TEST_AUTH_TABLE,
          SESSION_SECRET: 'dashboard-moodle-check-secret-0123456789abc',
          MOODLE_URL: moodle.url,
          MOODLE_TOKEN: moodle.tokens.ws,
          MOODLE_PARENT_ROLE_ID: '9',
          MOODLE_RETRIES: '0',
          CYCLE_SCHEDULE: 'off',
          RECONCILE_SCHEDULE: 'off',
        }),
        { db: t.db },
      );
      app = createApp(services);
      username = await createStaffUser(services, { displayName: 'Robin Office' });
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await moodle.close();
      await t.destroy();
    });

    async function approve(email: string, pupil: number, first: string) {
      const { request: submitted, children } = await services.lifecycle.submitRequest(
        submission({ email, parentFirstName: first, children: [{ firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: null }] }),
        { type: 'parent' },
      );
      await services.lifecycle.approveRequest(submitted.id, { children: [{ childId: children[0]!.id, moodleUserId: pupil }] }, staff);
      return submitted.id;
    }

    it('the preview panel shows what the next cycle will do only when asked, and changes nothing', { skip }, async () => {
      const id = await approve('panel.parent@example.org', 4, 'Panel');
      const browser = await StaffSession.signIn(app, username);
      const plain = await browser.open('/admin/provisioning');
      assert.match(textOf(plain.text), /Show what the next cycle will do/);
      moodle.resetCounts();
      const page = await browser.open('/admin/provisioning?preview=1');
      const text = textOf(page.text);
      assert.match(text, /Parents Moodle's next user sync creates ?: 1/);
      assert.match(text, /Nothing was changed/);
      assert.match(page.text, new RegExp(`href="/admin/requests/${id}">Request ${id}</a>`));
      assert.match(text, /panel\.parent@example\.org/);
      assert.equal(moodle.calls('core_role_assign_roles'), 0);
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      const next = textOf((await browser.open('/admin/provisioning?preview=1')).text);
      assert.match(next, /Links to add ?: 1/);
      await services.cycle.run('manual', 'office');
    });

    it('"Run the Moodle check now" runs a check whose findings are listed with their requests', { skip }, async () => {
      const id = await approve('check.parent@example.org', 3, 'Checkpa');
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      await services.cycle.run('manual', 'office');
      moodle.state.deleteUser(3);
      const browser = await StaffSession.signIn(app, username);
      const empty = await browser.open('/admin/moodle-check');
      assert.match(textOf(empty.text), /No Moodle check has run yet/);
      assert.equal((await browser.post('/admin/moodle-check/run', {}, { csrf: false })).status, 403, 'the CSRF token is needed');
      const started = await browser.post('/admin/moodle-check/run');
      assert.equal(started.status, 303);
      const location = started.headers.location ?? '';
      assert.match(location, /^\/admin\/moodle-check\?run=\d+&started=1$/);
      const runId = Number(/run=(\d+)/.exec(location)?.[1]);
      await waitFor('the check to finish', async () => (await services.reconcile.repository.get(runId))?.state !== 'running');
      const text = textOf((await browser.open(location)).text);
      assert.match(text, new RegExp(`Check ${runId}`));
      assert.match(text, /Links ended: the pupil's Moodle account was deleted \(1\)/);
      assert.match(text, /Checkpa/);
      assert.match(text, /Link ended: the pupil's Moodle account was deleted\./);
      assert.equal((await services.lifecycle.get(id)).request.status, 'revoked', 'its only link ended');
      const timeline = textOf((await browser.open(`/admin/requests/${id}`)).text);
      assert.match(timeline, new RegExp(`Moodle check ${runId}`));
    });

    it('is refused while a cycle holds the lock, in words', { skip }, async () => {
      await approve('locked.parent@example.org', 9, 'Locked');
      const held = moodle.holdCalls('core_user_get_users_by_field');
      const running = await services.cycle.start('manual', 'office');
      await held.reached;
      const browser = await StaffSession.signIn(app, username);
      await browser.open('/admin/moodle-check');
      const refused = await browser.post('/admin/moodle-check/run');
      assert.equal(refused.status, 409);
      assert.match(textOf(refused.text), /A provisioning cycle is running, so the Moodle check was not started/);
      held.release();
      await running.finished;
    });

    it('office staff may run it; without a session the page sends to sign-in', { skip }, async () => {
      const res = await request(app).get('/admin/moodle-check');
      assert.equal(res.status, 303);
      assert.match(res.headers.location ?? '', /^\/admin\/sign-in\?next=/);
    });
  });
}
