// Staff forms in Chromium, as the parent form: a form sent wrongly comes back from the server
// (no browser "Please fill out this field" bubble stops it), the error summary has the focus,
// its links put the cursor in the field, and each error state has no axe-core violations at
// desktop and phone width.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContextOptions, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, focused, launchBrowser, PHONE, startTestSite, withBrowserPage, type TestSite } from '../support/browser';
import { submission } from '../support/builders';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

/** Chromium logs every 400/401 answer as a console error; here they are the point. */
const EXPECTED_CONSOLE = [/status of 400/, /status of 401/];
const AXE_PATH = path.resolve(__dirname, '..', '..', 'node_modules', 'axe-core', 'axe.min.js');
// axe is injected as a script of the test's own: the page's CSP rightly refuses it otherwise.
const WIDTHS: [string, BrowserContextOptions][] = [
  ['desktop', { ...DESKTOP, bypassCSP: true }],
  ['phone', { ...PHONE, bypassCSP: true }],
];

/** axe-core's WCAG 2.x A and AA violations on the page, as readable lines. */
async function axeViolations(page: Page): Promise<string[]> {
  await page.addScriptTag({ path: AXE_PATH });
  return page.evaluate(`axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] } })
    .then((r) => r.violations.map((v) => v.id + ': ' + v.help + ' at ' + v.nodes.map((n) => n.target.join(' ')).join(', ')))`);
}

/** Checks the page is a form sent back by the server, its summary focused and announced. */
async function assertSentBack(page: Page, label: string, firstMessage: RegExp) {
  assert.match(await page.title(), /^Error: /, `${label}: the title starts with "Error: "`);
  const summary = page.locator('#error-summary');
  assert.equal(await summary.getAttribute('role'), 'alert', `${label}: the summary is announced without JavaScript`);
  assert.equal((await focused(page)).id, 'error-summary', `${label}: the error summary has the focus`);
  assert.match((await summary.locator('li a').first().textContent()) ?? '', firstMessage, label);
  assert.deepEqual(await axeViolations(page), [], `${label}: no axe-core violations`);
}

/** Clicks a submit button and waits for the server's answer page (a 400 or 401 here). */
async function submitAndWait(page: Page, button: ReturnType<Page['getByRole']>, expectedStatus: number) {
  const [response] = await Promise.all([page.waitForResponse((r) => r.request().method() !== 'GET' || r.url().includes('find=')), button.click()]);
  assert.equal(response.status(), expectedStatus, `the form went to the server, which answered ${expectedStatus}`);
  await page.waitForLoadState('load');
}

describe('staff forms sent back with their errors, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let site: TestSite;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    site = await startTestSite();
  });
  after(async () => {
    await site?.close();
    await browser?.close();
  });

  for (const [width, context] of WIDTHS) {
    it(`first-run setup with a wrong code (${width}): the summary has the focus, the passwords are empty, the rest is kept`, { skip }, async (t) => {
      await withBrowserPage(browser, t, __filename, { context, allowConsoleErrors: EXPECTED_CONSOLE }, async (session) => {
        const { page } = session;
        await page.goto(`${site.url}/admin/setup`);
        await page.getByLabel('Setup code').fill('ABCD-EFGH');
        await page.getByLabel('Username').fill('pat.admin');
        await page.getByLabel('Your name').fill('Pat Admin');
        await page.getByLabel('Password', { exact: true }).fill('a long enough password');
        await page.getByLabel('Password again').fill('a long enough password');
        await submitAndWait(page, page.getByRole('button', { name: 'Create the administrator account' }), 400);
        await session.screenshot('setup sent back');
        await assertSentBack(page, 'setup', /The setup code has 12 letters and digits/);
        assert.equal(await page.getByLabel('Username').inputValue(), 'pat.admin');
        assert.equal(await page.getByLabel('Password', { exact: true }).inputValue(), '');
        assert.equal(await page.getByLabel('Setup code').getAttribute('aria-invalid'), 'true');
        await page.locator('#error-summary li a').first().click();
        assert.equal((await focused(page)).id, 'setupCode', 'the summary’s link puts the cursor in the field');
      });
    });
  }

  for (const [width, context] of WIDTHS) {
    it(`an empty sign-in form goes to the server (${width}), which names both fields; the summary takes the focus`, { skip }, async (t) => {
      if ((await site.services.staffAccounts.needsSetup())) await createStaffUser(site.services, { username: 'first.admin', role: 'admin' });
      await withBrowserPage(browser, t, __filename, { context, allowConsoleErrors: EXPECTED_CONSOLE }, async (session) => {
        const { page } = session;
        await page.goto(`${site.url}/admin/sign-in`);
        // With "required" on the fields, Chromium would show its bubble and never send the form.
        await submitAndWait(page, page.getByRole('button', { name: 'Sign in' }), 400);
        await session.screenshot('empty sign-in sent back');
        await assertSentBack(page, 'sign-in', /^Enter your username\.$/);
        assert.equal(await page.getByLabel('Password').getAttribute('aria-invalid'), 'true');
        await page.locator('#error-summary li a', { hasText: 'Enter your password.' }).click();
        assert.equal((await focused(page)).id, 'password');

        await page.getByLabel('Username').fill('first.admin');
        await page.getByLabel('Password').fill('not the password');
        await submitAndWait(page, page.getByRole('button', { name: 'Sign in' }), 401);
        await assertSentBack(page, 'wrong password', /do not match an active staff account/);
        assert.equal(await page.getByLabel('Username').inputValue(), 'first.admin', 'the username is kept');
      });
    });
  }

  for (const [width, context] of WIDTHS) {
    it(`the request page, erasing, privacy and import forms sent back (${width}): summary focused, no axe violations`, { skip }, async (t) => {
      const username = await createStaffUser(site.services, { role: 'admin' });
      const { request: r } = await site.services.lifecycle.submitRequest(submission(), { type: 'parent' });
      await withBrowserPage(browser, t, __filename, { context, allowConsoleErrors: EXPECTED_CONSOLE }, async (session) => {
        const { page } = session;
        await page.goto(`${site.url}/admin/sign-in`);
        await page.getByLabel('Username').fill(username);
        await page.getByLabel('Password').fill(STAFF_PASSWORD);
        await Promise.all([page.waitForURL(/\/admin$/), page.getByRole('button', { name: 'Sign in' }).click()]);

        await page.goto(`${site.url}/admin/requests/${r.id}`);
        await submitAndWait(page, page.getByRole('button', { name: 'Deny the request' }), 400);
        await session.screenshot('deny without a reason');
        await assertSentBack(page, 'deny', /Give a reason for denying/);
        await page.locator('#error-summary li a').first().click();
        assert.equal((await focused(page)).id, 'deny-reason');

        await page.getByLabel('Duplicate of request number').fill('forty-two');
        await submitAndWait(page, page.getByRole('button', { name: 'Mark as duplicate' }), 400);
        await assertSentBack(page, 'duplicate', /must be a whole number/);
        assert.equal(await page.getByLabel('Duplicate of request number').inputValue(), 'forty-two');

        await submitAndWait(page, page.getByRole('button', { name: 'Add comment' }), 400);
        await assertSentBack(page, 'comment', /Write a comment/);

        await page.goto(`${site.url}/admin/requests/${r.id}/erase`);
        await submitAndWait(page, page.getByRole('button', { name: 'Erase personal data' }), 400);
        await session.screenshot('erase without ticking');
        await assertSentBack(page, 'erase', /tick the box/);

        await page.getByRole('navigation', { name: 'Dashboard' }).getByRole('link', { name: 'Privacy' }).click();
        await page.getByLabel('Moodle user id of the pupil').fill('Ann');
        await submitAndWait(page, page.getByRole('button', { name: 'Show the access history' }), 400);
        await session.screenshot('privacy lookup sent back');
        await assertSentBack(page, 'privacy', /whole number/);

        await page.goto(`${site.url}/admin/import`);
        await submitAndWait(page, page.getByRole('button', { name: 'Check the file' }), 400);
        await assertSentBack(page, 'import', /Choose a CSV file/);
      });
    });
  }
});
