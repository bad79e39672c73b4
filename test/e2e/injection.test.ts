// Hostile input everywhere it can be shown: requests whose every field is an XSS or template
// payload, viewed on every dashboard page, the parent's status page, the CSV exports and the
// emails. In a real browser a trap global would be set by any payload that ran; the pages must
// also hold no element or attribute a payload could have created (CSP alone would hide an
// escaping bug from the trap), and the payloads must still be shown, as text.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parse } from 'csv-parse/sync';
import type { Browser, Page } from 'playwright-core';
import { DESKTOP, launchBrowser, startTestSite, withBrowserPage, type TestSite } from '../support/browser';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, STAFF_PASSWORD } from '../support/staff';

const PAYLOADS = {
  script: '<script>window.__xss=1</script>',
  img: '"><img src=x onerror="window.__xss=2">',
  svg: "'><svg onload=window.__xss=3>",
  template: '<%= 7*7 %>{{7*7}}${7*7}#{7*7}',
  formula: '=HYPERLINK("http://evil.example/","open")',
  plus: '+cmd|/C calc!A0',
  minus: '-2+3',
  at: '@SUM(1+1)',
  url: 'javascript:window.__xss=6',
};
const ALL = Object.values(PAYLOADS).join(' ');

/** Markup a payload would have created had it not been escaped. */
const RAW_MARKUP = /<script>window\.__xss|<img src=x onerror|<svg onload/i;

async function assertInert(page: Page, path: string): Promise<void> {
  const found = await page.evaluate(() => ({
    trap: (window as unknown as { __xss?: unknown }).__xss ?? null,
    inlineScripts: document.querySelectorAll('script:not([src])').length,
    handlers: [...document.querySelectorAll('*')].filter((el) => [...el.attributes].some((a) => /^on/i.test(a.name))).length,
    svgs: document.querySelectorAll('svg').length,
    jsLinks: [...document.querySelectorAll('a[href], form[action]')].filter((el) => /^\s*javascript:/i.test(el.getAttribute('href') ?? el.getAttribute('action') ?? '')).length,
  }));
  assert.deepEqual(found, { trap: null, inlineScripts: 0, handlers: 0, svgs: 0, jsLinks: 0 }, `${path}: nothing from a payload may run or appear as markup`);
  assert.doesNotMatch(await page.content(), RAW_MARKUP, `${path}: payload markup is escaped`);
}

/** Every cell of an export that starts like a formula must be neutralised. */
function assertNoFormulaCells(csv: string, what: string, keptText?: string): void {
  const rows = parse(csv, { relax_column_count: true }) as string[][];
  assert.ok(rows.length >= 2, `${what} has data rows`);
  for (const row of rows) for (const cell of row) assert.doesNotMatch(cell, /^[=+\-@\t\r]/, `${what}: cell ${JSON.stringify(cell)} is neutralised`);
  if (keptText) assert.ok(rows.flat().some((cell) => cell.startsWith(`'${keptText}`)), `${what}: the formula text is kept, behind a quote`);
}

describe('hostile input is shown, never run', () => {
  let browser: Browser;
  let moodle: MoodleDouble;
  let site: TestSite;
  let username: string;
  const publicIds: string[] = [];
  let hostileId = 0;

  before(async () => {
    browser = await launchBrowser();
    moodle = await startMoodleDouble({ state: seedRecordedSite() });
    site = await startTestSite({
      env: { MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws, MOODLE_PARENT_ROLE_ID: '9', STAFF_NOTIFY_EMAILS: 'office@example-school.org' },
      services: { moodle: undefined },
    });
    username = await createStaffUser(site.services, { role: 'admin', displayName: PAYLOADS.svg });
    const staff = { type: 'staff' as const, id: username };
    const { lifecycle } = site.services;
    // Written through the lifecycle directly, so the pages are tested even for values the form
    // itself would refuse (an import, the API or a future path might let them through).
    const hostile = (n: number) => ({
      requestType: 'new_account' as const,
      parentTitle: PAYLOADS.script,
      parentFirstName: PAYLOADS.img,
      parentLastName: `${PAYLOADS.formula}${n}`,
      email: `hostile${n}.${process.pid}@example.org`,
      comment: ALL,
      children: [
        { firstName: PAYLOADS.svg, lastName: PAYLOADS.template, tutorGroup: PAYLOADS.plus, pupilIdentifier: PAYLOADS.at },
        { firstName: PAYLOADS.minus, lastName: PAYLOADS.url, tutorGroup: '7B', pupilIdentifier: null },
      ],
      source: 'form' as const,
      requireVerification: false,
    });
    const first = await lifecycle.submitRequest(hostile(1), { type: 'parent' });
    hostileId = first.request.id;
    await lifecycle.addStaffComment(first.request.id, ALL, staff);
    const approved = await lifecycle.approveRequest(
      first.request.id,
      { children: first.children.map((c, i) => ({ childId: c.id, moodleUserId: 3 + i })) },
      staff,
    );
    publicIds.push(approved.publicId);
    const second = await lifecycle.submitRequest(hostile(2), { type: 'parent' });
    await lifecycle.denyRequest(second.request.id, { reason: ALL }, staff);
    publicIds.push(second.request.publicId);
    const third = await lifecycle.submitRequest(hostile(3), { type: 'parent' });
    await lifecycle.markBogus(third.request.id, { reason: PAYLOADS.img }, staff);
    // A cycle, so the cycle pages have a report that names these requests.
    await moodle.sync(site.database.db, 'moodle_auth_users');
    await site.services.cycle.run('cli', PAYLOADS.script);
    await site.services.mailOutbox.sendDue();
  });
  after(async () => {
    await site?.close();
    await moodle?.close();
    await browser?.close();
  });

  it('no dashboard page or status page runs or renders a payload', async (t) => {
    await withBrowserPage(browser, t, __filename, { context: DESKTOP }, async (session) => {
      const { page } = session;
      await page.goto(`${site.url}/admin/sign-in`);
      await page.getByLabel('Username').fill(username);
      await page.getByLabel('Password').fill(STAFF_PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(`${site.url}/admin`);
      const pages = [
        '/admin',
        '/admin/requests',
        '/admin/requests?status=approved',
        '/admin/requests?status=denied',
        `/admin/requests?q=${encodeURIComponent(PAYLOADS.script)}`,
        `/admin/requests?q=${encodeURIComponent(PAYLOADS.img)}&sort=${encodeURIComponent(PAYLOADS.svg)}`,
        `/admin/requests/${hostileId}`,
        `/admin/requests/${hostileId + 1}`,
        `/admin/requests/${hostileId + 2}`,
        `/admin/requests/${hostileId + 1}/erase`,
        '/admin/accounts',
        '/admin/provisioning',
        '/admin/cycles/1',
        '/admin/pupils/3',
        '/admin/diagnostics',
        '/admin/import',
        `/admin/sign-in?next=${encodeURIComponent(PAYLOADS.url)}`,
      ];
      for (const path of pages) {
        const response = await page.goto(`${site.url}${path}`);
        assert.ok(response && response.status() < 400, `${path} answered ${response?.status()}`);
        await assertInert(page, path);
      }
      // The payloads are there to read, as text, on the request page.
      await page.goto(`${site.url}/admin/requests/${hostileId}`);
      const text = await page.locator('main').innerText();
      for (const payload of [PAYLOADS.script, PAYLOADS.img.trim(), PAYLOADS.template, PAYLOADS.formula]) {
        assert.ok(text.includes(payload), `the request page shows ${payload} as text`);
      }
      // An evaluated fragment of the template payload leaves 49 beside the fragments still shown
      // (a bare "49" anywhere would also match times and ids on the page).
      assert.ok(!/4949|49(\{\{|\$\{|#\{)|(%>|\}\})49|\}49/.test(text), 'no template expression was evaluated');
      await session.screenshot('request page with hostile values');

      for (const publicId of publicIds) {
        const path = `/request/status/${publicId}`;
        await page.goto(`${site.url}${path}`);
        await assertInert(page, path);
      }
      const status = await page.locator('main').innerText();
      assert.ok(status.includes('window.__xss'), 'the deny reason is shown to the parent as text');
    });
  });

  it('the CSV exports neutralise formula cells', async (t) => {
    await withBrowserPage(browser, t, __filename, { context: DESKTOP }, async ({ page }) => {
      await page.goto(`${site.url}/admin/sign-in`);
      await page.getByLabel('Username').fill(username);
      await page.getByLabel('Password').fill(STAFF_PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForURL(`${site.url}/admin`);
      const requests = await page.request.get(`${site.url}/admin/requests.csv`);
      assert.equal(requests.status(), 200);
      assertNoFormulaCells(await requests.text(), 'the requests export', PAYLOADS.formula);
      const history = await page.request.get(`${site.url}/admin/pupils/3/history.csv`);
      assert.equal(history.status(), 200);
      assertNoFormulaCells(await history.text(), "the pupil's access history");
    });
  });

  it('no email carries a payload as markup', async () => {
    const messages = site.smtp.messages;
    assert.ok(messages.length >= 3, `mail was sent (${messages.length})`);
    const denial = messages.find((m) => m.to.includes(`hostile2.${process.pid}@example.org`) && m.text.includes('window.__xss'));
    assert.ok(denial, `the parent was told of the denial, with the reason (mail sent: ${messages.map((m) => `${m.to.join(',')}: ${m.subject}`).join('; ')})`);
    for (const message of messages) {
      assert.doesNotMatch(message.html ?? '', RAW_MARKUP, `"${message.subject}" escapes the payloads in its HTML`);
      assert.doesNotMatch(message.subject, /[<>]/, `"${message.subject}" has no markup in its subject`);
    }
    assert.ok((denial.html ?? '').includes('&lt;script&gt;window.__xss=1&lt;/script&gt;'), 'the reason is in the HTML, escaped');
  });
});
