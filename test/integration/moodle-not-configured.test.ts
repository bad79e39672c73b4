// What parents and staff are told while the service is not connected to Moodle: the parent's
// status page promises no time for an approved request, and the report of a cycle that stopped at
// its Moodle check says Moodle is not configured, not that there was no work.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { approvedRequest } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { htmlText } from '../support/http';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'moodle-not-configured-secret-0123456789abcdef';

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET, LOG_LEVEL: 'silent', CYCLE_SCHEDULE: 'off', ...extra });
}

for (const dialect of DIALECTS) {
  describe(`without Moodle configured, on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let connected: Services;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(testConfig(), { db: t.db, moodle: null });
      // The same database seen by a service that is connected to Moodle (the status page does not call it).
      connected = createServices(testConfig({ MOODLE_URL: 'http://127.0.0.1:9', MOODLE_TOKEN: 'a'.repeat(32), MOODLE_PARENT_ROLE_ID: '9' }), { db: t.db });
    });
    after(async () => {
      if (skip) return;
      await services.close();
      await connected.close();
      await t.destroy();
    });

    it('the status page of an approved request does not promise "within a few hours"', { skip }, async () => {
      const { request: r } = await approvedRequest(services.lifecycle);
      const res = await new StaffSession(createApp(services)).open(`/request/status/${r.publicId}`);
      const text = htmlText(res.text);
      assert.doesNotMatch(text, /within a few hours/);
      assert.doesNotMatch(text, /is being set up/);
      assert.match(text, /Your Moodle account cannot be set up yet, because the school is still connecting this service to Moodle/);
      assert.match(text, /We will email you when it is ready/);
      // Once Moodle is connected, the usual words come back.
      const withMoodle = htmlText((await new StaffSession(createApp(connected)).open(`/request/status/${r.publicId}`)).text);
      assert.match(withMoodle, /this usually happens within a few hours/);
    });

    it('the cycle report says "Moodle is not configured", not "no approved requests to work on"', { skip }, async () => {
      await approvedRequest(services.lifecycle);
      const summary = await services.cycle.run('cli', 'tester');
      assert.equal(summary.state, 'failed');
      assert.deepEqual(summary.moodleCheck, { ok: false, problem: 'not_configured' });
      const app = createApp(services);
      const staff = await StaffSession.signIn(app, await createStaffUser(services));
      const text = htmlText((await staff.open(`/admin/cycles/${summary.cycleId}`)).text);
      assert.match(text, /Moodle is not configured, so this cycle worked on no request/);
      assert.doesNotMatch(text, /no approved requests to work on/);
    });
  });
}
