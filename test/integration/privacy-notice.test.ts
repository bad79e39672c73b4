// The privacy notice the form's checkbox refers to, against real databases: with no
// PRIVACY_NOTICE_URL the service serves its own short notice at /privacy (figures from the
// configuration) and the form links to it, and `doctor` and the diagnostics page warn; with the
// school's own notice set, the form links there, /privacy leads there and nothing warns.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { createApp } from '../../src/app';
import { runCli } from '../../src/cli';
import { parseConfig } from '../../src/config';
import { createServices, type Services } from '../../src/services';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { htmlText } from '../support/http';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'privacy-notice-secret-privacy-notice-secret-0123';
const SCHOOL_URL = 'https://www.hillside-school.example/privacy-notice';
const textOf = (html: string) => htmlText(html.replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ');

/** The address of the link the form's privacy paragraph gives. */
function privacyLinkOf(html: string): string | undefined {
  const privacy = /<h2>Privacy<\/h2>([\s\S]*?)<\/div>\s*<\/div>/.exec(html)?.[1] ?? '';
  return /<a href="([^"]+)"[^>]*>Read the privacy notice/.exec(privacy)?.[1];
}

for (const dialect of DIALECTS) {
  describe(`privacy notice on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    const opened: Services[] = [];

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
    });
    after(async () => {
      if (skip) return;
      for (const s of opened) await s.close();
      await t.destroy();
    });

    function build(env: Record<string, string>): Services {
      const config = parseConfig({
        NODE_ENV: 'test',
        AUTH_TABLE: TEST_AUTH_TABLE,
        SESSION_SECRET: SECRET,
        LOG_LEVEL: 'silent',
        CYCLE_SCHEDULE: 'off',
        SCHOOL_NAME: 'Hillside Academy',
        RETENTION_DAYS: '120',
        SUBMITTER_DETAILS_DAYS: '21',
        ...env,
      });
      const services = createServices(config, { db: t.db, moodle: null });
      opened.push(services);
      return services;
    }

    it('without PRIVACY_NOTICE_URL the service serves its own notice, with the school and the figures in force, and the form links to it', { skip }, async () => {
      const app = createApp(build({}));
      const form = await request(app).get('/request');
      assert.equal(form.status, 200);
      assert.equal(privacyLinkOf(form.text), '/privacy', 'the form links to the service’s own notice');

      const notice = await request(app).get('/privacy');
      assert.equal(notice.status, 200);
      const text = textOf(notice.text);
      assert.match(text, /Privacy notice: Moodle parent accounts/);
      assert.match(text, /Hillside Academy runs this service/);
      for (const heading of ['What we keep', 'Why', 'Who sees it', 'How long we keep it', 'Asking for your details to be erased']) {
        assert.match(notice.text, new RegExp(`<h2 id="[a-z-]+">${heading}</h2>`), heading);
      }
      assert.match(text, /The internet address and web browser: 21 days after you send the form, then they are erased\./);
      assert.match(text, /not genuine: 120 days after that decision/);
      assert.match(text, /Only the service’s administrators at the school see the internet address and web browser/);
      assert.match(text, /Contact the Hillside Academy office/);
    });

    it('with PRIVACY_NOTICE_URL the form links to the school’s notice and /privacy leads there', { skip }, async () => {
      const app = createApp(build({ PRIVACY_NOTICE_URL: SCHOOL_URL }));
      const form = await request(app).get('/request');
      assert.equal(privacyLinkOf(form.text), SCHOOL_URL);
      const notice = await request(app).get('/privacy');
      assert.equal(notice.status, 302);
      assert.equal(notice.headers.location, SCHOOL_URL);
    });

    it('doctor warns, without failing, while the school’s own notice is not set', { skip }, async () => {
      const unset = build({});
      const check = (await unset.doctor(false)).find((c) => c.id === 'privacy-notice');
      assert.ok(check, 'doctor has a privacy notice check');
      assert.equal(check.ok, true, 'a warning, not a failure');
      assert.equal(check.warning, true);
      const out: string[] = [];
      await runCli(['doctor'], { out: (s) => out.push(s), err: (s) => out.push(s) }, { services: unset });
      const printed = out.join('\n');
      assert.match(printed, /^! Privacy notice \(PRIVACY_NOTICE_URL\): The school's own privacy notice is not set: the request form links to this service's short notice at \/privacy instead\.$/m);
      assert.match(printed, /^ {4}What to do: Set PRIVACY_NOTICE_URL to the address of the school's privacy notice/m);
      assert.match(printed, /1 warning\(s\) to look at/);

      const set = build({ PRIVACY_NOTICE_URL: SCHOOL_URL });
      const fine = (await set.doctor(false)).find((c) => c.id === 'privacy-notice');
      assert.deepEqual({ ok: fine?.ok, warning: fine?.warning ?? false }, { ok: true, warning: false });
      assert.match(fine?.message ?? '', /links to the school's privacy notice at https:\/\/www\.hillside-school\.example\/privacy-notice/);
    });

    it('the diagnostics page shows the warning, and no warning once the notice is set', { skip }, async () => {
      const unset = build({});
      const username = await createStaffUser(unset, { role: 'staff' });
      const page = await (await StaffSession.signIn(createApp(unset), username)).open('/admin/diagnostics');
      assert.match(page.text, /<li class="check check-warning" id="check-privacy-notice">/);
      assert.match(page.text, /<span class="tag check-warning">Warning<\/span> Privacy notice \(PRIVACY_NOTICE_URL\)/);
      assert.match(textOf(page.text), /What to do: Set PRIVACY_NOTICE_URL/);
      assert.match(textOf(page.text), /1 warning to look at below\./);
      assert.match(textOf(page.text), /PRIVACY_NOTICE_URL \(not set: the form links to this service’s own short notice at \/privacy\)/);

      const set = build({ PRIVACY_NOTICE_URL: SCHOOL_URL });
      const fine = await (await StaffSession.signIn(createApp(set), username)).open('/admin/diagnostics');
      assert.match(fine.text, /<span class="tag check-ok">Working<\/span> Privacy notice \(PRIVACY_NOTICE_URL\)/);
      assert.doesNotMatch(fine.text, /check-warning/);
    });
  });
}
