// Whole journeys across parent and staff in headless Chromium, against the Moodle test double:
// a parent asks on a phone and confirms from the real email; staff sign in, match the children,
// approve and run provisioning; the parent's status page then says the account is ready. Also
// the deny journey and the revoke journey. Screenshots of every step go to test-artifacts/.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, expectNoAxeViolations, launchBrowser, PHONE, startTestSite, withBrowserPage, type BrowserSession, type TestSite } from '../support/browser';
import { TEST_AUTH_TABLE } from '../support/databases';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

const PARENT_ROLE_ID = 9;
/** Chromium logs the 404 of a confirmation link used a second time, and a form sent back with a 400. */
const EXPECTED_CONSOLE = [/status of 404/, /status of 400/];

let sequence = 0;

describe('parent and staff journeys, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let staffUsername: string;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    moodle = await startMoodleDouble({ state: seedRecordedSite() });
    site = await startTestSite({
      env: { MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_PARENT_ROLE_ID: String(PARENT_ROLE_ID) },
      services: { moodle: undefined },
    });
    staffUsername = await createStaffUser(site.services, { displayName: 'Jo Office' });
  });
  after(async () => {
    await site?.close();
    await moodle?.close();
    await browser?.close();
  });

  /** A parent asks on a phone and confirms from the email; returns the status page's address. */
  async function parentAsks(session: BrowserSession, child: { firstName: string; lastName: string; tutorGroup: string; pupilIdentifier: string }) {
    sequence += 1;
    const email = `journey${sequence}.${process.pid}@example.org`;
    const { page } = session;
    await page.goto(`${site.url}/request`);
    const aboutYou = page.getByRole('group', { name: 'About you' });
    await aboutYou.getByLabel('First name').fill('Robin');
    await aboutYou.getByLabel('Last name').fill(`Parent ${'ABCDEFGHIJ'[sequence % 10]}`);
    await aboutYou.getByLabel('Email address', { exact: true }).fill(email);
    await aboutYou.getByLabel('Email address again').fill(email);
    await page.getByRole('radio', { name: 'I do not have a parent account yet' }).check();
    const block = page.getByRole('group', { name: 'Child 1' });
    await block.getByLabel('First name').fill(child.firstName);
    await block.getByLabel('Last name').fill(child.lastName);
    await block.getByLabel('Tutor group or class').fill(child.tutorGroup);
    await block.getByLabel('Pupil number (optional)').fill(child.pupilIdentifier);
    await page.getByRole('checkbox', { name: 'I have read the privacy notice' }).check();
    await session.screenshot('parent fills the form');
    await page.getByRole('button', { name: 'Send request' }).tap();
    await page.getByRole('heading', { name: 'Thank you' }).waitFor();

    const mail = await site.mailTo(email, /confirm/i);
    const link = /(https?:\/\/\S+\/request\/verify\/[A-Za-z0-9_-]+)/.exec(mail.text)?.[1];
    assert.ok(link, 'the confirmation email has the link');
    await page.goto(link);
    await page.getByRole('button', { name: 'Confirm my email address' }).click();
    await page.getByRole('heading', { name: 'Thank you, your email address is confirmed' }).waitFor();
    await page.getByRole('link', { name: 'See how your request is going' }).click();
    await page.getByRole('heading', { name: 'Your request' }).waitFor();
    await session.screenshot('parent sees the request waiting');
    const row = (await site.database.db('requests').where({ email }).first()) as { id: number };
    return { email, statusUrl: page.url(), requestId: Number(row.id) };
  }

  async function staffSignsIn(page: Page, session: BrowserSession) {
    await page.goto(`${site.url}/admin`);
    await page.getByRole('heading', { name: 'Staff sign-in' }).waitFor();
    await expectNoAxeViolations(page, 'staff sign-in');
    await page.getByLabel('Username').fill(staffUsername);
    await page.getByLabel('Password').fill(STAFF_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as Jo Office').waitFor();
    await session.screenshot('staff signed in');
  }

  /** Moodle's own cron runs the auth_db sync; here the test plays that part. */
  async function moodleSyncs() {
    await moodle.sync(site.database.db, TEST_AUTH_TABLE);
  }

  async function runProvisioning(page: Page, session: BrowserSession) {
    await page.goto(`${site.url}/admin/provisioning`);
    await expectNoAxeViolations(page, 'provisioning');
    await page.getByRole('button', { name: 'Run provisioning now' }).click();
    await page.waitForURL(/\/admin\/cycles\/\d+$/);
    // The report refreshes itself while the cycle runs; wait for the finished report.
    await page.getByText(/Finished|Succeeded|succeeded/).first().waitFor({ timeout: 20_000 });
    // "Finished" is also the label of an empty field while it runs: wait until the progress box has gone.
    await page.locator('.cycle-progress').waitFor({ state: 'detached', timeout: 20_000 });
    await session.screenshot('cycle report');
  }

  it('approve: parent asks, staff match and approve, provisioning links the child, the parent sees the account is ready', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: PHONE, allowConsoleErrors: EXPECTED_CONSOLE }, async (parentSession) => {
      const asked = await parentAsks(parentSession, { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM1001' });

      await withBrowserPage(browser, t, `${__filename}-staff`, { context: DESKTOP, allowConsoleErrors: EXPECTED_CONSOLE }, async (staffSession) => {
        const { page } = staffSession;
        await staffSignsIn(page, staffSession);
        await page.goto(`${site.url}/admin/requests?status=pending`);
        await expectNoAxeViolations(page, 'requests waiting for review');
        await page.getByRole('link', { name: `Request ${asked.requestId}`, exact: true }).click();
        await page.getByRole('heading', { name: `Request ${asked.requestId}` }).waitFor();
        // The pupil identifier matches exactly one Moodle pupil: preselected.
        const match = page.getByRole('radio', { name: /Ann Pupil: tutor group 7B, pupil identifier ADM1001/ });
        assert.equal(await match.isChecked(), true, 'the exact match is preselected');
        await staffSession.screenshot('request page with the match');
        await page.getByRole('button', { name: 'Approve' }).click();
        await page.getByText(/approved/i).first().waitFor();
        await staffSession.screenshot('approved');

        await moodleSyncs();
        await runProvisioning(page, staffSession);
        const parent = moodle.state.userByUsername(asked.email);
        assert.ok(parent, 'Moodle created the parent from the auth table');
        assert.equal(moodle.state.hasUserContextRole(PARENT_ROLE_ID, parent.id, 3), true, 'the parent has the Parent role in Ann’s user context');
      });

      const { page } = parentSession;
      await page.goto(asked.statusUrl);
      assert.match(await page.locator('main').innerText(), /Your account is ready/);
      await parentSession.screenshot('parent sees the account is ready');
      const mail = await site.mailTo(asked.email, /ready/i);
      assert.match(mail.text, new RegExp(asked.email.replace(/\./g, '\\.')), 'the ready email gives the username');
    });
  });

  it('deny: staff deny with a reason; the parent is emailed it and the status page says not approved', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: PHONE, allowConsoleErrors: EXPECTED_CONSOLE }, async (parentSession) => {
      const asked = await parentAsks(parentSession, { firstName: 'Bob', lastName: 'Pupil', tutorGroup: '9C', pupilIdentifier: '' });
      await withBrowserPage(browser, t, `${__filename}-staff`, { context: DESKTOP, allowConsoleErrors: EXPECTED_CONSOLE }, async (staffSession) => {
        const { page } = staffSession;
        await staffSignsIn(page, staffSession);
        await page.goto(`${site.url}/admin/requests/${asked.requestId}`);
        await page.getByLabel(/^Reason\s*The parent is emailed this reason/).fill('We could not find this child in our records.');
        await staffSession.screenshot('deny with a reason');
        await page.getByRole('button', { name: 'Deny the request' }).click();
        await page.getByText(/denied|not approved/i).first().waitFor();
        await staffSession.screenshot('denied');
      });
      const mail = await site.mailTo(asked.email, /request/i);
      assert.match(mail.text, /We could not find this child in our records\./);
      const { page } = parentSession;
      await page.goto(asked.statusUrl);
      const text = await page.locator('main').innerText();
      assert.match(text, /Not approved/);
      await parentSession.screenshot('parent sees not approved');
      const auth = await site.database.db(TEST_AUTH_TABLE).where({ username: asked.email });
      assert.equal(auth.length, 0, 'a denied parent never reaches the auth table');
    });
  });

  it('revoke: staff remove a provisioned parent’s access; the next cycle unassigns the role and Moodle suspends the account', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: PHONE, allowConsoleErrors: EXPECTED_CONSOLE }, async (parentSession) => {
      const asked = await parentAsks(parentSession, { firstName: 'Ann', lastName: 'Pupil', tutorGroup: '10A', pupilIdentifier: 'ADM1003' });
      await withBrowserPage(browser, t, `${__filename}-staff`, { context: DESKTOP, allowConsoleErrors: EXPECTED_CONSOLE }, async (staffSession) => {
        const { page } = staffSession;
        await staffSignsIn(page, staffSession);
        await page.goto(`${site.url}/admin/requests/${asked.requestId}`);
        await page.getByRole('button', { name: 'Approve' }).click();
        await page.getByText(/approved/i).first().waitFor();
        await moodleSyncs();
        await runProvisioning(page, staffSession);
        const parent = moodle.state.userByUsername(asked.email);
        assert.ok(parent && moodle.state.hasUserContextRole(PARENT_ROLE_ID, parent.id, 9), 'linked to the pupil with id 9');

        await page.goto(`${site.url}/admin/requests/${asked.requestId}`);
        await page.getByRole('button', { name: 'Remove all access' }).click();
        await page.getByText(/removed|revoked/i).first().waitFor();
        await staffSession.screenshot('access removed');
        const auth = await site.database.db(TEST_AUTH_TABLE).where({ username: asked.email });
        assert.equal(auth.length, 0, 'the auth row is gone at once');

        await runProvisioning(page, staffSession);
        await moodleSyncs();
        assert.equal(moodle.state.hasUserContextRole(PARENT_ROLE_ID, parent.id, 9), false, 'the role is unassigned');
        assert.equal(moodle.state.userByUsername(asked.email)?.suspended, true, 'Moodle suspends the account at its next sync');
      });
      const { page } = parentSession;
      await page.goto(asked.statusUrl);
      assert.match(await page.locator('main').innerText(), /Access removed/);
      await parentSession.screenshot('parent sees access removed');
    });
  });
});
