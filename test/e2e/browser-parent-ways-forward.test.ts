// Every page a parent can land on at the end of a link or a refusal gives a way forward, in
// headless Chromium: a used confirmation link, the held-details pages, the status link of a
// request whose details were erased, the form refused by a rate limit, too many "send me a new
// link" presses, an expired confirmation link, a form whose check cookie was lost, and links that
// do not work (unknown, cut short, an address under /request that does not exist). Each page is
// checked with axe-core at desktop and phone width, with no violations.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, fitsViewportWidth, launchBrowser, PHONE, startTestSite, withBrowserPage, type BrowserSession, type TestSite } from '../support/browser';

const AXE_SCRIPT = require.resolve('axe-core/axe.min.js');
const CONTACT_EMAIL = 'office@hillside.example.org';
const CONTACT_PHONE = '01632 960123';
/** These pages answer 404, 409, 410 or 429 on purpose; Chromium logs each as a console error. */
const EXPECTED_REFUSALS = [/the server responded with a status of (404|409|410|429) /];
const WIDTHS = [
  ['desktop', { width: 1280, height: 900 }],
  ['phone', { width: 390, height: 844 }],
] as const;

let sequence = 0;
function nextEmail(): string {
  sequence += 1;
  return `ways.forward${sequence}.${process.pid}@example.org`;
}

/** axe-core's violations on the page as it is now, one line each (empty when there are none). */
async function axeViolations(page: Page): Promise<string[]> {
  if (!(await page.evaluate('typeof window.axe !== "undefined"'))) await page.addScriptTag({ path: AXE_SCRIPT });
  return page.evaluate(`axe.run(document, { resultTypes: ['violations'] }).then((r) =>
    r.violations.map((v) => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map((n) => n.target.join(' ')).join(', ')))`);
}

/** At 1280 and 390 px: no axe-core violation, no sideways scrolling; a screenshot of each. */
async function checkAtBothWidths(session: BrowserSession, name: string): Promise<void> {
  for (const [label, size] of WIDTHS) {
    await session.page.setViewportSize(size);
    assert.deepEqual(await axeViolations(session.page), [], `${name} at ${label} width has no accessibility violations`);
    assert.equal(await fitsViewportWidth(session.page), true, `${name} fits the screen at ${label} width`);
    await session.screenshot(`${name} ${label}`);
  }
}

/** The school office's address and number, as links a phone can use. */
async function assertSchoolContact(page: Page): Promise<void> {
  await page.getByRole('link', { name: CONTACT_EMAIL }).first().waitFor();
  assert.equal(await page.getByRole('link', { name: CONTACT_PHONE }).first().getAttribute('href'), 'tel:01632960123');
}

/** Fills in the form and sends it; beforeSend runs with the form filled in, just before. */
async function sendForm(page: Page, siteUrl: string, email: string, beforeSend?: () => Promise<void>): Promise<void> {
  await page.goto(`${siteUrl}/request`);
  const aboutYou = page.getByRole('group', { name: 'About you' });
  await aboutYou.getByLabel('First name').fill('Sam');
  await aboutYou.getByLabel('Last name').fill('Okafor');
  await aboutYou.getByLabel('Email address', { exact: true }).fill(email);
  await aboutYou.getByLabel('Email address again').fill(email);
  await page.getByRole('radio', { name: 'I do not have a parent account yet' }).check();
  const child = page.getByRole('group', { name: 'Child 1' });
  await child.getByLabel('First name').fill('Tom');
  await child.getByLabel('Last name').fill('Okafor');
  await child.getByLabel('Tutor group or class').fill('9D');
  await page.getByLabel('I have read the privacy notice').check();
  await beforeSend?.();
  await page.getByRole('button', { name: 'Send request', exact: true }).last().click();
}

describe('every page a parent can land on gives a way forward, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let site: TestSite;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    site = await startTestSite({
      env: { SCHOOL_CONTACT_EMAIL: CONTACT_EMAIL, SCHOOL_CONTACT_PHONE: CONTACT_PHONE, FORM_RATE_LIMIT_PER_EMAIL: '2' },
    });
  });
  after(async () => {
    await browser?.close();
    await site?.close();
  });

  /** The links in the confirmation email sent to the address. */
  async function linksFromMail(email: string): Promise<{ confirm: string; status: string }> {
    const mail = await site.mailTo(email, /confirm/i);
    const confirm = /(https?:\/\/\S+\/request\/verify\/[A-Za-z0-9_-]{43})/.exec(mail.text)?.[1];
    const status = /(https?:\/\/\S+\/request\/status\/[A-Za-z0-9_-]{22})/.exec(mail.text)?.[1];
    assert.ok(confirm && status, `the email has both links:\n${mail.text}`);
    return { confirm, status };
  }

  async function requestId(email: string): Promise<number> {
    const row = (await site.database.db('requests').where({ email }).first()) as { id: number } | undefined;
    assert.ok(row, `a request is stored for ${email}`);
    return Number(row.id);
  }

  it('a used confirmation link: says so, gives the request number, the status page and the school office', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...PHONE, bypassCSP: true }, allowConsoleErrors: EXPECTED_REFUSALS }, async (session) => {
      const { page } = session;
      const email = nextEmail();
      await sendForm(page, site.url, email);
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'thank-you page');

      const links = await linksFromMail(email);
      await page.goto(links.confirm);
      await page.getByRole('button', { name: 'Confirm my email address' }).click();
      await page.getByRole('heading', { name: 'Thank you, your email address is confirmed' }).waitFor();
      const id = await requestId(email);
      assert.equal(await page.locator('.request-number').first().innerText(), String(id));
      await checkAtBothWidths(session, 'address confirmed');

      // The same link again: used, and the page leads on.
      await page.goto(links.confirm);
      await page.getByRole('heading', { name: 'Your email address is already confirmed' }).waitFor();
      assert.equal(await page.locator('.request-number').first().innerText(), String(id));
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'used confirmation link');
      await page.getByRole('link', { name: 'See how your request is going' }).click();
      await page.getByRole('heading', { name: 'Your request' }).waitFor();
      assert.match(await page.locator('main').innerText(), new RegExp(`Request number ${id}\\b`));
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'status page');
    });
  });

  it('the form sent again: the held-details page and the updated page lead to the request, with its number', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...PHONE, bypassCSP: true }, allowConsoleErrors: EXPECTED_REFUSALS }, async (session) => {
      const { page } = session;
      const email = nextEmail();
      await sendForm(page, site.url, email);
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      await sendForm(page, site.url, email);
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      const mail = await site.mailTo(email, /details you sent/i);
      const link = /(https?:\/\/\S+\/request\/details\/[A-Za-z0-9_-]{43})/.exec(mail.text)?.[1];
      assert.ok(link, `the email has the link:\n${mail.text}`);
      await page.goto(link);
      await page.getByRole('heading', { name: 'Add the new details to your request' }).waitFor();
      await checkAtBothWidths(session, 'held details');
      await page.getByRole('button', { name: 'Add the new details to my request' }).click();
      await page.getByRole('heading', { name: 'Your request has been updated' }).waitFor();
      assert.equal(await page.locator('.request-number').first().innerText(), String(await requestId(email)));
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'details added');
      await page.getByRole('link', { name: 'See how your request is going' }).click();
      await page.getByRole('heading', { name: 'Your request' }).waitFor();
    });
  });

  it('an erased request’s status link: closed and removed on the day, with a way to send a new request', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...PHONE, bypassCSP: true }, allowConsoleErrors: EXPECTED_REFUSALS }, async (session) => {
      const { page } = session;
      const email = nextEmail();
      await sendForm(page, site.url, email);
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      const links = await linksFromMail(email);
      const id = await requestId(email);
      const staff = { type: 'staff' as const, id: 'office.admin' };
      await site.services.lifecycle.denyRequest(id, { reason: 'Not a parent at this school' }, staff);
      await site.services.privacy.eraseRequest(id, {}, staff);
      const erasedOn = new Intl.DateTimeFormat('en-GB', { dateStyle: 'long', timeZone: 'Europe/London' }).format(new Date());

      const answer = await page.goto(links.status);
      assert.equal(answer?.status(), 410);
      await page.getByRole('heading', { name: 'This request was closed' }).waitFor();
      const text = await page.locator('main').innerText();
      assert.match(text, new RegExp(`closed and its details were removed on ${erasedOn}`));
      assert.doesNotMatch(text, /Sam|Okafor|Tom/, 'nothing of the erased request is shown');
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'erased request status link');
      await page.getByRole('link', { name: 'Send a new request' }).click();
      await page.getByRole('heading', { name: 'Ask for a Moodle parent account' }).waitFor();
    });
  });

  it('the form refused by the per-address limit keeps what was typed, says when, and names the school office', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...DESKTOP, bypassCSP: true }, allowConsoleErrors: EXPECTED_REFUSALS }, async (session) => {
      const { page } = session;
      const email = nextEmail();
      for (let i = 0; i < 2; i += 1) {
        await sendForm(page, site.url, email);
        await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      }
      await sendForm(page, site.url, email);
      await page.getByRole('heading', { name: 'Your request has not been sent yet' }).waitFor();
      const summary = await page.locator('#error-summary').innerText();
      assert.match(summary, /send the form again after \d\d:\d\d/);
      assert.equal(await page.getByRole('group', { name: 'About you' }).getByLabel('Email address', { exact: true }).inputValue(), email);
      assert.equal(await page.getByRole('group', { name: 'Child 1' }).getByLabel('Tutor group or class').inputValue(), '9D');
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'rate-limited form');
    });
  });

  it('too many new confirmation links: the refusal leads back to the request’s page', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...PHONE, bypassCSP: true }, allowConsoleErrors: EXPECTED_REFUSALS }, async (session) => {
      const { page } = session;
      const email = nextEmail();
      await sendForm(page, site.url, email);
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      const links = await linksFromMail(email);
      await page.goto(links.status);
      // Three new links an hour; the fourth press is refused.
      for (let i = 0; i < 3; i += 1) {
        await page.getByRole('button', { name: 'Send me a new confirmation link' }).click();
        await page.getByText('We have sent you a new confirmation link.').waitFor();
      }
      await page.getByRole('button', { name: 'Send me a new confirmation link' }).click();
      await page.getByRole('heading', { name: 'Too many requests' }).waitFor();
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'too many new links');
      await page.getByRole('link', { name: 'Back to your request' }).click();
      await page.getByRole('heading', { name: 'Your request' }).waitFor();
      assert.equal(page.url(), links.status);
    });
  });

  it('an expired confirmation link offers a new one; a form that could not be checked leads back to the form', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...PHONE, bypassCSP: true }, allowConsoleErrors: EXPECTED_REFUSALS.concat([/status of 403 /]) }, async (session) => {
      const { page } = session;
      const email = nextEmail();
      await sendForm(page, site.url, email);
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      const links = await linksFromMail(email);
      await site.database.db('requests').where({ email }).update({ verification_expires_at: Date.now() - 60_000 });
      const answer = await page.goto(links.confirm);
      assert.equal(answer?.status(), 410);
      await page.getByRole('heading', { name: 'This link has expired' }).waitFor();
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'expired confirmation link');
      await page.getByRole('button', { name: 'Send me a new link' }).click();
      await page.getByText('We have sent you a new confirmation link.').waitFor();

      // The form's check cookie is gone (cookies cleared, or blocked): nothing is sent, and the page says what to do.
      await sendForm(page, site.url, nextEmail(), () => page.context().clearCookies());
      await page.getByRole('heading', { name: 'Please try again' }).waitFor();
      await assertSchoolContact(page);
      await checkAtBothWidths(session, 'form that could not be checked');
      await page.getByRole('link', { name: 'Back to the form' }).click();
      await page.getByRole('heading', { name: 'Ask for a Moodle parent account' }).waitFor();
    });
  });

  it('links that do not work, and pages that do not exist under /request, lead to the form and the school office', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...PHONE, bypassCSP: true }, allowConsoleErrors: EXPECTED_REFUSALS }, async (session) => {
      const { page } = session;
      const cases = [
        ['unknown confirmation link', `/request/verify/${'A'.repeat(43)}`, 'This link does not work'],
        ['unknown held-details link', `/request/details/${'B'.repeat(43)}`, 'This link does not work'],
        ['unknown status link', `/request/status/${'C'.repeat(22)}`, 'This link does not work'],
        ['status link cut short', '/request/status/CCCCCCCC', 'This link does not work'],
        ['no such page under request', '/request/thank-you', 'Page not found'],
      ] as const;
      for (const [name, path, heading] of cases) {
        const answer = await page.goto(`${site.url}${path}`);
        assert.equal(answer?.status(), 404, name);
        await page.getByRole('heading', { name: heading, level: 1 }).waitFor();
        await assertSchoolContact(page);
        await checkAtBothWidths(session, name);
        await page.getByRole('link', { name: 'Go to the request form' }).click();
        await page.getByRole('heading', { name: 'Ask for a Moodle parent account' }).waitFor();
      }
    });
  });
});
