// The staff request list in headless Chromium, by keyboard and mouse, at desktop and phone
// width: Enter never runs a bulk action, "select all on this page" works with and without
// JavaScript, and bulk deny asks for a confirmation page (requests and reason) before anything
// is changed or mailed. axe-core checks the list and the confirmation page at both widths. A
// search matching more than 1,000 requests says so in words and still pages, with and without
// JavaScript.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContextOptions, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, launchBrowser, PHONE, startTestSite, withBrowserPage, type BrowserSession, type TestSite } from '../support/browser';
import { insertApprovedRequests, submission } from '../support/builders';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

const AXE_PATH = path.resolve(__dirname, '..', '..', 'node_modules', 'axe-core', 'axe.min.js');
/** A form sent back with a problem answers 400, which Chromium logs. */
const EXPECTED_CONSOLE = [/status of 400/];
/** axe-core is injected as an inline script, which the site's Content-Security-Policy rightly refuses. */
const withAxe = (context: BrowserContextOptions): BrowserContextOptions => ({ ...context, bypassCSP: true });

interface AxeViolation {
  id: string;
  help: string;
  nodes: string[];
}

async function axeViolations(page: Page): Promise<AxeViolation[]> {
  await page.addScriptTag({ path: AXE_PATH });
  // Written as page source: the test project has no DOM types.
  return page.evaluate(`axe.run().then((result) => result.violations.map((v) => ({ id: v.id, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) })))`);
}

async function assertAccessible(page: Page, what: string): Promise<void> {
  const violations = await axeViolations(page);
  assert.deepEqual(violations, [], `axe-core finds no violation on ${what}`);
}

describe('the staff request list, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let staffUsername: string;
  let sequence = 0;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    moodle = await startMoodleDouble({ state: seedRecordedSite() });
    site = await startTestSite({
      env: { MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws },
      services: { moodle: undefined },
    });
    staffUsername = await createStaffUser(site.services, { displayName: 'Jo Office' });
  });
  after(async () => {
    await site?.close();
    await moodle?.close();
    await browser?.close();
  });

  /** Pending requests under one new last name; each child matches exactly one Moodle pupil, so a bulk approve would approve them. */
  async function pendingRequests(count: number): Promise<{ tag: string; ids: number[]; emails: string[] }> {
    sequence += 1;
    const tag = `Listtest${'ABCDEFGHIJKLMNOP'[sequence]}`;
    const ids: number[] = [];
    const emails: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const input = submission({ parentLastName: tag, children: [{ firstName: 'Ann', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM1001' }] });
      const { request } = await site.services.lifecycle.submitRequest(input, { type: 'parent' });
      ids.push(request.id);
      emails.push(input.email);
    }
    return { tag, ids, emails };
  }

  async function statuses(ids: number[]): Promise<string[]> {
    const rows = (await site.database.db('requests').whereIn('id', ids).orderBy('id').select('status')) as Array<{ status: string }>;
    return rows.map((r) => r.status);
  }

  /** Denial emails queued (or sent) for these requests. */
  async function denialMail(ids: number[]): Promise<number> {
    return (await site.database.db('mail_outbox').whereIn('request_id', ids).where({ kind: 'denied' })).length;
  }

  async function staffSignsIn(page: Page) {
    await page.goto(`${site.url}/admin`);
    await page.getByLabel('Username').fill(staffUsername);
    await page.getByLabel('Password').fill(STAFF_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as Jo Office').waitFor();
  }

  const checkbox = (page: Page, id: number) => page.locator(`#select-${id}`);

  async function pressEnterAndWait(page: Page) {
    await Promise.all([page.waitForEvent('load'), page.keyboard.press('Enter')]);
  }

  it('Enter in the search box or on a ticked checkbox never approves anything', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: DESKTOP, allowConsoleErrors: EXPECTED_CONSOLE }, async (session: BrowserSession) => {
      const { page } = session;
      const { tag, ids } = await pendingRequests(2);
      await staffSignsIn(page);
      await page.goto(`${site.url}/admin/requests?status=pending&q=${tag}`);
      const [first] = ids as [number];

      await checkbox(page, first).check();
      await page.getByRole('searchbox', { name: /Search/ }).focus();
      await pressEnterAndWait(page);
      assert.deepEqual(await statuses(ids), ['pending', 'pending'], 'Enter in the search box approves nothing');
      await page.getByRole('heading', { level: 1, name: 'Requests' }).waitFor();

      await checkbox(page, first).check();
      await checkbox(page, first).focus();
      await session.screenshot('a row ticked, focus on its checkbox');
      await pressEnterAndWait(page);
      await session.screenshot('after Enter on the checkbox');
      assert.deepEqual(await statuses(ids), ['pending', 'pending'], 'Enter on a ticked checkbox approves nothing');
      assert.equal((await site.database.db('audit_events').whereIn('request_id', ids).where({ action: 'approved' })).length, 0);
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'Requests', 'still on the list');
      assert.equal(await checkbox(page, first).isChecked(), true, 'the selection is kept');
      assert.match(await page.getByRole('status').first().innerText(), /Nothing was changed/);
    });
  });

  for (const [label, javaScriptEnabled] of [
    ['with JavaScript', true],
    ['without JavaScript', false],
  ] as const) {
    it(`"Select all on this page" ticks every row on the page, ${label}`, { skip }, async (t) => {
      await withBrowserPage(browser, t, __filename, { context: { ...PHONE, javaScriptEnabled }, allowConsoleErrors: EXPECTED_CONSOLE }, async (session) => {
        const { page } = session;
        const { tag, ids } = await pendingRequests(3);
        await staffSignsIn(page);
        await page.goto(`${site.url}/admin/requests?status=pending&q=${tag}`);
        for (const id of ids) assert.equal(await checkbox(page, id).isChecked(), false);
        await page.getByRole('button', { name: 'Select all on this page' }).click();
        await page.locator(`#select-${ids[2]}:checked`).waitFor();
        await session.screenshot('all selected');
        for (const id of ids) assert.equal(await checkbox(page, id).isChecked(), true, `request ${id} is ticked`);
        assert.deepEqual(await statuses(ids), ['pending', 'pending', 'pending'], 'selecting changes nothing');

        await page.getByRole('button', { name: 'Clear the selection' }).click();
        await page.locator(`#select-${ids[2]}:not(:checked)`).waitFor();
        for (const id of ids) assert.equal(await checkbox(page, id).isChecked(), false, `request ${id} is no longer ticked`);
      });
    });
  }

  it('a search matching more than 1,000 requests says so on its tabs and above the list, pages on without JavaScript, and passes axe-core', { skip }, async (t) => {
    const made = [
      ...(await insertApprovedRequests(site.database.db, 1000, { emailPrefix: 'toobroad', childrenEach: 1 })),
      ...(await insertApprovedRequests(site.database.db, 1, { emailPrefix: 'toobroadly', childrenEach: 1 })),
    ].map((r) => r.id);
    // Written at the same moment: newest first is the highest id first.
    const newestFirst = [...made].sort((a, b) => b - a);
    const firstOnPage = async (page: Page) => Number((await page.locator('#requests-table tbody th a').first().innerText()).replace('Request ', ''));
    for (const [label, context] of [
      ['with JavaScript at 1280 px', withAxe(DESKTOP)],
      ['with JavaScript at 390 px', withAxe(PHONE)],
      ['without JavaScript', { ...DESKTOP, javaScriptEnabled: false }],
    ] as const) {
      await withBrowserPage(browser, t, __filename, { context, allowConsoleErrors: EXPECTED_CONSOLE }, async (session) => {
        const { page } = session;
        await staffSignsIn(page);
        await page.goto(`${site.url}/admin/requests?status=approved`);
        await page.getByRole('searchbox', { name: /^Search/ }).fill('toobroad');
        await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Show' }).click()]);
        const tabs = page.getByRole('navigation', { name: 'Requests by status' });
        await tabs.getByRole('link', { name: 'All (more than 1,000)' }).waitFor();
        await tabs.getByRole('link', { name: 'Approved', exact: true }).waitFor();
        assert.match(await page.locator('main').innerText(), /More than 1,000 requests match “toobroad”, too many to count in each tab\. Add a word to narrow the search/);
        assert.match(await page.locator('#requests-table caption').innerText(), /^Approved: requests matching “toobroad”, newest first\./);
        assert.equal(await firstOnPage(page), newestFirst[0]);
        await session.screenshot(`a search too broad to count, ${label}`);
        if (context.javaScriptEnabled !== false) await assertAccessible(page, `a search too broad to count, ${label}`);
        await Promise.all([page.waitForNavigation(), page.getByRole('link', { name: 'Next page' }).click()]);
        assert.equal(await firstOnPage(page), newestFirst[50], 'the next page starts after the first');
      });
    }
  });

  for (const [width, context] of [
    ['1280 px', DESKTOP],
    ['390 px', PHONE],
  ] as const) {
    it(`at ${width}, bulk deny shows the requests and the reason for confirmation; cancel changes nothing, confirm denies and emails`, { skip }, async (t) => {
      await withBrowserPage(browser, t, __filename, { context: withAxe(context), allowConsoleErrors: EXPECTED_CONSOLE }, async (session) => {
        const { page } = session;
        const { tag, ids, emails } = await pendingRequests(3);
        const [a, b, untouched] = ids as [number, number, number];
        const reason = 'We could not find your children in our records.';
        await staffSignsIn(page);
        await page.goto(`${site.url}/admin/requests?status=pending&q=${tag}`);
        await assertAccessible(page, `the request list at ${width}`);

        await checkbox(page, a).check();
        await checkbox(page, b).check();
        await page.getByLabel(/^Reason for denying/).fill(reason);
        await session.screenshot('two rows ticked and a reason');
        await page.getByRole('button', { name: 'Deny', exact: true }).click();
        await page.getByRole('heading', { level: 1, name: /Deny these 2 requests\?/ }).waitFor();
        await session.screenshot('confirm bulk deny');
        const main = await page.locator('main').innerText();
        assert.match(main, /Nothing has been changed yet/);
        assert.ok(main.includes(reason), 'the confirmation page shows the reason');
        for (const id of [a, b]) assert.match(main, new RegExp(`Request ${id}\\b`), `request ${id} is listed`);
        assert.doesNotMatch(main, new RegExp(`Request ${untouched}\\b`), 'an unticked request is not listed');
        assert.deepEqual(await statuses(ids), ['pending', 'pending', 'pending'], 'nothing is denied before confirming');
        assert.equal(await denialMail(ids), 0, 'no mail is queued before confirming');
        await assertAccessible(page, `the bulk deny confirmation page at ${width}`);

        await page.getByRole('button', { name: /Cancel/ }).click();
        await page.getByRole('heading', { level: 1, name: 'Requests' }).waitFor();
        await session.screenshot('cancelled: back to the list');
        assert.deepEqual(await statuses(ids), ['pending', 'pending', 'pending'], 'cancel changes nothing');
        assert.equal(await denialMail(ids), 0, 'cancel mails nobody');
        assert.equal(await checkbox(page, a).isChecked(), true, 'the selection is kept after cancelling');
        assert.equal(await checkbox(page, untouched).isChecked(), false);
        assert.equal(await page.getByLabel(/^Reason for denying/).inputValue(), reason, 'the reason is kept after cancelling');

        await page.getByRole('button', { name: 'Deny', exact: true }).click();
        await page.getByRole('heading', { level: 1, name: /Deny these 2 requests\?/ }).waitFor();
        await page.getByRole('button', { name: /^Deny 2 requests/ }).click();
        await page.getByRole('heading', { level: 1, name: /what happened/ }).waitFor();
        await session.screenshot('bulk deny done');
        assert.match(await page.locator('main').innerText(), /2 requests denied/);
        assert.deepEqual(await statuses(ids), ['denied', 'denied', 'pending']);
        assert.equal(await denialMail(ids), 2, 'each denied parent is told');
        const mail = await site.mailTo(emails[0] as string, /: Your Moodle parent account request$/);
        assert.ok(mail.text.includes(reason), 'the parent is emailed the reason');
      });
    });
  }
});
