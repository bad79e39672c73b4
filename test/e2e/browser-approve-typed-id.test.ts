// Approving with "another Moodle account, by its Moodle user id", in Chromium against the Moodle
// test double over HTTP: the box is a real text box wide enough to read the id; a typed id is
// looked up and shown by name for staff to confirm before anything is approved; a missing,
// deleted, suspended or the parent's own account is refused in words beside the box and in the
// error summary; without Moodle the page says plainly that nothing can be set up. axe-core checks
// each of these page states at desktop and phone width.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, focused, launchBrowser, PHONE, startTestSite, withBrowserPage, type TestSite } from '../support/browser';
import { submission } from '../support/builders';
import { seedSecondRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

/** A refused approval comes back with a 400, which Chromium logs. */
const EXPECTED_CONSOLE = [/status of 400/];
const AXE_PATH = path.resolve(__dirname, '..', '..', 'node_modules', 'axe-core', 'axe.min.js');
const WIDTHS = [
  ['desktop', DESKTOP],
  ['phone', PHONE],
] as const;

/** Every axe-core violation on the page as it is now, one line each. */
async function axeViolations(page: Page): Promise<string[]> {
  // Evaluated rather than added as a <script>: the app's Content-Security-Policy rightly refuses
  // inline scripts, and the check must see the page as it is served.
  await page.evaluate(fs.readFileSync(AXE_PATH, 'utf8'));
  // Written as page source: the test project has no DOM types.
  const violations = (await page.evaluate('axe.run(document).then((r) => r.violations.map((v) => ({ id: v.id, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")) })))')) as Array<{
    id: string;
    help: string;
    nodes: string[];
  }>;
  return violations.map((v) => `${v.id}: ${v.help} (${v.nodes.join(', ')})`);
}

async function assertNoAxeViolations(page: Page, what: string): Promise<void> {
  assert.deepEqual(await axeViolations(page), [], `axe-core finds no violations on ${what}`);
}

describe('approving with a typed Moodle user id, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let bare: TestSite;
  let staffUsername: string;
  let bareStaffUsername: string;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    const state = seedSecondRecordedSite();
    // A pupil away from school (suspended by the MIS sync), and one who left (deleted).
    state.addUser({ id: 70, username: 'pupil.away', firstname: 'Sam', lastname: 'Away', email: 'pupil.away@example.org', department: '8C', idnumber: 'ADM7070', suspended: true, maildisplay: 1 });
    state.deleteUser(64);
    moodle = await startMoodleDouble({ state });
    site = await startTestSite({
      env: { MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_PARENT_ROLE_ID: '9' },
      services: { moodle: undefined },
    });
    staffUsername = await createStaffUser(site.services, { displayName: 'Jo Office' });
    bare = await startTestSite();
    bareStaffUsername = await createStaffUser(bare.services, { displayName: 'Jo Office' });
  });
  after(async () => {
    await site?.close();
    await bare?.close();
    await moodle?.close();
    await browser?.close();
  });

  /** A pending request for one child that Moodle has no candidate for. */
  async function pendingRequest(on: TestSite, overrides: Parameters<typeof submission>[0] = {}) {
    const { request, children } = await on.services.lifecycle.submitRequest(
      submission({ children: [{ firstName: 'Cat', lastName: 'Nobody', tutorGroup: '8A', pupilIdentifier: null }], ...overrides }),
      { type: 'parent' },
    );
    return { id: request.id, childId: (children[0] as { id: number }).id };
  }

  async function signIn(page: Page, on: TestSite, username: string) {
    await page.goto(`${on.url}/admin/sign-in`);
    await page.getByLabel('Username').fill(username);
    await page.getByLabel('Password').fill(STAFF_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('Signed in as Jo Office').waitFor();
  }

  /** Chooses "another Moodle account" for the child, types the id and presses Approve. */
  async function approveTyped(page: Page, childId: number, moodleId: string) {
    await page.locator(`#match_${childId}_typed`).check();
    await page.locator(`#typed_${childId}`).fill(moodleId);
    await page.getByRole('button', { name: 'Approve', exact: true }).click();
    await page.waitForLoadState('load');
  }

  async function statusOf(on: TestSite, id: number) {
    return (await on.services.lifecycle.get(id)).request.status;
  }

  for (const [width, context] of WIDTHS) {
    it(`the typed-id box is a text box in which a 6-digit id can be read (${width})`, { skip }, async (t) => {
      const { id, childId } = await pendingRequest(site);
      await withBrowserPage(browser, t, __filename, { context }, async (session) => {
        const { page } = session;
        await signIn(page, site, staffUsername);
        await page.goto(`${site.url}/admin/requests/${id}`);
        const box = page.locator(`#typed_${childId}`);
        assert.equal(await box.getAttribute('type'), 'text');
        assert.equal(await box.getAttribute('inputmode'), 'numeric');
        await box.fill('123456');
        const rect = await box.boundingBox();
        assert.ok(rect, 'the box is shown');
        // Wide enough for the six digits at the box's own font, with its padding: nothing scrolls out of sight.
        const fits = (await page.evaluate(`(() => {
          const el = document.getElementById('typed_${childId}');
          const ruler = document.createElement('canvas').getContext('2d');
          ruler.font = getComputedStyle(el).font;
          return { scroll: el.scrollWidth, client: el.clientWidth, digits: ruler.measureText('123456').width };
        })()`)) as { scroll: number; client: number; digits: number };
        assert.ok(rect.width >= fits.digits + 16, `the box (${rect.width} px wide) shows six digits (${fits.digits} px)`);
        assert.ok(fits.scroll <= fits.client, `the typed id does not scroll out of the box (${fits.scroll} > ${fits.client})`);
        assert.ok(rect.height >= 30, `the box is as tall as a text box, not a checkbox (${rect.height} px)`);
        await session.screenshot('typed id box');
        await assertNoAxeViolations(page, `the request page (${width})`);
      });
    });
  }

  it('a typed id is looked up and shown as "Alice Pupil, 7B (pupil.a)" to confirm; only then is the request approved', { skip }, async (t) => {
    const { id, childId } = await pendingRequest(site);
    await withBrowserPage(browser, t, __filename, { context: DESKTOP }, async (session) => {
      const { page } = session;
      await signIn(page, site, staffUsername);
      await page.goto(`${site.url}/admin/requests/${id}`);
      await approveTyped(page, childId, '6');
      assert.equal(await statusOf(site, id), 'pending', 'nothing is approved before staff confirm');
      const check = page.locator('#confirm-typed');
      await check.waitFor();
      assert.match(await check.innerText(), /Cat Nobody: Alice Pupil, 7B \(pupil\.a\), Moodle user 6/);
      assert.match(await check.innerText(), /Nothing is approved yet/);
      assert.equal((await focused(page)).id, 'confirm-typed', 'the step to confirm takes the focus');
      await session.screenshot('confirm the typed account');
      await assertNoAxeViolations(page, 'the confirmation step (desktop)');
      await page.setViewportSize({ width: 390, height: 844 });
      await assertNoAxeViolations(page, 'the confirmation step (phone)');
      await session.screenshot('confirm the typed account on a phone');

      await page.getByRole('button', { name: 'Yes, approve with this account' }).click();
      await page.getByText(`Request ${id} is approved.`).waitFor();
      assert.equal(await statusOf(site, id), 'approved');
      const children = await site.services.requestRepository.children(site.database.db, id);
      assert.deepEqual(children.map((c) => [c.moodleUserId, c.linkState]), [[6, 'matched']]);
    });
  });

  const refusals: Array<[string, string, RegExp]> = [
    ['a missing account', '999999', /There is no Moodle account with the user id 999999 \(typed for Cat Nobody\)/],
    ['a deleted account', '64', /Moodle user 64 \(typed for Cat Nobody\) has been deleted in Moodle/],
    ['a suspended account', '70', /Moodle user 70 \(typed for Cat Nobody\), Sam Away, 8C \(pupil\.away\), is suspended in Moodle/],
    ['the parent’s own account', '9', /Moodle user 9 \(typed for Cat Nobody\) is the parent’s own account, Pat One \(parent\.one\), not a pupil’s/],
  ];
  it('a missing, deleted or suspended account, or the parent’s own, is refused in words beside the box and in the error summary', { skip }, async (t) => {
    // The parent's own Moodle account has the email address the parent gave.
    const { id, childId } = await pendingRequest(site, { email: 'parent.one@example.org' });
    for (const [width, context] of WIDTHS) {
      await withBrowserPage(browser, t, `${__filename}-${width}`, { context, allowConsoleErrors: EXPECTED_CONSOLE }, async (session) => {
        const { page } = session;
        await signIn(page, site, staffUsername);
        for (const [what, typed, words] of refusals) {
          await page.goto(`${site.url}/admin/requests/${id}`);
          await approveTyped(page, childId, typed);
          assert.match(await page.title(), /^Error: /, `${what}: the title says there is an error`);
          const summary = page.locator('#error-summary');
          assert.match(await summary.innerText(), words, `${what}: in the summary`);
          assert.equal((await focused(page)).id, 'error-summary', `${what}: the summary takes the focus`);
          assert.equal(await summary.getByRole('link').first().getAttribute('href'), `#typed_${childId}`, `${what}: the summary links to the box`);
          assert.match(await page.locator(`#typed_${childId}-error`).innerText(), words, `${what}: beside the box`);
          const box = page.locator(`#typed_${childId}`);
          assert.equal(await box.getAttribute('aria-invalid'), 'true');
          assert.match((await box.getAttribute('aria-describedby')) ?? '', new RegExp(`typed_${childId}-error`));
          assert.equal(await box.inputValue(), typed, `${what}: the typed id is kept`);
          assert.equal(await page.locator('#confirm-typed').count(), 0, `${what}: nothing to confirm`);
          await session.screenshot(`refused ${what}`);
          if (typed === '999999') await assertNoAxeViolations(page, `the refused approval (${width})`);
        }
        // Left empty: refused beside the box too.
        await page.goto(`${site.url}/admin/requests/${id}`);
        await approveTyped(page, childId, '');
        assert.match(await page.locator(`#typed_${childId}-error`).innerText(), /Type the Moodle user id of Cat Nobody’s account/);
      });
    }
    assert.equal(await statusOf(site, id), 'pending', 'nothing was approved');
  });

  it('without Moodle configured, the request page and the approval say plainly that nothing can be set up yet', { skip }, async (t) => {
    const { id, childId } = await pendingRequest(bare);
    for (const [width, context] of WIDTHS) {
      await withBrowserPage(browser, t, `${__filename}-${width}`, { context }, async (session) => {
        const { page } = session;
        await signIn(page, bare, bareStaffUsername);
        await page.goto(`${bare.url}/admin/requests/${id}`);
        const notice = page.locator('#moodle-problem');
        assert.match(await notice.innerText(), /This service is not connected to Moodle/);
        assert.match(await notice.innerText(), /Nothing can be set up in Moodle until it is connected/);
        await session.screenshot('not connected to Moodle');
        await assertNoAxeViolations(page, `the request page without Moodle (${width})`);
      });
    }
    await withBrowserPage(browser, t, __filename, { context: DESKTOP }, async (session) => {
      const { page } = session;
      await signIn(page, bare, bareStaffUsername);
      await page.goto(`${bare.url}/admin/requests/${id}`);
      await approveTyped(page, childId, '6');
      const message = page.getByRole('status').filter({ hasText: `Request ${id} is approved` });
      assert.match(await message.innerText(), /nothing can be set up yet: this service is not connected to Moodle/);
      assert.equal(await statusOf(bare, id), 'approved');
      await session.screenshot('approved without Moodle');
    });
  });
});
