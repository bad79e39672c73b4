// A request imported from the WordPress plugin with a child whose pupil must be picked, in
// Chromium at desktop and phone width: the overview's banner links to it, the request page says
// where it came from, and staff pick the pupil from the keyboard. axe-core checks every step.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, CHECKED_WIDTHS, fitsViewportWidth, launchBrowser, startTestSite, withBrowserPage, type TestSite } from '../support/browser';
import { importedRequestInput } from '../support/builders';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

describe('a request imported from the WordPress plugin, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let staffUsername: string;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    const state = seedRecordedSite();
    state.addUser({ id: 31, username: 'cara.s1', firstname: 'Cara', lastname: 'Smith', department: '8A', idnumber: 'ADM3101' });
    state.addUser({ id: 32, username: 'cara.s2', firstname: 'Cara', lastname: 'Smith', department: '8A', idnumber: 'ADM3102' });
    moodle = await startMoodleDouble({ state });
    site = await startTestSite({ env: { MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_PARENT_ROLE_ID: '9' }, services: { moodle: undefined } });
    staffUsername = await createStaffUser(site.services, { displayName: 'Jo Office' });
  });
  after(async () => {
    await site?.close();
    await moodle?.close();
    await browser?.close();
  });

  async function importedRequest(wpRequestId: number, username: string): Promise<number> {
    const [result] = await site.services.lifecycle.importExistingRequests(
      [importedRequestInput({ wpRequestId, parentLastName: `One${wpRequestId}`, authRow: { username, firstname: 'Pat', lastname: `One${wpRequestId}`, email: `${username}@example.org` }, children: importedRequestInput().children.slice(1) })],
      { type: 'cli', id: 'it' },
    );
    return result?.requestId as number;
  }

  async function signIn(page: Page) {
    await page.goto(`${site.url}/admin/sign-in`);
    await page.getByLabel('Username').fill(staffUsername);
    await page.getByLabel('Password').fill(STAFF_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as Jo Office').waitFor();
  }

  CHECKED_WIDTHS.forEach(({ name, context }, index) => {
    it(`the banner leads to the request, whose pupil is picked from the keyboard (${name})`, { skip }, async (t) => {
      const id = await importedRequest(100 + index, `parent.import${index}`);
      await withBrowserPage(browser, t, __filename, { context }, async (session) => {
        const { page } = session;
        await signIn(page);
        await page.goto(`${site.url}/admin`);
        const banner = page.locator('#imported-need-pupil');
        assert.match((await banner.textContent()) ?? '', /imported from the WordPress plugin needs? a pupil picked/);
        assert.ok(await fitsViewportWidth(page), 'the overview fits the screen');
        await session.screenshot('overview with the banner');

        await banner.getByRole('link', { name: new RegExp(`Request ${id}`) }).click();
        await page.waitForLoadState('load');
        assert.match((await page.locator('dl.details').first().textContent()) ?? '', /Imported from the WordPress plugin \(the plugin’s request \d+\)/);
        assert.ok(await fitsViewportWidth(page), 'the request page fits the screen');
        await session.screenshot('imported request with a pupil to pick');

        await page.getByLabel(/username cara\.s2/).focus();
        await page.keyboard.press('Space');
        await page.getByRole('button', { name: /Pick this pupil/ }).focus();
        await page.keyboard.press('Enter');
        await page.waitForLoadState('load');
        await page.getByText('The pupil was picked.').waitFor();
        await session.screenshot('pupil picked');
        const { request, children } = await site.services.lifecycle.get(id);
        assert.equal(request.status, 'approved');
        assert.deepEqual(children.map((c) => [c.linkState, c.moodleUserId]), [['matched', 32]]);
      });
    });
  });
});
