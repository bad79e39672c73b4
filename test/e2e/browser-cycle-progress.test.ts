// A running provisioning cycle's page in Chromium: it passes axe-core (no page that reloads
// itself on a timer, WCAG 2.2.1), its progress box is kept up to date by polling the progress
// address, and once the cycle has finished the report takes its place. Without JavaScript the box
// offers a refresh link instead.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, CHECKED_WIDTHS, expectNoAxeViolations, launchBrowser, withBrowserPage, type TestSite } from '../support/browser';
import { waitFor } from '../support/cycle-process';
import { TEST_AUTH_TABLE } from '../support/databases';
import type { MoodleDouble } from '../support/moodle-double';
import { startSiteWithMoodle } from '../support/site-pages';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

describe('a running provisioning cycle, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let username: string;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    ({ site, moodle } = await startSiteWithMoodle());
    username = await createStaffUser(site.services, { displayName: 'Jo Office' });
  });
  after(async () => {
    await site?.close();
    await moodle?.close();
    await browser?.close();
  });

  /** An approved request whose parent Moodle already has, so the cycle has a role to assign. */
  async function approvedRequestReadyToLink(email: string) {
    const { lifecycle } = site.services;
    const submitted = await lifecycle.submitRequest(
      {
        requestType: 'new_account',
        parentTitle: 'Mrs',
        parentFirstName: 'Rita',
        parentLastName: 'Running',
        email,
        comment: null,
        children: [{ firstName: 'Alice', lastName: 'Pupil', tutorGroup: '7B', pupilIdentifier: 'ADM1001' }],
        source: 'form',
        requireVerification: false,
      },
      { type: 'parent' },
    );
    await lifecycle.approveRequest(
      submitted.request.id,
      { expectedVersion: submitted.request.version, children: submitted.children.map((c) => ({ childId: c.id, moodleUserId: 3 })) },
      { type: 'staff', id: username },
    );
    await moodle.sync(site.database.db, TEST_AUTH_TABLE);
  }

  async function signIn(page: Page) {
    await page.goto(`${site.url}/admin/sign-in`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(STAFF_PASSWORD);
    await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in' }).click()]);
  }

  /** Starts a cycle with "Run provisioning now" and holds it at its role assignments; resolves on its page. */
  async function runCycleHeldAtAssignments(page: Page): Promise<{ release(): void }> {
    const held = moodle.holdCalls('core_role_assign_roles');
    await page.goto(`${site.url}/admin/provisioning`);
    await Promise.all([page.waitForURL(/\/admin\/cycles\/\d+$/), page.getByRole('button', { name: 'Run provisioning now' }).click()]);
    await held.reached;
    await page.locator('.cycle-progress').waitFor();
    return held;
  }

  for (const width of CHECKED_WIDTHS) {
    it(`the page of a running cycle passes axe-core, updates its progress box and then shows the report (${width.name})`, { skip }, async (t) => {
      await approvedRequestReadyToLink(`rita.${width.name}@example.org`);
      await withBrowserPage(browser, t, __filename, { context: width.context }, async (session) => {
        const { page } = session;
        await signIn(page);
        const held = await runCycleHeldAtAssignments(page);
        try {
          assert.equal(await page.locator('meta[http-equiv="refresh"]').count(), 0, 'the page does not reload itself on a timer');
          await page.getByText('This box updates itself every few seconds.').waitFor();
          assert.equal(await page.getByRole('link', { name: 'Refresh this page' }).isVisible(), false, 'with JavaScript the refresh link is not needed');
          await expectNoAxeViolations(page, 'a running cycle');
          await session.screenshot('a running cycle', { checkAccessibility: false });
          // The box asks for the progress: seen as a request to the progress address.
          const polled = await page.waitForResponse((r) => /\/admin\/cycles\/\d+\/progress$/.test(r.url()), { timeout: 15_000 });
          assert.equal(polled.status(), 200);
          assert.equal(((await polled.json()) as { running: boolean }).running, true);
        } finally {
          held.release();
        }
        // Once the cycle has finished, the report replaces the progress box without anyone reloading.
        await page.locator('.cycle-progress').waitFor({ state: 'detached', timeout: 20_000 });
        await page.getByRole('heading', { name: /Provisioning cycle \d+/ }).waitFor();
        await session.screenshot('the finished cycle');
      });
    });
  }

  it('without JavaScript, the running cycle offers a refresh link and does not reload itself', { skip }, async (t) => {
    await approvedRequestReadyToLink('rita.nojs@example.org');
    await withBrowserPage(browser, t, __filename, { context: { ...CHECKED_WIDTHS[0].context, javaScriptEnabled: false } }, async (session) => {
      const { page } = session;
      await signIn(page);
      const held = await runCycleHeldAtAssignments(page);
      try {
        assert.equal(await page.locator('meta[http-equiv="refresh"]').count(), 0);
        assert.equal(await page.getByRole('link', { name: 'Refresh this page' }).isVisible(), true);
        await session.screenshot('a running cycle without JavaScript');
      } finally {
        held.release();
      }
      await waitFor('the cycle to finish', async () => (await site.database.db('provisioning_cycles').where({ state: 'running' }).first()) === undefined);
    });
  });
});
