// Every staff form filled in wrongly comes back as the parent form does: an error summary that
// is announced (role=alert) and takes the focus, "Error:" at the start of the page title, the
// message beside the field and the field marked (aria-invalid, aria-describedby), and what was
// typed still there (the setup page's two passwords excepted). Also: the privacy page is in the
// menu of those who may use it, and the request page's Moodle search says why it found nothing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Express } from 'express';
import { createApp } from '../../src/app';
import { parseConfig } from '../../src/config';
import { MoodleClient } from '../../src/moodle/moodle-client';
import { createServices, type Services } from '../../src/services';
import { submission } from '../support/builders';
import { createTestDatabase, DIALECTS, skipReason, TEST_AUTH_TABLE, type TestDatabase } from '../support/databases';
import { FormSession, htmlText } from '../support/http';
import { seedRecordedSite, startMoodleDouble, type MoodleDouble } from '../support/moodle-double';
import { createStaffUser, StaffSession } from '../support/staff';

const SECRET = 'staff-form-errors-secret-staff-form-errors-secret';

function testConfig(extra: Record<string, string> = {}) {
  return parseConfig({ NODE_ENV: 'test', AUTH_TABLE: TEST_AUTH_TABLE, SESSION_SECRET: SECRET, LOG_LEVEL: 'silent', ...extra });
}

function titleOf(html: string): string {
  return htmlText(/<title>([^<]*)<\/title>/.exec(html)?.[1] ?? '');
}

/** The error summary's links: where each goes and what it says. */
function summaryOf(html: string): { href: string; text: string }[] {
  const box = /<div class="error-summary" id="error-summary" role="alert"[^>]*tabindex="-1">([^]*?)<\/div>/.exec(html);
  assert.ok(box, 'the page has an error summary that is announced and can take the focus');
  return [...(box[1] as string).matchAll(/<a href="([^"]+)">([^]*?)<\/a>/g)].map((m) => ({ href: m[1] as string, text: htmlText(m[2] as string) }));
}

/** The opening tag of the field with this id. */
function fieldTag(html: string, id: string): string {
  const tag = new RegExp(`<(?:input|textarea)[^>]*\\sid="${id}"[^>]*>`).exec(html)?.[0];
  assert.ok(tag, `the page has the field ${id}`);
  return tag;
}

/** Checks one field is marked and points at the message shown beside it; answers the message. */
function assertMarked(html: string, id: string): string {
  const tag = fieldTag(html, id);
  assert.match(tag, /aria-invalid="true"/, `${id} is marked as wrong`);
  assert.match(tag, new RegExp(`aria-describedby="[^"]*\\b${id}-error\\b`), `${id} points at its message`);
  const message = new RegExp(`<span class="field-error" id="${id}-error">([^]*?)</span>\\s*</?`).exec(html);
  assert.ok(message, `${id} has its message beside it`);
  return htmlText((message[1] as string).replace(/<[^>]+>/g, '')).replace(/^Error:\s*/, '');
}

function assertErrorPage(html: string, fields: string[]) {
  assert.match(titleOf(html), /^Error: /, 'the title starts with "Error: "');
  const links = summaryOf(html).map((l) => l.href);
  for (const id of fields) {
    assert.ok(links.includes(`#${id}`), `the summary links to ${id} (it has ${links.join(', ')})`);
    assertMarked(html, id);
  }
}

const valueOf = (html: string, id: string) => /\svalue="([^"]*)"/.exec(fieldTag(html, id))?.[1];

for (const dialect of DIALECTS) {
  describe(`staff form errors on ${dialect}`, async () => {
    const skip = await skipReason(dialect);
    let t: TestDatabase;
    let services: Services;
    let app: Express;
    let moodle: MoodleDouble;
    let withMoodle: Services;
    let moodleApp: Express;

    before(async () => {
      if (skip) return;
      t = await createTestDatabase(dialect);
      services = createServices(testConfig(), { db: t.db, moodle: null });
      app = createApp(services);
      moodle = await startMoodleDouble({ state: seedRecordedSite() });
      withMoodle = createServices(testConfig({ MOODLE_URL: moodle.url, MOODLE_TOKEN: moodle.tokens.ws }), {
        db: t.db,
        moodle: new MoodleClient({ url: moodle.url, token: moodle.tokens.ws, timeoutMs: 2000, retries: 0, retryDelayMs: 1, batchSize: 50 }),
      });
      moodleApp = createApp(withMoodle);
    });
    after(async () => {
      if (skip) return;
      await withMoodle.close();
      await services.close();
      await moodle.close();
      await t.destroy();
    });

    it('first-run setup names every problem at once, keeps all but the passwords, and says what is wrong with a typed code without showing it', { skip }, async () => {
      const code = services.staffAccounts.setupCode();
      const browser = new FormSession(app);
      await browser.open('/admin/setup');
      const fields = { username: 'x', displayName: 'Pat Admin', email: 'pat@example.org', password: 'a secret password 1', passwordConfirm: 'another secret password' };

      const short = await browser.post('/admin/setup', { ...fields, setupCode: 'ABCD-EFGH' }).expect(400);
      assertErrorPage(short.text, ['setupCode', 'username', 'passwordConfirm']);
      assert.match(assertMarked(short.text, 'setupCode'), /has 12 letters and digits.*you typed 8/);
      assert.equal(valueOf(short.text, 'setupCode'), 'ABCD-EFGH');
      assert.equal(valueOf(short.text, 'username'), 'x');
      assert.equal(valueOf(short.text, 'displayName'), 'Pat Admin');
      assert.equal(valueOf(short.text, 'email'), 'pat@example.org');
      assert.equal(valueOf(short.text, 'password'), '', 'the password is not sent back');
      assert.equal(valueOf(short.text, 'passwordConfirm'), '');
      assert.ok(!short.text.includes('a secret password 1'));

      const foreign = await browser.post('/admin/setup', { ...fields, username: 'pat.admin', passwordConfirm: fields.password, setupCode: 'ABCD-EFGH-JKMO' }).expect(400);
      assertErrorPage(foreign.text, ['setupCode']);
      assert.match(assertMarked(foreign.text, 'setupCode'), /never has the letters I, L, O or U.*you typed O/);

      const wrong = [...code.replace(/-/g, '')].map((c) => (c === 'A' ? 'B' : 'A')).join('');
      const other = await browser.post('/admin/setup', { ...fields, username: 'pat.admin', passwordConfirm: fields.password, setupCode: wrong }).expect(400);
      assertErrorPage(other.text, ['setupCode']);
      assert.match(assertMarked(other.text, 'setupCode'), /not the setup code that this service printed/);
      assert.equal(summaryOf(other.text).length, 1, 'only the code is wrong');
      for (const page of [short.text, foreign.text, other.text]) {
        assert.ok(!page.includes(code) && !page.includes(code.replace(/-/g, '')), 'the page never shows the real code');
      }
      assert.equal(await services.staffAccounts.needsSetup(), true, 'no account was made');
    });

    it('sign-in: empty fields are named by the server, a wrong password marks the password and keeps the username', { skip }, async () => {
      const username = await createStaffUser(services, { role: 'admin' });
      const browser = new StaffSession(app);
      await browser.open('/admin/sign-in');
      const empty = await browser.post('/admin/sign-in', { username: '', password: '' });
      assert.equal(empty.status, 400);
      assertErrorPage(empty.text, ['username', 'password']);
      assert.deepEqual(summaryOf(empty.text).map((l) => l.text), ['Enter your username.', 'Enter your password.']);
      assert.doesNotMatch(fieldTag(empty.text, 'username'), /autofocus/, 'the summary, not the first field, takes the focus');

      const wrong = await browser.post('/admin/sign-in', { username, password: 'not the password at all' });
      assert.equal(wrong.status, 401);
      assertErrorPage(wrong.text, ['password']);
      assert.match(assertMarked(wrong.text, 'password'), /do not match an active staff account/);
      assert.equal(valueOf(wrong.text, 'username'), username);
      assert.equal(valueOf(wrong.text, 'password'), '');
    });

    it('the request page: deny, duplicate and comment come back with their summary, the box marked and what was typed', { skip }, async () => {
      const username = await createStaffUser(services, { role: 'admin' });
      const staff = await StaffSession.signIn(app, username);
      const { request: r } = await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      const base = `/admin/requests/${r.id}`;
      await staff.open(base);
      const version = String(r.version);

      const deny = await staff.post(`${base}/deny`, { version, reason: '   ' });
      assert.equal(deny.status, 400);
      assertErrorPage(deny.text, ['deny-reason']);
      assert.match(assertMarked(deny.text, 'deny-reason'), /Give a reason for denying/);
      assert.doesNotMatch(fieldTag(deny.text, 'deny-reason'), /\brequired\b/);

      const duplicate = await staff.post(`${base}/duplicate`, { version, duplicateOf: 'forty-two' });
      assert.equal(duplicate.status, 400);
      assertErrorPage(duplicate.text, ['duplicate-of']);
      assert.equal(valueOf(duplicate.text, 'duplicate-of'), 'forty-two', 'what was typed is kept');

      const long = `Called the parent <b>twice</b>. ${'x'.repeat(4100)}`;
      const comment = await staff.post(`${base}/comment`, { comment: long });
      assert.equal(comment.status, 400);
      assertErrorPage(comment.text, ['staff-comment']);
      assert.ok(comment.text.includes(`>Called the parent &lt;b&gt;twice&lt;/b&gt;. ${'x'.repeat(4100)}</textarea>`), 'the comment is kept, escaped');

      const emptyComment = await staff.post(`${base}/comment`, { comment: '' });
      assertErrorPage(emptyComment.text, ['staff-comment']);
      const after = (await services.lifecycle.get(r.id)).request;
      assert.equal(after.status, 'pending');
      assert.equal(after.staffComment, null);
    });

    it('erasing without ticking the box comes back with the summary and the box marked; nothing is erased', { skip }, async () => {
      const username = await createStaffUser(services, { role: 'admin' });
      const staff = await StaffSession.signIn(app, username);
      const { request: r } = await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      await staff.open(`/admin/requests/${r.id}/erase`);
      const res = await staff.post(`/admin/requests/${r.id}/erase`, { version: String(r.version) });
      assert.equal(res.status, 400);
      assertErrorPage(res.text, ['confirm']);
      assert.equal((await services.lifecycle.get(r.id)).request.erasedAt, null);
    });

    it('import: checking without a file comes back with the summary and the file box marked', { skip }, async () => {
      const username = await createStaffUser(services, { role: 'admin' });
      const staff = await StaffSession.signIn(app, username);
      await staff.open('/admin/import');
      const res = await staff.agent.post('/admin/import/preview').field('_csrf', staff.csrfToken).field('note', 'no file');
      assert.equal(res.status, 400);
      assertErrorPage(res.text, ['file']);
    });

    it('the privacy page is in the menu of those who may erase, and its lookups say what is wrong with what was typed', { skip }, async () => {
      const admin = await StaffSession.signIn(app, await createStaffUser(services, { role: 'admin' }));
      const office = await StaffSession.signIn(app, await createStaffUser(services, { role: 'staff' }));
      assert.match((await admin.open('/admin/requests')).text, /<a href="\/admin\/privacy"[^>]*>Privacy<\/a>/);
      assert.doesNotMatch((await office.open('/admin/requests')).text, /href="\/admin\/privacy"/);
      assert.equal((await office.get('/admin/privacy')).status, 403, 'the page itself stays guarded');

      const page = await admin.open('/admin/privacy');
      assert.match(page.text, /aria-current="page">Privacy</);
      const bad = await admin.get('/admin/privacy?find=pupil&pupil=Ann+Pupil');
      assert.equal(bad.status, 400);
      assertErrorPage(bad.text, ['pupil']);
      assert.equal(valueOf(bad.text, 'pupil'), 'Ann Pupil');
      const found = await admin.get('/admin/privacy?find=pupil&pupil=1234');
      assert.equal(found.status, 303);
      assert.equal(found.headers.location, '/admin/pupils/1234');
      const erase = await admin.get('/admin/privacy?find=request&request=%2342');
      assert.equal(erase.headers.location, '/admin/requests/42/erase');
      assertErrorPage((await admin.get('/admin/privacy?find=request&request=')).text, ['request']);
    });

    it('the Moodle pupil search says why it found nothing: Moodle not connected, or no account matches', { skip }, async () => {
      const username = await createStaffUser(services, { role: 'admin' });
      const { request: r, children } = await services.lifecycle.submitRequest(submission(), { type: 'parent' });
      const query = `?search_${children[0]!.id}=${encodeURIComponent('Zebedee Nobody')}`;

      const without = await (await StaffSession.signIn(app, username)).open(`/admin/requests/${r.id}${query}`);
      const notConnected = /<p class="search-outcome" role="status">([^<]*)<\/p>/.exec(without.text)?.[1];
      assert.equal(htmlText(notConnected ?? '(no outcome shown)'), 'Moodle is not connected, so pupils cannot be searched. Type the pupil’s Moodle user id above instead.');

      const withSite = await (await StaffSession.signIn(moodleApp, username)).open(`/admin/requests/${r.id}${query}`);
      const noMatch = /<p class="search-outcome" role="status">([^<]*)<\/p>/.exec(withSite.text)?.[1];
      assert.equal(htmlText(noMatch ?? '(no outcome shown)'), 'No Moodle account matches “Zebedee Nobody”. Try part of the name or the username.');
    });
  });
}

describe('staff forms leave checking to the server', () => {
  it('no field of a staff page relies on the browser’s own "required" bubbles, and every staff form with fields has novalidate', () => {
    const dir = path.resolve(__dirname, '..', '..', 'views');
    // Every view but the parents' pages, the emails and the public pages' shared pieces: a new
    // feature's folder is checked without being listed here.
    const publicViews = /^(?:intake|mail|assets)\/|^partials\/[^/]+$|^(?:home|error)\.ejs$/;
    const files = fs
      .readdirSync(dir, { recursive: true })
      .map((f) => String(f).split(path.sep).join('/'))
      .filter((f) => f.endsWith('.ejs') && !publicViews.test(f));
    assert.ok(files.includes('overview.ejs') && files.includes('partials/staff/head.ejs') && files.includes('review/request-page.ejs'));
    assert.ok(files.length > 10);
    for (const file of files) {
      const text = fs.readFileSync(path.join(dir, file), 'utf8');
      for (const tag of text.match(/<(?:input|textarea|select)\b[^>]*>/g) ?? []) {
        assert.doesNotMatch(tag, /\srequired\b/, `${file}: ${tag}`);
      }
      for (const form of text.match(/<form\b[^]*?<\/form>/g) ?? []) {
        const opening = /<form\b(?:<%[^]*?%>|[^>])*>/.exec(form)![0];
        const hasFields = /<(?:input(?![^>]*type="hidden")|textarea|select)\b/.test(form);
        // Search boxes have nothing to check.
        if (hasFields && !/role="search"/.test(opening)) assert.match(opening, /\snovalidate\b/, `${file}: ${opening}`);
      }
    }
  });
});
