// The privacy notice in headless Chromium, at desktop (1280 px) and phone (390 px) width, with no
// PRIVACY_NOTICE_URL set: the form's privacy link opens the service's own notice in a new tab,
// the notice fits the screen and axe-core finds no accessibility violation on it; the
// diagnostics page's warning that the school's own notice is not set passes axe-core too.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, fitsViewportWidth, launchBrowser, PHONE, startTestSite, withBrowserPage, type TestSite } from '../support/browser';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

const AXE_PATH = require.resolve('axe-core/axe.min.js');

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: unknown[] }>;
}

/** axe-core's violations on the page as it is now (or within one element), described for a failure message. */
async function axeViolations(page: Page, within?: string): Promise<string[]> {
  await page.addScriptTag({ path: AXE_PATH });
  // Written as page source: the test project has no DOM types.
  const violations = (await page.evaluate(`axe.run(${within ? JSON.stringify(within) : 'document'}).then((r) => r.violations)`)) as AxeViolation[];
  return violations.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => JSON.stringify(n.target)).join(', ')}`);
}

// The pages allow no inline script; axe-core is injected as one, for the test only.
const WIDTHS = [
  { name: 'desktop', context: { ...DESKTOP, bypassCSP: true } },
  { name: 'phone', context: { ...PHONE, bypassCSP: true } },
];

describe('the privacy notice, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let site: TestSite;
  let adminUsername: string;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    site = await startTestSite({ env: { RETENTION_DAYS: '60', SUBMITTER_DETAILS_DAYS: '14' } });
    adminUsername = await createStaffUser(site.services, { role: 'admin', displayName: 'Ada Admin' });
  });
  after(async () => {
    await browser?.close();
    await site?.close();
  });

  for (const width of WIDTHS) {
    it(`the form links to the service’s own notice, which passes axe-core (${width.name})`, { skip }, async (t) => {
      await withBrowserPage(browser, t, __filename, { context: width.context }, async (session) => {
        const { page } = session;
        await page.goto(`${site.url}/request`);
        const link = page.getByRole('link', { name: 'Read the privacy notice (opens in a new tab)' });
        assert.equal(await link.getAttribute('href'), '/privacy');
        const [notice] = await Promise.all([page.context().waitForEvent('page'), link.click()]);
        await notice.getByRole('heading', { level: 1, name: 'Privacy notice: Moodle parent accounts' }).waitFor();
        assert.equal(new URL(notice.url()).pathname, '/privacy');
        const text = await notice.locator('main').innerText();
        assert.match(text, /Hillside School runs this service/);
        assert.match(text, /The internet address and web browser: 14 days after you send the form/);
        assert.match(text, /not genuine: 60 days after that decision/);
        assert.equal(await fitsViewportWidth(notice), true, 'the notice fits the screen');
        await notice.screenshot({ path: path.join(session.artifactsDir, 'privacy-notice.png'), fullPage: true });
        assert.deepEqual(await axeViolations(notice), [], 'axe-core finds no violation on the notice');
        await notice.close();
      });
    });

    it(`the diagnostics page’s warning passes axe-core (${width.name})`, { skip }, async (t) => {
      await withBrowserPage(browser, t, __filename, { context: width.context }, async (session) => {
        const { page } = session;
        await page.goto(`${site.url}/admin`);
        await page.getByLabel('Username').fill(adminUsername);
        await page.getByLabel('Password').fill(STAFF_PASSWORD);
        await page.getByRole('button', { name: 'Sign in' }).click();
        await page.getByText('Signed in as Ada Admin').waitFor();
        await page.goto(`${site.url}/admin/diagnostics`);
        const check = page.locator('#check-privacy-notice');
        await check.waitFor();
        assert.match(await check.innerText(), /Warning\s+Privacy notice \(PRIVACY_NOTICE_URL\)/);
        assert.equal(await fitsViewportWidth(page), true, 'the diagnostics page fits the screen');
        await check.scrollIntoViewIfNeeded();
        await session.screenshot('diagnostics with the privacy notice warning');
        await page.locator('.diagnostics-summary').screenshot({ path: path.join(session.artifactsDir, 'summary.png') });
        await check.screenshot({ path: path.join(session.artifactsDir, 'privacy-notice-warning.png') });
        // The warning itself: the rest of the page is not this check's subject.
        assert.deepEqual(await axeViolations(page, '#check-privacy-notice'), [], 'axe-core finds no violation in the warning');
      });
    });
  }
});
