// The parent's journey in headless Chromium on a phone: the request form (with and without
// JavaScript, adding a second child with the button), the confirmation link taken from the real
// email, the confirmation page and the status page's timeline; and the same form used with the
// keyboard alone, including the error summary after a mistake.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { browserSkipReason, DESKTOP, fitsViewportWidth, focused, launchBrowser, PHONE, startTestSite, withBrowserPage, type BrowserSession, type TestSite } from '../support/browser';

const MAX_CHILDREN = 4;
/** Each journey follows its used confirmation link a second time on purpose. */
const USED_LINK_404 = /status of 404 \(Not Found\) \(http:\/\/127\.0\.0\.1:\d+\/request\/verify\/[A-Za-z0-9_-]{43}\)$/;

interface Parent {
  title: string;
  firstName: string;
  lastName: string;
  email: string;
  children: Array<{ firstName: string; lastName: string; tutorGroup: string; pupilIdentifier: string }>;
}

let sequence = 0;
function parent(): Parent {
  sequence += 1;
  return {
    title: 'Mrs',
    firstName: 'Zoë',
    lastName: 'O’Brien',
    email: `Browser.Parent${sequence}.${process.pid}@Example.org`,
    children: [
      { firstName: 'Ann', lastName: 'O’Brien', tutorGroup: '7B', pupilIdentifier: 'ADM1001' },
      { firstName: 'José', lastName: 'O’Brien', tutorGroup: '9C', pupilIdentifier: '' },
    ],
  };
}

/** The verification link in a confirmation email, checked to point at this site. */
function confirmationLink(site: TestSite, text: string): string {
  const match = /(https?:\/\/\S+\/request\/verify\/[A-Za-z0-9_-]{43})/.exec(text);
  assert.ok(match, `the email has a confirmation link:\n${text}`);
  const link = match[1] as string;
  assert.ok(link.startsWith(`${site.url}/request/verify/`), `the link points at the service: ${link}`);
  return link;
}

async function fillAboutYou(page: Page, p: Parent): Promise<void> {
  const aboutYou = page.getByRole('group', { name: 'About you' });
  await aboutYou.getByLabel('Title (optional)').fill(p.title);
  await aboutYou.getByLabel('First name').fill(p.firstName);
  await aboutYou.getByLabel('Last name').fill(p.lastName);
  await aboutYou.getByLabel('Email address', { exact: true }).fill(p.email);
  await aboutYou.getByLabel('Email address again').fill(p.email);
  await page.getByRole('radio', { name: 'I do not have a parent account yet' }).check();
}

async function fillChild(page: Page, index: number, child: Parent['children'][number]): Promise<void> {
  const block = page.getByRole('group', { name: `Child ${index + 1}` });
  await block.getByLabel('First name').fill(child.firstName);
  await block.getByLabel('Last name').fill(child.lastName);
  await block.getByLabel('Tutor group or class').fill(child.tutorGroup);
  await block.getByLabel('Pupil number (optional)').fill(child.pupilIdentifier);
}

describe('a parent asks for an account, in Chromium', () => {
  const skip = browserSkipReason();
  let browser: Browser;
  let site: TestSite;

  before(async () => {
    if (skip) return;
    browser = await launchBrowser();
    site = await startTestSite({ env: { MAX_CHILDREN: String(MAX_CHILDREN), PRIVACY_NOTICE_URL: 'https://www.example-school.org/privacy' } });
  });
  after(async () => {
    await browser?.close();
    await site?.close();
  });

  /** What was stored for the parent, read from the database. */
  async function storedRequest(email: string) {
    const row = (await site.database.db('requests').where({ email: email.toLowerCase() }).first()) as { id: number; status: string; parent_first_name: string } | undefined;
    assert.ok(row, `a request is stored for ${email}`);
    const children = (await site.database.db('request_children').where({ request_id: row.id }).orderBy('position')) as Array<{ first_name: string; tutor_group: string; pupil_identifier: string | null }>;
    return { row, children };
  }

  /** From the email to the timeline: the part of the journey after the form is sent. */
  async function confirmAndCheckStatus(session: BrowserSession, p: Parent): Promise<void> {
    const { page } = session;
    const mail = await site.mailTo(p.email, /confirm/i);
    const link = confirmationLink(site, mail.text);
    assert.ok(mail.html.includes(link), 'the HTML part has the same link');

    // Opening the link confirms nothing (mail scanners open links too): the parent presses the button.
    await page.goto(link);
    await page.getByRole('heading', { name: 'Confirm your email address' }).waitFor();
    assert.equal((await storedRequest(p.email)).row.status, 'unverified');
    await page.getByRole('button', { name: 'Confirm my email address' }).click();
    await page.getByRole('heading', { name: 'Thank you, your email address is confirmed' }).waitFor();
    assert.equal(await fitsViewportWidth(page), true, 'the confirmation page fits the screen');
    await session.screenshot('address confirmed');

    await page.getByRole('link', { name: 'See how your request is going' }).click();
    await page.getByRole('heading', { name: 'Your request' }).waitFor();
    assert.match(await page.locator('.status-line').innerText(), /Waiting for the school to check/);
    const timeline = await page.locator('ol.timeline li .timeline-text').allInnerTexts();
    assert.deepEqual(timeline, ['We received your request.', 'You confirmed your email address.']);
    const children = await page.getByRole('heading', { name: 'Your children on this request' }).locator('xpath=following-sibling::ul[1]/li').allInnerTexts();
    assert.deepEqual(children, p.children.map((c) => `${c.firstName} ${c.lastName} (${c.tutorGroup})`));
    assert.equal(await fitsViewportWidth(page), true, 'the status page fits the screen');
    await session.screenshot('status page with its timeline');

    // The link works once: following it again says so, in plain words, with the way to the status page.
    await page.goto(link);
    await page.getByRole('heading', { name: 'Your email address is already confirmed' }).waitFor();
    await page.getByRole('link', { name: 'See how your request is going' }).waitFor();
    const stored = await storedRequest(p.email);
    assert.equal(stored.row.status, 'pending');
  }

  it('on a phone with JavaScript: adds a second child with the button, sends, confirms from the email, sees the timeline', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: PHONE, allowConsoleErrors: [USED_LINK_404] }, async (session) => {
      const { page } = session;
      const p = parent();
      await page.goto(`${site.url}/`);
      await session.screenshot('home page');
      await page.getByRole('link', { name: 'Ask for a parent account' }).tap();
      await page.getByRole('heading', { name: 'Ask for a Moodle parent account' }).waitFor();
      assert.equal(await fitsViewportWidth(page), true, 'the form fits a phone screen');
      await session.screenshot('empty form');

      await fillAboutYou(page, p);
      await fillChild(page, 0, p.children[0]!);
      const formUrl = page.url();
      let navigations = 0;
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) navigations += 1;
      });
      await page.getByRole('button', { name: 'Add another child' }).tap();
      await page.getByRole('group', { name: 'Child 2' }).waitFor();
      assert.equal(navigations, 0, 'the child is added in the page, without sending the form');
      assert.equal(page.url(), formUrl);
      assert.equal((await focused(page)).id, 'children-1-firstName', 'the cursor moves to the new child');
      assert.equal(await page.getByRole('group', { name: 'Child 1' }).getByLabel('First name').inputValue(), 'Ann', 'the first child is kept');
      assert.equal(await page.getByRole('button', { name: 'Remove child 2' }).count(), 1);
      await fillChild(page, 1, p.children[1]!);
      await page.getByLabel('Anything else the school should know? (optional)').fill('Sent from my phone');
      await page.getByRole('checkbox', { name: 'I have read the privacy notice' }).check();
      assert.equal(await fitsViewportWidth(page), true, 'the filled form still fits');
      await session.screenshot('filled form with two children');

      await page.getByRole('button', { name: 'Send request' }).tap();
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      assert.match(await page.locator('main').innerText(), new RegExp(`We have sent an email to ${p.email.toLowerCase().replace(/\./g, '\\.')}`));
      await session.screenshot('thank you');

      const stored = await storedRequest(p.email);
      assert.equal(stored.row.status, 'unverified');
      assert.deepEqual(
        stored.children.map((c) => [c.first_name, c.tutor_group, c.pupil_identifier]),
        [
          ['Ann', '7B', 'ADM1001'],
          ['José', '9C', null],
        ],
      );
      await confirmAndCheckStatus(session, p);
    });
  });

  it('on a phone without JavaScript: the same journey, the server adds the second child', { skip }, async (t) => {
    await withBrowserPage(browser, t, __filename, { context: { ...PHONE, javaScriptEnabled: false }, allowConsoleErrors: [USED_LINK_404] }, async (session) => {
      const { page } = session;
      const p = parent();
      await page.goto(`${site.url}/request`);
      await session.screenshot('empty form without JavaScript');
      await fillAboutYou(page, p);
      await fillChild(page, 0, p.children[0]!);

      const [added] = await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Add another child' }).tap()]);
      assert.equal(added?.status(), 200, 'the server shows the form again, not an error');
      await page.getByRole('group', { name: 'Child 2' }).waitFor();
      assert.equal(await page.locator('#error-summary').count(), 0, 'adding a child is not a mistake');
      assert.equal(await page.getByRole('group', { name: 'About you' }).getByLabel('Email address again').inputValue(), p.email, 'what was typed is kept');
      assert.equal(await page.getByRole('group', { name: 'Child 1' }).getByLabel('Pupil number (optional)').inputValue(), 'ADM1001');
      assert.equal(await page.getByRole('radio', { name: 'I do not have a parent account yet' }).isChecked(), true);
      assert.equal((await focused(page)).id, 'children-1-firstName', 'the new child’s first field has the focus (autofocus)');
      await session.screenshot('second child added by the server');

      await fillChild(page, 1, p.children[1]!);
      await page.getByRole('checkbox', { name: 'I have read the privacy notice' }).check();
      await page.getByRole('button', { name: 'Send request' }).tap();
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      await session.screenshot('thank you without JavaScript');
      assert.equal((await storedRequest(p.email)).children.length, 2);
      await confirmAndCheckStatus(session, p);
    });
  });

  it('with the keyboard alone: tabs through the form, is led to a mistake by the error summary, fixes it and sends with Enter', { skip }, async (t) => {
    // The form with a mistake comes back as a 400, which Chromium logs.
    await withBrowserPage(browser, t, __filename, { context: DESKTOP, allowConsoleErrors: [/status of 400 \(Bad Request\) \(http:\/\/127\.0\.0\.1:\d+\/request\)$/] }, async (session) => {
      const { page } = session;
      const p = parent();
      const tab = () => page.keyboard.press('Tab');
      /** Tabs once and checks that the focus landed where a keyboard user expects. */
      const tabTo = async (expected: { id?: string; text?: string }, type?: string) => {
        await tab();
        const now = await focused(page);
        if (expected.id !== undefined) assert.equal(now.id, expected.id, `Tab should reach #${expected.id}, reached ${JSON.stringify(now)}`);
        if (expected.text !== undefined) assert.equal(now.text, expected.text, `Tab should reach "${expected.text}", reached ${JSON.stringify(now)}`);
        if (type !== undefined) await page.keyboard.type(type);
      };

      await page.goto(`${site.url}/request`);
      await tabTo({ text: 'Skip to main content' });
      await page.keyboard.press('Enter');
      assert.equal((await focused(page)).id, 'main', 'the skip link moves the focus to the content');
      await session.screenshot('skip link used');

      // The hidden "send" button and the honeypot are never reached.
      await tabTo({ id: 'title' }, p.title);
      await tabTo({ id: 'firstName' }); // left empty on purpose
      await tabTo({ id: 'lastName' }, p.lastName);
      await tabTo({ id: 'email' }, p.email);
      await tabTo({ id: 'emailConfirm' }, p.email);
      await tabTo({ id: 'requestType' });
      await page.keyboard.press('Space');
      assert.equal(await page.getByRole('radio', { name: 'I do not have a parent account yet' }).isChecked(), true);
      await tabTo({ id: 'children-0-firstName' }, p.children[0]!.firstName);
      await tabTo({ id: 'children-0-lastName' }, p.children[0]!.lastName);
      await tabTo({ id: 'children-0-tutorGroup' }, p.children[0]!.tutorGroup);
      await tabTo({ id: 'children-0-pupilIdentifier' }, p.children[0]!.pupilIdentifier);
      await tabTo({ text: 'Add another child' });
      await page.keyboard.press('Enter');
      assert.equal((await focused(page)).id, 'children-1-firstName', 'Enter on "Add another child" moves the cursor to the new child');
      await page.keyboard.type(p.children[1]!.firstName);
      await tabTo({ id: 'children-1-lastName' }, p.children[1]!.lastName);
      await tabTo({ id: 'children-1-tutorGroup' }, p.children[1]!.tutorGroup);
      await tabTo({ id: 'children-1-pupilIdentifier' });
      await tabTo({ text: 'Remove child 2' });
      await tabTo({ text: 'Add another child' });
      await tabTo({ id: 'comment' }, 'Typed without a mouse');
      await tabTo({ text: 'Read the privacy notice (opens in a new tab)' });
      await tabTo({ id: 'privacyAccepted' });
      await page.keyboard.press('Space');
      await tabTo({ text: 'Send request' });
      await session.screenshot('form filled by keyboard, first name missing');

      const [sent] = await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
      assert.equal(sent?.status(), 400);
      const summary = page.getByRole('alert');
      await summary.getByRole('heading', { name: 'There is a problem' }).waitFor();
      assert.equal((await focused(page)).id, 'error-summary', 'the error summary takes the focus, so it is read out first');
      assert.deepEqual(await summary.getByRole('link').allInnerTexts(), ['Enter your first name']);
      assert.match(await page.title(), /^Error: /, 'the page title says there is an error');
      await session.screenshot('error summary');

      await tabTo({ text: 'Enter your first name' });
      await page.keyboard.press('Enter');
      assert.equal((await focused(page)).id, 'firstName', 'the summary’s link puts the cursor in the field');
      assert.equal(await page.locator('#firstName').getAttribute('aria-invalid'), 'true');
      assert.match((await page.locator('#firstName').getAttribute('aria-describedby')) ?? '', /firstName-error/);
      await page.keyboard.type(p.firstName);
      await session.screenshot('mistake fixed');

      // Enter in a text field sends the form: through the hidden first "send" button, never a "Remove child" one.
      await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
      await page.getByRole('heading', { name: 'Thank you' }).waitFor();
      await session.screenshot('sent with Enter');
      const stored = await storedRequest(p.email);
      assert.equal(stored.row.parent_first_name, p.firstName);
      assert.deepEqual(stored.children.map((c) => c.first_name), ['Ann', 'José'], 'both children arrived');
    });
  });
});
