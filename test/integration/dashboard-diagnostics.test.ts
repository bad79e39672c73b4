// The dashboard's diagnostics and "who can log in" pages against real databases, the Moodle test
// double and a real SMTP server: each check with its plain message for a good setup and for an
// invalid token, the sync command run on request, the configuration without a single secret, the
// staff list for administrators only, and each parent's Moodle state (missing, suspended, taken).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { createServices, type Services, type ServiceOptions } from '../../src/services';
import { insertApprovedRequests, submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { htmlText } from '../support/http';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { TestSmtpServer } from '../support/smtp-server';
import { createStaffUser, StaffSession } from '../support/staff';

const SESSION_SECRET = 'diagnostics-session-secret-Zq8Wm3Kd7Lp2Xv9Rt4';
const SMTP_PASSWORD = 'smtp-password-Hy7Gq2Nc5Vb8';
const DATABASE_PASSWORD = 'database-password-Jk4Ws9Pe1Tz6';
const SYNC_OK =
  "printf 'Execute scheduled task: Synchronise users task (auth_db\\\\task\\\\sync_users)\\nUser entries to add: 0\\nScheduled task complete: Synchronise users task (auth_db\\\\task\\\\sync_users)\\n'";
const CHECK_LABELS = [
  'Database',
  'Auth table',
  'Moodle address',
  'Moodle web services',
  'Moodle web service token',
  'Web service functions',
  'Parent role',
  'User sync command',
  'Mail',
];

/** The page's words without tags, as a reader sees them. */
const textOf = (html: string) => htmlText(html.replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ');

/** The rows of the accounts table, by username. */
function accountRows(html: string): Map<string, string> {
  const rows = new Map<string, string>();
  for (const match of html.matchAll(/<tr class="moodle-[a-z_]+">([\s\S]*?)<\/tr>/g)) {
    const text = textOf(match[0]);
    const username = /^\s*(\S+)/.exec(text)?.[1] ?? '';
    rows.set(username, match[0]);
  }
  return rows;
}

for (const dialect of DIALECTS) {
  describe(`dashboard diagnostics and who can log in on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let moodle: MoodleDouble;
    let smtp: TestSmtpServer;
    const opened: Services[] = [];
    let adminUsername: string;
    let staffUsername: string;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      smtp = await new TestSmtpServer({ auth: { user: 'mailer', pass: SMTP_PASSWORD } }).start();
      const services = build({});
      adminUsername = await createStaffUser(services, { role: 'admin', displayName: 'Alex Admin' });
      staffUsername = await createStaffUser(services, { role: 'staff', displayName: 'Sam Staff' });
    });
    after(async () => {
      if (skip) return;
      for (const s of opened) await s.close();
      await smtp.close();
      await moodle.close();
      await t.destroy();
    });

    /** Services and app for one configuration, all on this file's database. */
    function build(env: Record<string, string>, options: Omit<ServiceOptions, 'db'> = {}): Services {
      const config = parseConfig({
        NODE_ENV: 'test',
        AUTH_TABLE: TEST_AUTH_TABLE,
        SESSION_SECRET,
        MOODLE_URL: moodle.url,
        MOODLE_TOKEN: moodle.tokens.ws,
        MOODLE_PARENT_ROLE_ID: '9',
        MOODLE_RETRIES: '0',
        MOODLE_TIMEOUT_MS: '5000',
        SMTP_URL: `smtp://mailer:${SMTP_PASSWORD}@${new URL(smtp.url).host}`,
        CYCLE_SCHEDULE: 'off',
        ...env,
      });
      const services = createServices(config, { db: t.db, ...options });
      opened.push(services);
      return services;
    }
    const appWith = (env: Record<string, string> = {}, options: Omit<ServiceOptions, 'db'> = {}): Express => createApp(build(env, options));

    it('refuses the pages without a session, and running the sync without the CSRF token', { skip }, async () => {
      const marker = path.join(os.tmpdir(), `mpp-diagnostics-${process.pid}-${dialect}`);
      const app = appWith({ MOODLE_SYNC_COMMAND: `touch '${marker}'` });
      for (const path of ['/admin/diagnostics', '/admin/accounts']) {
        const res = await request(app).get(path);
        assert.equal(res.status, 303, path);
        assert.match(res.headers.location ?? '', /^\/admin\/sign-in/);
      }
      assert.equal((await request(app).post('/admin/diagnostics/run-sync').type('form').send('')).status, 403);
      const browser = await StaffSession.signIn(app, staffUsername);
      await browser.open('/admin/diagnostics');
      const refused = await browser.post('/admin/diagnostics/run-sync', {}, { csrf: false });
      assert.equal(refused.status, 403);
      assert.equal(fs.existsSync(marker), false, 'the sync command did not run');
    });

    it('a good setup: every check is shown working with its message, and the configuration without any secret', { skip }, async () => {
      const app = appWith({ MOODLE_SYNC_COMMAND: SYNC_OK, DATABASE_URL: `mysql://mpp_app:${DATABASE_PASSWORD}@db.school.internal:3306/mpp` });
      const browser = await StaffSession.signIn(app, adminUsername);
      const page = await browser.open('/admin/diagnostics');
      const text = textOf(page.text);
      assert.match(text, /Everything checked is working\./);
      for (const label of CHECK_LABELS) {
        assert.match(page.text, new RegExp(`<span class="tag check-ok">Working</span> ${label}`), `${label} is shown working`);
      }
      assert.match(text, /Reachable \(mysql:\/\/mpp_app:\*\*\*@db\.school\.internal:3306\/mpp\), all \d+ migrations applied/);
      assert.match(text, /Present, with 0 parent\(s\) allowed to log in/);
      assert.match(text, /accepted a connection and the login/);
      assert.match(text, /User sync command \(MOODLE_SYNC_COMMAND\) Set \(not run: the button below runs it\)/);
      assert.doesNotMatch(page.text, /check-problem/);

      // The configuration in force, masked.
      assert.match(text, /MOODLE_URL http:\/\/127\.0\.0\.1:\d+/);
      assert.match(text, /MOODLE_TOKEN \(set, hidden\)/);
      assert.match(text, /SESSION_SECRET \(set, hidden\)/);
      assert.match(text, /SMTP_URL smtp:\/\/mailer:\*\*\*@127\.0\.0\.1:\d+/);
      assert.match(text, /DATABASE_URL mysql:\/\/mpp_app:\*\*\*@db\.school\.internal/);

      const ran = await browser.post('/admin/diagnostics/run-sync');
      assert.equal(ran.status, 200);
      assert.match(textOf(ran.text), /User sync command \(MOODLE_SYNC_COMMAND\) Ran successfully/);
      assert.match(textOf(ran.text), /including the sync command/);
      assert.match(ran.text, /<pre class="command-output">Execute scheduled task: Synchronise users task/);

      for (const html of [page.text, ran.text]) {
        for (const [name, secret] of [
          ['the Moodle token', moodle.tokens.ws],
          ['the SMTP password', SMTP_PASSWORD],
          ['the session secret', SESSION_SECRET],
          ['the database password', DATABASE_PASSWORD],
        ] as const) {
          assert.equal(html.includes(secret), false, `the page shows ${name}`);
          assert.equal(html.includes(encodeURIComponent(secret)), false, `the page shows ${name} encoded`);
        }
      }
    });

    it('an invalid token: the token check names the problem and what to do, the later Moodle checks are not run', { skip }, async () => {
      const app = appWith({ MOODLE_TOKEN: moodle.tokens.invalid });
      const browser = await StaffSession.signIn(app, staffUsername);
      const page = await browser.open('/admin/diagnostics');
      const text = textOf(page.text);
      assert.match(text, /1 problem found\./);
      assert.match(page.text, /<span class="tag check-ok">Working<\/span> Moodle address/);
      assert.match(page.text, /<span class="tag check-problem">Problem<\/span> Moodle web service token/);
      assert.match(text, /Moodle did not accept the web service token \(MOODLE_TOKEN\): it is wrong, has expired or was deleted\./);
      assert.match(text, /What to do: Create a token .*Manage tokens/);
      assert.match(page.text, /<span class="tag check-skipped">Not checked<\/span> Web service functions/);
      assert.equal(page.text.includes(moodle.tokens.invalid), false, 'the token is never shown');
      assert.match(text, /No sync command is set/);
      assert.doesNotMatch(page.text, /action="\/admin\/diagnostics\/run-sync"/, 'no sync to run');
    });

    it('a failing sync command shows its output; the staff list is for administrators, without password hashes', { skip }, async () => {
      const app = appWith({ MOODLE_SYNC_COMMAND: "printf '%s\\n' \"Task 'auth_db_task_nope' not found\" '<b>not bold</b>'; exit 1" });
      const admin = await StaffSession.signIn(app, adminUsername);
      await admin.open('/admin/diagnostics');
      const ran = await admin.post('/admin/diagnostics/run-sync');
      assert.equal(ran.status, 200);
      assert.match(ran.text, /<span class="tag check-problem">Problem<\/span> User sync command/);
      assert.match(textOf(ran.text), /The sync command failed/);
      assert.match(ran.text, /<details open>/);
      assert.match(ran.text, /Task &#39;auth_db_task_nope&#39; not found\n&lt;b&gt;not bold&lt;\/b&gt;/, 'the output is shown, escaped');

      assert.match(ran.text, /<h2 id="staff">Staff accounts<\/h2>/);
      const staffTable = /<table class="data staff-accounts">[\s\S]*?<\/table>/.exec(ran.text)?.[0] ?? '';
      const staffText = textOf(staffTable);
      assert.match(staffText, new RegExp(`${adminUsername.replace(/\./g, '\\.')} Alex Admin Administrator Active \\d`));
      assert.match(staffText, new RegExp(`${staffUsername.replace(/\./g, '\\.')} Sam Staff Office staff Active`));
      assert.doesNotMatch(ran.text, /\$argon2/);

      const staff = await StaffSession.signIn(app, staffUsername);
      const plain = await staff.open('/admin/diagnostics');
      assert.doesNotMatch(plain.text, /Staff accounts/);
      assert.doesNotMatch(plain.text, new RegExp(adminUsername.replace(/\./g, '\\.')));
    });

    async function approve(services: Services, email: string) {
      const { request: submitted, children } = await services.lifecycle.submitRequest(
        submission({ email, children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: null }] }),
        { type: 'parent' },
      );
      const approved = await services.lifecycle.approveRequest(
        submitted.id,
        { expectedVersion: submitted.version, children: children.map((c) => ({ childId: c.id, moodleUserId: 3 })) },
        { type: 'staff', id: 'office' },
      );
      return approved.id;
    }

    it('who can log in: every parent in the auth table, with missing, suspended and taken Moodle accounts marked', { skip }, async () => {
      const services = build({});
      const app = createApp(services);
      moodle.state.addUser({ username: 'taken.parent@example.org', firstname: 'Tom', lastname: 'Teacher', auth: 'manual' });
      const ids = {
        active: await approve(services, 'active.parent@example.org'),
        suspended: await approve(services, 'suspended.parent@example.org'),
        deleted: await approve(services, 'deleted.parent@example.org'),
        taken: await approve(services, 'taken.parent@example.org'),
      };
      await moodle.sync(t.db, TEST_AUTH_TABLE);
      const cycle = await services.cycle.run('manual', 'office');
      assert.equal(cycle.counts.provisioned, 3, 'the three synced parents are provisioned');
      const waiting = await approve(services, 'waiting.parent@example.org');
      moodle.state.userByUsername('suspended.parent@example.org')!.suspended = true;
      moodle.state.deleteUser(moodle.state.userByUsername('deleted.parent@example.org')!.id);

      const browser = await StaffSession.signIn(app, staffUsername);
      const lookups = moodle.calls('core_user_get_users_by_field');
      const page = await browser.open('/admin/accounts');
      assert.equal(moodle.calls('core_user_get_users_by_field') - lookups, 1, 'the page is looked up in one batch');
      const rows = accountRows(page.text);
      assert.equal(rows.size, 5);
      const row = (username: string) => textOf(rows.get(username) ?? assert.fail(`no row for ${username}`));

      assert.match(row('active.parent@example.org'), /Request \d+ Account ready Can log in/);
      assert.match(rows.get('active.parent@example.org') ?? '', new RegExp(`href="/admin/requests/${ids.active}"`));
      assert.match(row('suspended.parent@example.org'), /Suspended in Moodle Suspended in Moodle, so this parent cannot log in/);
      assert.match(row('deleted.parent@example.org'), /Account ready No Moodle account Moodle has no account with this username: it was deleted or renamed in Moodle/);
      assert.match(row('waiting.parent@example.org'), /Approved, account being set up No Moodle account Not created in Moodle yet/);
      assert.match(rows.get('waiting.parent@example.org') ?? '', new RegExp(`href="/admin/requests/${waiting}"`));
      assert.match(row('taken.parent@example.org'), /Username taken in Moodle .*does not sign in through this service \(it uses “manual”\)/);
      assert.match(row('taken.parent@example.org'), /^ ?taken\.parent@example\.org Pat Parent\d+ Request \d+/);
      assert.match(textOf(page.text), /On this page: 1 can log in · 2 without a Moodle account · 1 suspended in Moodle · 1 with the username taken in Moodle ?\./);

      const found = await browser.open('/admin/accounts?q=SUSPENDED');
      assert.deepEqual([...accountRows(found.text).keys()], ['suspended.parent@example.org']);
      assert.equal(accountRows((await browser.open('/admin/accounts?q=%25')).text).size, 0, 'a % is looked for, not a wildcard');
      assert.equal(accountRows((await browser.open('/admin/accounts?q=nobody-at-all')).text).size, 0);
    });

    it('who can log in: the list still shows, with a plain notice, when Moodle is unreachable or not set up', { skip }, async () => {
      const app = appWith({});
      const browser = await StaffSession.signIn(app, staffUsername);
      moodle.setFaults({ webServicesEnabled: false });
      try {
        const page = await browser.open('/admin/accounts');
        const text = textOf(page.text);
        assert.match(text, /Moodle could not be asked about these accounts just now\. Web services are switched off in Moodle\./);
        assert.match(text, /What to do: Turn on .*Enable web services/);
        assert.equal(accountRows(page.text).size, 5);
        assert.match(textOf(accountRows(page.text).get('active.parent@example.org') ?? ''), /Not checked/);
      } finally {
        moodle.setFaults({ webServicesEnabled: true });
      }
      const unconfigured = createApp(build({}, { moodle: null }));
      const other = await StaffSession.signIn(unconfigured, staffUsername);
      const page = await other.open('/admin/accounts');
      assert.match(textOf(page.text), /Moodle is not set up in this service, so whether these parents have a working Moodle account is not shown/);
      assert.equal(accountRows(page.text).size, 5);
    });

    it('who can log in: pages of 50, each looked up in Moodle on its own', { skip }, async () => {
      await insertApprovedRequests(t.db, 60, { childrenEach: 1, emailPrefix: 'zz.bulk' });
      const app = appWith({});
      const browser = await StaffSession.signIn(app, staffUsername);
      const first = await browser.open('/admin/accounts');
      assert.equal(accountRows(first.text).size, 50);
      assert.match(first.text, /Page 1 of 2 \(65 parents\)/);
      const lastLookup = moodle.requests.filter((r) => r.wsfunction === 'core_user_get_users_by_field').at(-1)?.form ?? '';
      assert.match(lastLookup, /values%5B49%5D=/);
      assert.doesNotMatch(lastLookup, /values%5B50%5D=/, 'only the rows on the page are looked up');
      assert.match(first.text, /href="\/admin\/accounts\?page=2" rel="next"/);
      const second = await browser.open('/admin/accounts?page=2');
      assert.equal(accountRows(second.text).size, 15);
      assert.match(textOf(second.text), /On this page: 0 can log in · 15 without a Moodle account/);
      const filtered = await browser.open('/admin/accounts?q=zz.bulk&page=2');
      assert.equal(accountRows(filtered.text).size, 10);
      assert.match(filtered.text, /href="\/admin\/accounts\?q=zz\.bulk&amp;page=1" rel="prev"/);
    });
  });
}
